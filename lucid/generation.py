"""Greedy and beam-search decoding with a KV cache, and the same without one (the check).

Token selection happens on the host: the logits of one step are small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import nn
from .nn.cache.arguments import check_int


@dataclass
class Generation:
    """What :func:`generate` produced."""

    tokens: np.ndarray  # (B, prompt + new)
    step_logits: list = field(default_factory=list)  # per step: host (rows, vocab) logits that chose the tokens
    cache_bytes: int = 0


CACHE_KINDS = ("dynamic", "static", "sliding", "quantized-8", "quantized-4", "hybrid", "none")


def make_cache(kind: str, model, max_len: int, max_batch_size: int | None = None):
    """A fresh cache of ``kind`` (one of :data:`CACHE_KINDS`) for ``model``.

    ``static`` allocates ``max_len`` positions and, when ``max_batch_size`` is given, that many
    batch rows (so that beam search grows the batch in place).

    ``sliding`` gives every layer the model's sliding window; ``hybrid`` gives each layer the
    kind its attention needs (a sliding window for ``"sliding"`` layers, a dynamic layer for
    ``"full"`` ones); ``quantized-8``/``quantized-4`` quantize every layer (groups of the whole
    head dimension up to 64, the last 32 positions in full precision).

    Examples
    --------
    >>> from lucid.models import LlamaConfig, LlamaModel
    >>> from lucid.generation import make_cache
    >>> model = LlamaModel.random(LlamaConfig(layer_types=("sliding", "full"), sliding_window=8))
    >>> [type(layer).__name__ for layer in make_cache("hybrid", model, 100).layers]
    ['SlidingWindowLayer', 'DynamicLayer']
    """
    c = model.config
    if kind == "dynamic":
        return nn.DynamicKVCache()
    if kind == "static":
        return nn.StaticKVCache(max_cache_len=max_len, num_layers=c.num_layers, max_batch_size=max_batch_size)
    if kind == "sliding":
        return nn.SlidingWindowKVCache(c.sliding_window, sink_tokens=c.sink_tokens)
    if kind in ("quantized-8", "quantized-4"):
        return nn.QuantizedKVCache(bits=int(kind[-1]), group_size=min(64, c.head_dim), residual_length=32)
    if kind == "hybrid":
        return nn.HybridKVCache([
            nn.SlidingWindowLayer(c.sliding_window, c.sink_tokens) if c.layer_type(i) == "sliding" else nn.DynamicLayer()
            for i in range(c.num_layers)
        ])
    if kind == "none":
        return None
    raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}; got {kind!r}")


def _last_logits(model, tokens: np.ndarray):
    """Recompute the whole sequence without a cache; logits of the last position."""
    length = tokens.shape[1]
    logits = model.forward(tokens, cache=None, cache_position=range(length), logits_to_keep=1)
    return logits[:, 0, ...].numpy()


def generate(model, prompt, max_new_tokens: int, cache="dynamic", num_beams: int = 1,
             on_step=None) -> Generation:
    """Decode ``max_new_tokens`` tokens after ``prompt`` (host ints, shape ``(B, T0)``).

    ``cache`` is a kind for :func:`make_cache`, or a cache object: empty, or holding a prefix
    of the prompt shorter than it (e.g. fetched from a :class:`~lucid.nn.PrefixStore`), in
    which case only the rest of the prompt is prefilled.

    The model runs on the backend its weights were created on. Each step sends
    ``cache_position=[t]``, as models do.

    ``cache="none"`` recomputes the full sequence at every step: the reference the cached
    runs must match. With ``num_beams > 1`` the prompt is prefilled once per batch row, then
    ``batch_repeat_interleave`` expands the cache and ``reorder_cache`` follows the
    surviving beams (a static cache made here reserves the beams' rows at its first write,
    so neither allocates).

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models import LlamaModel
    >>> from lucid.generation import generate
    >>> model = LlamaModel.random()
    >>> prompt = np.array([[1, 2, 3]])
    >>> a = generate(model, prompt, 4, cache="dynamic").tokens
    >>> b = generate(model, prompt, 4, cache="none").tokens
    >>> bool((a == b).all()), a.shape
    (True, (1, 7))
    """
    prompt = np.asarray(prompt, dtype=np.int64)
    batch, prompt_len = prompt.shape
    num_beams = check_int(num_beams, "num_beams", minimum=1)
    if not isinstance(cache, str) and cache.get_seq_length(0) >= prompt_len:
        raise ValueError(f"the cache already holds {cache.get_seq_length(0)} positions; it may hold at most a "
                         f"prefix of the prompt ({prompt_len} tokens) shorter than it")
    if isinstance(cache, str):
        kv = make_cache(cache, model, prompt_len + max_new_tokens, batch * num_beams)
    else:
        kv = cache
    result = Generation(tokens=prompt)
    beam_scores = None
    for step in range(max_new_tokens):
        length = result.tokens.shape[1]
        if kv is None:
            logits = _last_logits(model, result.tokens)
        else:
            done = kv.get_seq_length(0) if step == 0 else length - 1  # a prefix may come cached
            new = result.tokens[:, done:]
            out = model.forward(new, cache=kv, cache_position=list(range(length - new.shape[1], length)),
                                logits_to_keep=1)
            logits = out[:, 0, ...].numpy()
        if num_beams == 1:
            chosen = logits.argmax(axis=-1)[:, None]
            result.tokens = np.concatenate([result.tokens, chosen], axis=1)
        else:
            if step == 0:  # every beam starts as a copy of its prompt row
                logits = np.repeat(logits, num_beams, axis=0)
                result.tokens = np.repeat(result.tokens, num_beams, axis=0)
                if kv is not None:
                    kv.batch_repeat_interleave(num_beams)
                beam_scores = np.tile(np.r_[0.0, np.full(num_beams - 1, -np.inf)], batch)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            vocab = logprobs.shape[-1]
            candidates = (beam_scores[:, None] + logprobs).reshape(batch, num_beams * vocab)
            best = np.argsort(-candidates, axis=1, kind="stable")[:, :num_beams]
            rows = (np.arange(batch)[:, None] * num_beams + best // vocab).reshape(-1)
            beam_scores = np.take_along_axis(candidates, best, axis=1).reshape(-1)
            result.tokens = np.concatenate([result.tokens[rows], (best % vocab).reshape(-1, 1)], axis=1)
            if kv is not None:
                kv.reorder_cache(rows)
        result.step_logits.append(logits)
        if on_step is not None:
            on_step(step + 1)
    if num_beams > 1:  # the best beam of each batch row
        winners = np.arange(batch) * num_beams + beam_scores.reshape(batch, num_beams).argmax(axis=1)
        result.tokens = result.tokens[winners]
    result.cache_bytes = 0 if kv is None else kv.nbytes()
    return result
