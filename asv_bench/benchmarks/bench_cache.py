"""lucid's caches next to the floor (bare slice writes of the same bytes) on each backend.

Every timed benchmark has a ``floor`` value of its ``cache`` parameter where that
makes sense, so a dashboard line reads as a ratio to it. GPU timings synchronise.
"""
import lucid

from .common import BACKENDS, DTYPES, SHAPES, Floor, filled_cache, new_cache, sync, tokens, use_backend

STEPS = 100  # decode steps per timed call (asv re-runs setup before every timed call)


class DecodeStep:
    """100 consecutive decode steps: ``update`` of one token on one layer holding ``length`` tokens.

    Divide by 100 for one step. Steady state: the dynamic cache has room for the
    timed steps (its growth is timed by FullDecode and weighed by Memory).
    """

    params = [BACKENDS, ["floor", "dynamic", "static"], list(SHAPES), list(DTYPES), [128, 1024, 4096]]
    param_names = ["backend", "cache", "shape", "dtype", "length"]
    number = 1
    warmup_time = 0
    timeout = 600

    def setup(self, backend, cache, shape, dtype, length):
        use_backend(backend)
        self.k, self.v = tokens(shape, 1, dtype), tokens(shape, 1, dtype)
        prefill = tokens(shape, length, dtype)
        capacity = length + 2 * STEPS
        if cache == "floor":
            self.target = Floor(self.k, capacity)
            self.target.update(prefill, prefill)
            self.step = lambda: self.target.update(self.k, self.v)
        else:
            self.target = new_cache(cache, capacity)
            if cache == "static":  # touch every page first, like the floor's buffers
                self.target.update(self.k, self.v, 0, cache_position=capacity - 1)
                self.target.reset()
            self.target.update(prefill, prefill, 0)
            if cache == "dynamic":  # steady state: grow once now, so the timed steps do not
                self.target.update(self.k, self.v, 0)
                self.target.crop(length)
            update = self.target.update
            self.step = lambda: update(self.k, self.v, 0)
        sync()

    def time_100_updates(self, *params):
        step = self.step
        for _ in range(STEPS):
            step()
        sync()


class Prefill:
    """Writing a 1024-token prompt into a new cache (allocation included)."""

    params = [BACKENDS, ["floor", "dynamic", "static"], list(SHAPES), list(DTYPES)]
    param_names = ["backend", "cache", "shape", "dtype"]

    def setup(self, backend, cache, shape, dtype):
        use_backend(backend)
        self.k, self.v = tokens(shape, 1024, dtype), tokens(shape, 1024, dtype)
        self.cache = cache

    def time_prefill(self, *params):
        if self.cache == "floor":
            Floor(self.k, 1024).update(self.k, self.v)
        else:
            new_cache(self.cache, 1024).update(self.k, self.v, 0)
        sync()


class PositionWrites:
    """16 tokens written at scattered slots of a 1024-token cache: 1-D and 2-D positions."""

    params = [BACKENDS, ["dynamic", "static"], ["1d", "2d"]]
    param_names = ["backend", "cache", "positions"]

    def setup(self, backend, cache, positions):
        use_backend(backend)
        self.k, self.v = tokens("B8-H32-D128", 16, "float32"), tokens("B8-H32-D128", 16, "float32")
        self.cache = new_cache(cache, 1024)
        self.cache.update(tokens("B8-H32-D128", 1024, "float32"), tokens("B8-H32-D128", 1024, "float32"), 0)
        slots = [(37 * i) % 1024 for i in range(16)]
        rows = [[(s + 101 * b) % 1024 for s in slots] for b in range(8)]
        self.pos = lucid.Tensor(slots if positions == "1d" else rows, dtype=lucid.Int32)

    def time_write(self, *params):
        self.cache.update(self.k, self.v, 0, cache_position=self.pos)
        sync()


class Beams:
    """Beam bookkeeping over 12 layers of 1024 tokens: expand to 4 beams, then reorder them."""

    params = [BACKENDS, ["dynamic", "static"]]
    param_names = ["backend", "cache"]
    number = 1  # each call changes the batch; asv re-runs setup before every timed call
    warmup_time = 0

    def setup(self, backend, cache):
        use_backend(backend)
        self.cache = filled_cache(cache)
        self.order = lucid.Tensor([3, 1, 0, 2], dtype=lucid.Int32)

    def time_repeat_and_reorder(self, *params):
        self.cache.batch_repeat_interleave(4)
        self.cache.reorder_cache(self.order)
        sync()


class Crop:
    """Cropping 12 layers of 1024 tokens to their latest 512."""

    params = [BACKENDS, ["dynamic", "static"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0

    def setup(self, backend, cache):
        use_backend(backend)
        self.cache = filled_cache(cache)

    def time_crop(self, *params):
        self.cache.crop(512)
        sync()


class Get:
    """Reading a layer: two views."""

    params = [BACKENDS, ["dynamic", "static"]]
    param_names = ["backend", "cache"]

    def setup(self, backend, cache):
        use_backend(backend)
        self.cache = new_cache(cache, 1024)
        k = tokens("B1-H8-D64", 1000, "float32")
        self.cache.update(k, k, 0)

    def time_get(self, *params):
        self.cache.get(0)


class FullDecode:
    """1024 decode steps over 12 layers (B=1, H=8, D=64), from an empty cache."""

    params = [BACKENDS, ["floor", "dynamic", "static"]]
    param_names = ["backend", "cache"]
    number = 1
    timeout = 300

    def setup(self, backend, cache):
        use_backend(backend)
        self.k = tokens("B1-H8-D64", 1, "float32")
        self.cache = cache

    def _decode(self):
        if self.cache == "floor":
            floors = [Floor(self.k, 1024) for _ in range(12)]
            for _ in range(1024):
                for f in floors:
                    f.update(self.k, self.k)
            return floors
        cache = new_cache(self.cache, 1024, num_layers=12)
        for _ in range(1024):
            for layer in range(12):
                cache.update(self.k, self.k, layer)
        return cache

    def time_decode(self, *params):
        self._decode()
        sync()

    def peakmem_decode(self, *params):
        self._decode()


class Memory:
    """Bytes a cache holds per live token, as a ratio to the bytes of those tokens."""

    params = [["dynamic", "static"], [100, 1000, 1025, 4096]]
    param_names = ["cache", "live_tokens"]
    unit = "held / live bytes"

    def setup(self, cache, live_tokens):
        use_backend("numpy")
        self.cache = new_cache(cache, 4096)
        k = tokens("B1-H8-D64", 1, "float32")
        for _ in range(live_tokens):
            self.cache.update(k, k, 0)
        self.live_bytes = 2 * live_tokens * k.nbytes

    def track_bytes_ratio(self, *params):
        return self.cache.nbytes() / self.live_bytes
