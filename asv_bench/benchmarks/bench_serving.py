"""Many requests at once: a paged cache's decode-step attention, and the serving engine's step.

The shapes are the many-requests workload's (``benchmarks/ragged_batch.py --requests 32
--system 512 ...``): 32 rows of 576-1507 positions whose first 512 are one system prompt,
SmolLM2's heads (9 query / 3 key-value heads of 64), blocks of 16.
"""
import numpy as np

import lucid
import lucid.nn as nn
from lucid.nn.functional import attention_mask, scaled_dot_product_attention

from .common import BACKENDS, smollm2_shaped_model, sync, use_backend

ROWS, SYSTEM, BLOCK = 32, 512, 16


def _lengths():
    """The 32 rows' lengths: the system prompt and 64-1024 positions of their own (seeded)."""
    return SYSTEM + np.random.default_rng(0).integers(64, 1025, size=ROWS)


class PagedDecodeAttention:
    """One decode step's attention in one layer over a paged cache: 32 rows, each reading its
    own blocks where they lie. ``shared=512``: the rows hold the system prompt on the same
    blocks (forks of one sequence), which the step reads once for all rows; ``0``: every row
    holds its own copy. Time per step (attention of the 32 queries)."""

    params = [BACKENDS, [0, SYSTEM]]
    param_names = ["backend", "shared"]
    number = 5
    warmup_time = 0
    repeat = (5, 15, 30.0)

    def setup(self, backend, shared):
        use_backend(backend)
        rng, lengths = np.random.default_rng(1), _lengths()
        cache = nn.PagedKVCache(int(sum(-(-(n + 1) // BLOCK) for n in lengths)) + ROWS + 1, block_size=BLOCK)

        def write(n, start):
            k = lucid.Tensor(rng.standard_normal((1, 3, n, 64), dtype=np.float32))
            cache.update(k, k, 0, cache_position=list(range(start, start + n)))

        prompt = cache.add_sequence()
        if shared:
            write(shared, 0)
        rows = []
        for n in lengths:
            cache.batch = []
            rows.append(cache.fork(prompt))
            write(int(n) - shared, shared)
        cache.remove_sequence(prompt)
        cache.batch = rows
        at = lucid.Tensor(lengths[:, None])
        new = lucid.Tensor(rng.standard_normal((ROWS, 3, 1, 64), dtype=np.float32))
        cache.update(new, new, 0, cache_position=at)
        self.cache, self.mask = cache, attention_mask(at, cache.key_positions(0))[:, None, ...]
        self.query = lucid.Tensor(rng.standard_normal((ROWS, 9, 1, 64), dtype=np.float32))

    def time_attention(self, *params):
        keys, values = self.cache.get(0)
        scaled_dot_product_attention(self.query, keys, values, attn_mask=self.mask)
        sync()


class EngineDecodeStep:
    """One :meth:`lucid.serving.Engine.step` decoding 32 running requests (the workload's
    prompts, prefilled in setup) on a model shaped like SmolLM2 with 8 layers (random
    weights): linear layers over the 32 tokens, each row's attention over its blocks (the
    system prompt's read once), sampling. Time per step."""

    params = [BACKENDS]
    param_names = ["backend"]
    number = 3
    warmup_time = 0
    repeat = (3, 5, 120.0)
    timeout = 600

    def setup(self, backend):
        from lucid.serving import Engine

        use_backend(backend)
        model = smollm2_shaped_model()
        rng, vocab = np.random.default_rng(0), model.config.vocab_size
        system = rng.integers(0, vocab, size=SYSTEM).tolist()
        prompts = [system + rng.integers(0, vocab, size=int(n) - SYSTEM).tolist() for n in _lengths()]
        self.engine = Engine(model, num_blocks=sum(-(-(len(p) + 64) // BLOCK) for p in prompts) + ROWS,
                             max_batch_tokens=2048)
        for prompt in prompts:
            self.engine.add_request(prompt, max_new_tokens=64)
        while self.engine.waiting:
            self.engine.step()

    def time_step(self, *params):
        self.engine.step()
        sync()
