"""The sliding-window and quantized caches next to their floors, on each backend."""
import numpy as np

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

from .common import BACKENDS, Floor, raw, run_steps, smollm2_shaped_model, sync, tokens, use_backend

STEPS = 1000


class SlidingWindowStep:
    """1000 decode steps (B=1, H=8, D=64, float32, ``cache_position=[t]``) after a 1024-token prefill.

    A step writes the token into its ring slot (one slice write each for keys and values) and
    returns the ring as it lies, joined in order only if read: its cost must not depend on the
    window. ``floor``: DecodeStep's (two writes, two views). ``SinksStep`` is the same with
    sinks, at three lengths.
    """

    params = [BACKENDS, ["floor", "sliding"], [64, 4096, 65536]]
    param_names = ["backend", "cache", "window"]
    number = 1
    warmup_time = 0
    repeat = (5, 15, 30.0)
    timeout = 600

    def setup(self, backend, cache, window):
        use_backend(backend)
        k = tokens("B1-H8-D64", 1)
        prefill = tokens("B1-H8-D64", 1024)
        if cache == "floor":
            kd = raw(k)
            target = Floor(kd, 1024 + STEPS + 1)
            target.update(raw(prefill), raw(prefill))
            self.step = lambda t: target.update(kd, kd)
        else:
            target = nn.SlidingWindowKVCache(window)
            target.update(prefill, prefill, 0)
            update = target.update
            self.step = lambda t: update(k, k, 0, cache_position=[t])
        sync()

    def time_1000_updates(self, *params):
        run_steps(self.step, 1024, STEPS)


class SinksStep:
    """1000 decode steps of a sliding window with 4 or 64 attention sinks (B=1, H=8, D=64,
    float32, ``cache_position=[t]``) after a prefill of 1024, 8192 or 32768 tokens.

    A step writes the token once into the keys' ring and once into the values' and returns
    tensors that join sinks and window only if read (attention reads the ring as it lies): its
    cost must not depend on the window, the length or the number of sinks. ``floor``:
    DecodeStep's (two writes, two views).
    """

    params = [BACKENDS, ["floor", "sliding+4 sinks", "sliding+64 sinks"], [64, 4096, 65536], [1024, 8192, 32768]]
    param_names = ["backend", "cache", "window", "length"]
    number = 1
    warmup_time = 0
    repeat = (5, 15, 30.0)
    timeout = 600

    def setup(self, backend, cache, window, length):
        use_backend(backend)
        k = tokens("B1-H8-D64", 1)
        prefill = tokens("B1-H8-D64", length)
        if cache == "floor":
            kd = raw(k)
            target = Floor(kd, length + STEPS + 1)
            target.update(raw(prefill), raw(prefill))
            self.step = lambda t: target.update(kd, kd)
        else:
            target = nn.SlidingWindowKVCache(window, sink_tokens={"sliding+4 sinks": 4, "sliding+64 sinks": 64}[cache])
            target.update(prefill, prefill, 0)
            update = target.update
            self.step = lambda t: update(k, k, 0, cache_position=[t])
        self.length = length
        sync()

    def time_1000_updates(self, *params):
        run_steps(self.step, self.length, STEPS)


class QuantizedStep:
    """100 decode steps of one attention layer over 4096 float32 positions (B=1, 9 query and 3
    key/value heads of 64, SmolLM2's layout), as a float32 model runs them: each step writes a
    token (``cache_position=[t]``) and runs attention over everything the cache returns.

    A quantized layer's attention reads its codes a block at a time (converting each block to
    floats, its scales folded into the queries and weights); ``dynamic``'s reads float32 views.
    """

    params = [BACKENDS, ["dynamic", "quantized 8-bit", "quantized 4-bit"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0

    def setup(self, backend, cache):
        use_backend(backend)
        lucid.manual_seed(0)
        k = lucid.randn(1, 3, 1, 64)
        q = lucid.randn(1, 9, 1, 64)
        prompt = lucid.randn(1, 3, 4096, 64)
        if cache == "dynamic":
            self.cache = nn.DynamicKVCache()
        else:
            self.cache = nn.QuantizedKVCache(bits=int(cache.split()[1][0]), group_size=64, residual_length=128)
        self.cache.update(prompt, prompt, 0)
        update = self.cache.update

        def step(t):
            keys, values = update(k, k, 0, cache_position=[t])
            F.scaled_dot_product_attention(q, keys, values)

        self.step = step
        sync()

    def time_100_steps(self, *params):
        run_steps(self.step, 4096, 100)


class QuantizedModelStep:
    """One decode step of a model shaped like SmolLM2 (hidden 576, 9 query / 3 key-value heads of
    64, MLP 1536; 8 layers, random weights) at 4096 positions of context: the update and the
    attention of every layer, and the rest of the model, with each cache kind.
    ``track_bytes_ratio``: the bytes each cache holds over the dynamic cache's.
    """

    params = [BACKENDS, ["dynamic", "quantized 8-bit", "quantized 4-bit"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0
    repeat = (5, 10, 60.0)
    timeout = 600

    def setup(self, backend, cache):
        use_backend(backend)
        self.model = smollm2_shaped_model()
        context = np.random.default_rng(0).integers(0, self.model.config.vocab_size, size=(1, 4096))
        self.caches = {"dynamic": nn.DynamicKVCache()}
        if cache != "dynamic":
            bits = int(cache.split()[1][0])
            self.caches[cache] = nn.QuantizedKVCache(bits=bits, group_size=64, residual_length=128)
        for target in self.caches.values():
            self.model.forward(context, cache=target, logits_to_keep=1)
        self.cache, self.token = self.caches[cache], np.array([[1]])
        sync()

    def time_step(self, *params):
        self.model.forward(self.token, cache=self.cache, logits_to_keep=1)
        sync()

    def track_bytes_ratio(self, *params):
        return self.cache.nbytes() / self.caches["dynamic"].nbytes()

    track_bytes_ratio.unit = "cache / dynamic bytes"


class QuantizedMemory:
    """Bytes a quantized cache holds over a DynamicKVCache holding the same float16 tokens.

    4096 tokens (B=1, H=8, D=128) appended 128 at a time (the chunks a token-by-token decode
    makes with residual_length=128); group size 64.
    """

    params = [BACKENDS, [4, 8]]
    param_names = ["backend", "bits"]
    unit = "quantized / dynamic bytes"

    def setup(self, backend, bits):
        use_backend(backend)
        self.quantized = nn.QuantizedKVCache(bits=bits, group_size=64, residual_length=128)
        self.dynamic = nn.DynamicKVCache()
        block = lucid.randn(1, 8, 128, 128).astype(lucid.Float16)
        one = lucid.randn(1, 8, 1, 128).astype(lucid.Float16)
        for _ in range(4096 // 128):
            self.quantized.update(block, block, 0)
        for t in range(4096):
            self.dynamic.update(one, one, 0, cache_position=[t])

    def track_bytes_ratio(self, *params):
        return self.quantized.nbytes() / self.dynamic.nbytes()
