"""Helpers shared by the benchmark modules: backend switching, cache and floor construction."""
import lucid
import lucid.nn as nn



def _usable(name: str) -> bool:
    try:
        with lucid.use_backend(name):
            return True
    except lucid.BackendError:
        return False


# CuPy's series exist only on a machine with a usable GPU: elsewhere the dashboard would list
# them with no data. (Results of a GPU machine keep theirs.)
BACKENDS = ["numpy"] + (["cupy"] if _usable("cupy") else [])
# (batch, heads, head_dim)
SHAPES = {"B1-H8-D64": (1, 8, 64), "B8-H32-D128": (8, 32, 128)}
DTYPES = {"float32": lucid.Float32, "float16": lucid.Float16}


def smollm2_shaped_model():
    """A seeded random model shaped like SmolLM2-135M (hidden 576, 9 query / 3 key-value heads
    of 64, MLP 1536) with 8 layers and a 4096-token vocabulary: the trained model's per-layer
    work without its download."""
    from lucid.models import LlamaConfig, LlamaModel

    return LlamaModel.random(LlamaConfig(vocab_size=4096, hidden_size=576, intermediate_size=1536, num_layers=8,
                                         num_heads=9, num_kv_heads=3, head_dim=64))


def use_backend(name):
    """Activate ``name``; asv skips a benchmark whose setup raises NotImplementedError.

    Only lucid's public API is used here, so the suite also runs against older commits
    (``asv run HEAD~10..HEAD``).
    """
    try:
        return lucid.set_backend(name)
    except lucid.BackendError as error:
        raise NotImplementedError(f"{name} backend unavailable: {error}") from None


def raw(tensor):
    """The backend array of ``tensor``, shared (DLPack: public in every lucid version)."""
    return lucid.get_backend().from_dlpack(tensor)


def tokens(shape, length, dtype="float32"):
    """Random tokens; long runs are zeros (timing does not depend on values, and setup stays quick)."""
    batch, heads, dim = SHAPES[shape]
    if length > 64:
        return lucid.zeros(batch, heads, length, dim, dtype=DTYPES[dtype])
    return lucid.randn(batch, heads, length, dim).astype(DTYPES[dtype])


def new_cache(kind, capacity, num_layers=1):
    """``kind``: "dynamic", "static", or "static-4rows" (a static cache with ``max_batch_size=4``)."""
    if kind == "dynamic":
        return nn.DynamicKVCache()
    rows = 4 if kind == "static-4rows" else None
    return nn.StaticKVCache(max_cache_len=capacity, num_layers=num_layers, max_batch_size=rows)


def filled_cache(kind, num_layers=12, length=1024, batch_shape="B1-H8-D64"):
    """A cache with ``num_layers`` layers of ``length`` tokens, room for 2x that."""
    cache = new_cache(kind, 2 * length, num_layers=num_layers)
    k = tokens(batch_shape, length)
    for layer in range(num_layers):
        cache.update(k, k, layer)
    return cache


class Floor:
    """The bytes any cache must write, and the views it returns: preallocated, touched buffers,
    bare in-place slice writes. It takes backend arrays (``raw`` of a tensor, made once, outside
    the timed code), so that no conversion is timed."""

    def __init__(self, like, capacity):
        xp = lucid.get_backend().xp
        batch, heads, _, dim = like.shape
        self.keys = xp.ones((batch, heads, capacity, dim), dtype=like.dtype)  # touched pages
        self.values = xp.ones((batch, heads, capacity, dim), dtype=like.dtype)
        self.length = 0

    def update(self, k, v):
        start, end = self.length, self.length + k.shape[-2]
        self.keys[..., start:end, :] = k
        self.values[..., start:end, :] = v
        self.length = end
        return self.keys[..., :end, :], self.values[..., :end, :]


def sync():
    lucid.get_backend().synchronize()


def run_steps(step, start, count):
    """``step(t)`` for ``t`` in ``[start, start + count)``, then wait for the device."""
    for t in range(start, start + count):
        step(t)
    sync()
