"""lucid's caches next to the floor (bare slice writes or gathers of the same bytes) on each backend.

Every timed benchmark has a ``floor`` value of its ``cache`` parameter, so a dashboard line
reads as a ratio to it. GPU timings synchronise. asv re-runs ``setup`` before every timed
call when a benchmark sets ``number = 1``; the stateful ones do, and time a batch of steps
inside one call where one step is too short to time.
"""
import lucid

from .common import (BACKENDS, DTYPES, SHAPES, Floor, filled_cache, new_cache, raw, run_steps, sync, tokens,
                     use_backend)

STEPS = 1000  # decode steps per timed call: one step (about 2 us) is too short to time alone


def _decode_steps(backend, cache, shape, dtype, length, cache_position):
    """(setup object, step function) for STEPS decode steps after a prefill of ``length`` tokens."""
    use_backend(backend)
    k, v = tokens(shape, 1, dtype), tokens(shape, 1, dtype)
    prefill = tokens(shape, length, dtype)
    capacity = length + STEPS + 1
    if cache == "floor":
        kd, vd, prefill = raw(k), raw(v), raw(prefill)
        target = Floor(kd, capacity)
        target.update(prefill, prefill)
        return lambda t: target.update(kd, vd)
    target = new_cache(cache, capacity)
    target.update(prefill, prefill, 0)
    update = target.update
    if cache_position == "[t]":
        return lambda t: update(k, v, 0, cache_position=[t])
    return lambda t: update(k, v, 0)


class DecodeStep:
    """1000 decode steps: ``update`` of one token on a layer of ``length`` tokens, views returned.

    ``cache_position="[t]"`` is the path models take (the position given every step);
    ``None`` a plain append. Divide by 1000 for one step. The dynamic cache runs in the
    headroom its prefill left; its growth is timed by FullDecode and weighed by Memory.
    """

    params = [BACKENDS, ["floor", "dynamic", "static"], ["[t]", "None"], [128, 1024, 4096, 16384]]
    param_names = ["backend", "cache", "cache_position", "length"]
    number = 1
    warmup_time = 0
    repeat = (5, 15, 30.0)
    timeout = 600

    def setup(self, backend, cache, cache_position, length):
        self.step = _decode_steps(backend, cache, "B1-H8-D64", "float32", length, cache_position)
        self.start = length
        sync()

    def time_1000_updates(self, *params):
        run_steps(self.step, self.start, STEPS)


class DecodeStepShapes:
    """DecodeStep on the model's path at 1024 tokens, over batch/head shapes and dtypes."""

    params = [BACKENDS, ["floor", "dynamic", "static"], list(SHAPES), list(DTYPES)]
    param_names = ["backend", "cache", "shape", "dtype"]
    number = 1
    warmup_time = 0
    timeout = 600

    def setup(self, backend, cache, shape, dtype):
        self.step = _decode_steps(backend, cache, shape, dtype, 1024, "[t]")
        sync()

    def time_1000_updates(self, *params):
        run_steps(self.step, 1024, STEPS)


class FirstStepAfterPrefill:
    """The first decode step after a 2048-token prefill (B=8, H=32, D=128, float32).

    It must write in place: a prefill leaves headroom, so no layer is copied here.
    """

    params = [BACKENDS, ["floor", "dynamic", "static"]]
    param_names = ["backend", "cache"]
    number = 1
    warmup_time = 0
    repeat = (3, 10, 20.0)

    def setup(self, backend, cache):
        self.step = _decode_steps(backend, cache, "B8-H32-D128", "float32", 2048, "[t]")
        sync()

    def time_first_step(self, *params):
        self.step(2048)
        sync()


class Prefill:
    """Writing a 1024-token prompt into a new cache (allocation included)."""

    params = [BACKENDS, ["floor", "dynamic", "static"], list(SHAPES), list(DTYPES)]
    param_names = ["backend", "cache", "shape", "dtype"]

    def setup(self, backend, cache, shape, dtype):
        use_backend(backend)
        self.k, self.v = tokens(shape, 1024, dtype), tokens(shape, 1024, dtype)
        self.cache = cache
        if cache == "floor":
            self.k, self.v = raw(self.k), raw(self.v)

    def time_prefill(self, *params):
        if self.cache == "floor":
            Floor(self.k, 1024).update(self.k, self.v)
        else:
            new_cache(self.cache, 1024).update(self.k, self.v, 0, cache_position=range(1024))
        sync()


class PositionWrites:
    """16 tokens written at scattered slots of a 1024-token cache: 1-D and 2-D positions."""

    params = [BACKENDS, ["dynamic", "static"], ["1d", "2d"]]
    param_names = ["backend", "cache", "positions"]

    def setup(self, backend, cache, positions):
        use_backend(backend)
        self.k, self.v = tokens("B8-H32-D128", 16), tokens("B8-H32-D128", 16)
        self.cache = new_cache(cache, 1024)
        self.cache.update(tokens("B8-H32-D128", 1024), tokens("B8-H32-D128", 1024), 0)
        slots = [(37 * i) % 1024 for i in range(16)]
        rows = [[(s + 101 * b) % 1024 for s in slots] for b in range(8)]
        self.pos = lucid.Tensor(slots if positions == "1d" else rows, dtype=lucid.Int32)

    def time_write(self, *params):
        self.cache.update(self.k, self.v, 0, cache_position=self.pos)
        sync()


class _LiveRows:
    """The floor of a batch operation: gathering the rows of every layer's live tokens."""

    def __init__(self, batch, num_layers=12, length=1024):
        xp = lucid.get_backend().xp
        self.arrays = [xp.ones((batch, 8, length, 64), dtype=xp.float32) for _ in range(2 * num_layers)]

    def gather(self, rows):
        xp = lucid.get_backend().xp
        idx = xp.asarray(rows)
        return [xp.take(a, idx, axis=0) for a in self.arrays]


class Beams:
    """Beam bookkeeping over 12 layers of 1024 tokens (B=1, H=8, D=64).

    ``repeat``: expand to 4 beams; ``reorder``: reorder 4 beams (one step of beam search).
    The floor gathers the same rows of contiguous arrays holding just the live tokens.
    ``static-4rows`` is the static cache made with ``max_batch_size=4``, as ``generate`` makes
    it for beam search: the beams' rows exist before the repeat.
    """

    params = [BACKENDS, ["floor", "dynamic", "static", "static-4rows"], ["repeat", "reorder"]]
    param_names = ["backend", "cache", "operation"]
    number = 1  # each call changes the batch; asv re-runs setup before every timed call
    warmup_time = 0

    def setup(self, backend, cache, operation):
        use_backend(backend)
        batch = 1 if operation == "repeat" else 4
        self.rows = [0, 0, 0, 0] if operation == "repeat" else [3, 1, 0, 2]
        if cache == "floor":
            self.target = _LiveRows(batch)
            self.run = lambda: self.target.gather(self.rows)
            return
        self.target = filled_cache(cache)
        if operation == "reorder":
            self.target.batch_repeat_interleave(4)
            self.run = lambda: self.target.reorder_cache(self.rows)
        else:
            self.run = lambda: self.target.batch_repeat_interleave(4)
        sync()

    def time_batch_operation(self, *params):
        self.run()
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
        k = tokens("B1-H8-D64", 1000)
        self.cache.update(k, k, 0)

    def time_get(self, *params):
        self.cache.get(0)


class FullDecode:
    """1024 decode steps over 12 layers (B=1, H=8, D=64) from an empty cache, on the model's path."""

    params = [BACKENDS, ["floor", "dynamic", "static"]]
    param_names = ["backend", "cache"]
    number = 1
    timeout = 300

    def setup(self, backend, cache):
        use_backend(backend)
        self.k = tokens("B1-H8-D64", 1)
        self.cache = cache
        if cache == "floor":
            self.k = raw(self.k)

    def _decode(self):
        if self.cache == "floor":
            floors = [Floor(self.k, 1024) for _ in range(12)]
            for _ in range(1024):
                for f in floors:
                    f.update(self.k, self.k)
            return floors
        cache = new_cache(self.cache, 1024, num_layers=12)
        for t in range(1024):
            for layer in range(12):
                cache.update(self.k, self.k, layer, cache_position=[t])
        return cache

    def time_decode(self, *params):
        self._decode()
        sync()

    def peakmem_decode(self, *params):
        self._decode()


class Memory:
    """Bytes a cache holds, as a ratio to the bytes of its live tokens, after appending one by one."""

    params = [BACKENDS, ["dynamic", "static"], [100, 256, 257, 1000, 1025, 4096]]
    param_names = ["backend", "cache", "live_tokens"]
    unit = "held / live bytes"

    def setup(self, backend, cache, live_tokens):
        use_backend(backend)
        self.cache = new_cache(cache, 4096)
        k = tokens("B1-H8-D64", 1)
        for t in range(live_tokens):
            self.cache.update(k, k, 0, cache_position=[t])
        self.live_bytes = 2 * live_tokens * k.nbytes

    def track_bytes_ratio(self, *params):
        return self.cache.nbytes() / self.live_bytes
