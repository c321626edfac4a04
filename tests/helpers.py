"""Helpers shared by the cache tests: tokens, cache factories, and snapshots of observable state."""
import numpy as np
from hypothesis import strategies as st

import lucid_backends
import lucid
import lucid.nn as nn

CACHES = {
    "dynamic": nn.DynamicKVCache,
    "static": lambda: nn.StaticKVCache(max_cache_len=16, num_layers=2),
}


def on_backend(values) -> lucid.Tensor:
    """Host values as a Tensor of the active backend (``lucid.Tensor`` of a NumPy array stays on
    NumPy, whatever backend is active)."""
    backend = lucid_backends.get_backend()
    return lucid.Tensor.wrap(backend.from_host(np.asarray(values)), backend)


def kv(b=2, h=3, t=1, d=4, dv=None, dtype=lucid.Float32):
    """Random key/value tensors of shape (b, h, t, d) and (b, h, t, dv)."""
    return lucid.randn(b, h, t, d).astype(dtype), lucid.randn(b, h, t, dv or d).astype(dtype)


def snapshot(cache, layers=2):
    """Everything observable about a cache: per layer None or host copies of (k, v) and the length,
    plus nbytes()."""
    out = []
    for layer in range(layers):
        got = cache.get(layer)
        out.append(None if got is None else (got[0].numpy().copy(), got[1].numpy().copy()))
        out.append(cache.get_seq_length(layer))
    out.append(cache.nbytes())
    return out


def assert_same_snapshot(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        if isinstance(a, tuple) or isinstance(b, tuple):
            assert isinstance(a, tuple) and isinstance(b, tuple), (a, b)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        else:
            assert a == b


def assert_unchanged(before, cache, layers=2):
    assert_same_snapshot(before, snapshot(cache, layers))


def batch_op(data, op, cache, model, batch) -> None:
    """A drawn ``select`` (reorder) or ``repeat`` (x2), applied to the cache and to its
    append-only reference model alike; nothing for an empty model or a batch too large."""
    if op == "select" and model.length:
        rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=4))
        cache.reorder_cache(rows)
        model.select(rows)
    elif op == "repeat" and model.length and batch <= 2:
        cache.batch_repeat_interleave(2)
        model.select([b for b in range(batch) for _ in range(2)])
