"""End to end: the demo model decoding with each cache kind, next to a floor cache.

The floor cache is what a model needs at the least: preallocated buffers, bare slice writes at
the positions given, the two views back, positions ``0 .. length - 1``; no checks, no policy.
"""
import numpy as np

import lucid
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel

from .common import BACKENDS, smollm2_shaped_model, sync, use_backend

NEW_TOKENS = 64


class FloorCache:
    """The least a full-attention model needs from a cache (no checks: benchmarks only)."""

    def __init__(self, num_layers, capacity):
        self.capacity, self.layers, self.lengths = capacity, [None] * num_layers, [0] * num_layers
        self.backend = lucid.get_backend()

    def get_seq_length(self, layer_idx=0):
        return self.lengths[layer_idx]

    def key_positions(self, layer_idx, new_tokens=1):
        return lucid.arange(self.lengths[layer_idx])

    def update(self, key, value, layer_idx, cache_position=None):
        k, v = key.array, value.array  # the model passes lucid Tensors
        if self.layers[layer_idx] is None:
            xp = self.backend.xp
            shape = tuple(k.shape[:-2]) + (self.capacity, k.shape[-1])
            self.layers[layer_idx] = (xp.zeros(shape, dtype=k.dtype), xp.zeros(shape, dtype=k.dtype))
        keys, values = self.layers[layer_idx]
        start, end = cache_position[0], cache_position[-1] + 1
        keys[..., start:end, :] = k
        values[..., start:end, :] = v
        self.lengths[layer_idx] = end
        wrap = lucid.Tensor.wrap
        return wrap(keys[..., :end, :], self.backend), wrap(values[..., :end, :], self.backend)

    def nbytes(self):
        return 0


class DemoDecode:
    """64 greedy tokens for 2 prompts of 16 with the demo's 4-layer model, prefill included.

    ``sliding`` runs the demo's sliding-window model (window 64, 4 sinks), ``hybrid`` its model
    whose layers alternate sliding and full attention; the others the full-attention model.
    Tokens per second = 128 / time.
    """

    params = [BACKENDS, ["floor", "dynamic", "static", "sliding", "hybrid", "quantized-8"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0
    repeat = (7, 21, 60.0)  # each call is tens of milliseconds; the machine's noise needs many

    def setup(self, backend, cache):
        use_backend(backend)
        config = LlamaConfig(num_layers=4)
        if cache == "sliding":
            config = LlamaConfig(num_layers=4, layer_types=("sliding",) * 4, sliding_window=64, sink_tokens=4)
        elif cache == "hybrid":
            config = LlamaConfig(num_layers=4, layer_types=("sliding", "full") * 2, sliding_window=64)
        self.model = LlamaModel.random(config)
        self.prompt = np.random.default_rng(0).integers(0, config.vocab_size, size=(2, 16))
        self.cache = cache

    def time_generate(self, *params):
        cache = FloorCache(4, 16 + NEW_TOKENS) if self.cache == "floor" else self.cache
        generate(self.model, self.prompt, NEW_TOKENS, cache=cache)
        sync()


class ModelPrefill:
    """A prompt of ``length`` tokens through a model shaped like SmolLM2 (hidden 576, 9 query /
    3 key-value heads of 64, MLP 1536; 8 layers, random weights), batch 1, into a new dynamic
    cache, keeping the last position's logits: what generation does before its first token.
    Tokens per second = length / time. ``benchmarks/prefill.py`` compares the trained model's
    prefill with transformers'.
    """

    params = [BACKENDS, [128, 1024, 4096]]
    param_names = ["backend", "length"]
    number = 1
    warmup_time = 0
    repeat = (3, 10, 60.0)
    timeout = 600

    def setup(self, backend, length):
        use_backend(backend)
        self.model = smollm2_shaped_model()
        self.prompt = np.random.default_rng(0).integers(0, self.model.config.vocab_size, size=(1, length))

    def time_prefill(self, *params):
        self.model.forward(self.prompt, cache=lucid.nn.DynamicKVCache(), logits_to_keep=1)
        sync()
