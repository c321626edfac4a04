"""The sliding-window and quantized caches next to their floors, on each backend."""
import lucid
import lucid.nn as nn

from .common import BACKENDS, Floor, raw, run_steps, sync, tokens, use_backend

STEPS = 1000


class SlidingWindowStep:
    """1000 decode steps (B=1, H=8, D=64, float32, ``cache_position=[t]``) after a 1024-token prefill.

    A step writes the token twice (mirrored ring) and returns views: its cost must not depend
    on the window. ``floor``: DecodeStep's (two writes, two views).
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
    """1000 decode steps of a sliding window with 4 attention sinks (B=1, H=8, D=64, float32,
    ``cache_position=[t]``) after a prefill of 1024 or 32768 tokens.

    A step writes the token twice and the 4 sinks once (they move one slot along the ring) and
    returns views: its cost must not depend on the window or the length. ``floor``: DecodeStep's
    (two writes, two views).
    """

    params = [BACKENDS, ["floor", "sliding+4 sinks"], [64, 4096, 65536], [1024, 32768]]
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
            target = nn.SlidingWindowKVCache(window, sink_tokens=4)
            target.update(prefill, prefill, 0)
            update = target.update
            self.step = lambda t: update(k, k, 0, cache_position=[t])
        self.length = length
        sync()

    def time_1000_updates(self, *params):
        run_steps(self.step, self.length, STEPS)


class QuantizedStep:
    """100 decode steps on a quantized layer of 1024 float16 tokens (B=1, H=8, D=64).

    A step returns every position in full precision, so it dequantizes them all: compare
    with ``dynamic`` (the same steps on a DynamicKVCache, which returns views).
    """

    params = [BACKENDS, ["dynamic", "quantized 8-bit", "quantized 4-bit"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0

    def setup(self, backend, cache):
        use_backend(backend)
        k = tokens("B1-H8-D64", 1, "float16")
        prompt = lucid.randn(1, 8, 1024, 64).astype(lucid.Float16)
        if cache == "dynamic":
            self.cache = nn.DynamicKVCache()
        else:
            self.cache = nn.QuantizedKVCache(bits=int(cache.split()[1][0]), group_size=64, residual_length=128)
        self.cache.update(prompt, prompt, 0)
        update = self.cache.update
        self.step = lambda t: update(k, k, 0, cache_position=[t])
        sync()

    def time_100_updates(self, *params):
        run_steps(self.step, 1024, 100)


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
