"""Attention of a decode step over a paged cache's blocks as they come out of the pool.

Laying every row's blocks out in order (``(B, H, L, D)``, zeros past each row's length) would
copy the whole batch's history into one array and attend over the longest row's length in
every row. Instead each row is read on its own: for each key/value head, the blocks holding
the positions the row sees are copied out of the pool in order (a contiguous
``(positions, D)`` array that stays in the CPU's cache), and two matrix products over just
those positions give the row's scores and weighted values. A step thus reads each row's
history once and computes nothing past its length.
"""
from __future__ import annotations

from .cache.paged_tensor import PagedTensor
from .scores import LOG2_E


def block_mask(xp, keys: PagedTensor, allowed):
    """The positions each row attends to, ``(B, C * block_size)``, for a decode step's mask
    ``allowed`` (boolean, ``(B or 1, 1, 1, Lk)``: one value for every head, or None); ``None`` where the blocks cannot stand for the tensor: the mask lets a row
    see a position past its own length (the tensor holds zeros there, the blocks do not), or
    differs between heads."""
    rows, count = keys.table.shape
    size = keys.pool.shape[-2]
    longest = max(keys.lengths)
    lengths = xp.asarray(keys.lengths, dtype=xp.int64)
    own = xp.arange(count * size, dtype=xp.int64)[None, :] < lengths[:, None]
    if allowed is None:
        return own if min(keys.lengths) == longest else None
    if (allowed.ndim != 4 or allowed.shape[1] != 1 or allowed.shape[2] != 1 or allowed.shape[0] not in (1, rows)
            or allowed.shape[3] != longest):
        return None
    seen = xp.zeros((rows, count * size), dtype=xp.bool)
    seen[:, :longest] = xp.reshape(allowed, (allowed.shape[0], longest))
    if bool(xp.any(seen & ~own)):
        return None
    return seen


def attend_blocks(backend, q, keys: PagedTensor, values: PagedTensor, seen, scale: float):
    """``softmax(q k^T * scale) v`` over the positions ``seen`` (:func:`block_mask`) of the
    blocks of ``keys`` and ``values``.

    Parameters
    ----------
    backend : the arrays' backend
    q : array ``(B, Hq, 1, D)``
    keys, values : PagedTensor
        ``Hq`` a multiple of their heads.
    seen : bool array ``(B, C * block_size)``
    scale : float

    Returns
    -------
    array ``(B, Hq, 1, Dv)`` in ``q``'s dtype; rows that see nothing are zero.

    Examples
    --------
    >>> import numpy as np, lucid, lucid.nn as nn
    >>> from lucid.nn.functional import scaled_dot_product_attention
    >>> from lucid.nn.paged_attention import attend_blocks, block_mask
    >>> cache = nn.PagedKVCache(8, block_size=2)
    >>> k, v = cache.update(lucid.randn(2, 1, 3, 4), lucid.randn(2, 1, 3, 4), 0)
    >>> q = lucid.randn(2, 2, 1, 4)
    >>> xp = lucid.get_backend().xp
    >>> got = attend_blocks(lucid.get_backend(), q.array, k, v, block_mask(xp, k, None), 0.5)
    >>> want = scaled_dot_product_attention(q, k.numpy(), v.numpy(), scale=0.5).numpy()
    >>> bool(np.allclose(got, want, atol=1e-6))
    True
    """
    xp = backend.xp
    rows = keys.table.shape[0]
    kv_heads, size = keys.pool.shape[1], keys.pool.shape[-2]
    q_heads, dv = q.shape[1], values.pool.shape[-1]
    group = q_heads // kv_heads
    spans = visible_spans(backend, seen)
    # scaled once, in base 2: the softmax's exponential is then exp2, the faster one
    queries = xp.reshape(q * (scale * LOG2_E), (rows, kv_heads, group, q.shape[-1]))
    out = xp.zeros((rows, kv_heads, group, dv), dtype=q.dtype)
    # Row after row: its positions differ in number from the others', and a row's copies stay
    # in the CPU's cache from the take to the products. (Worker threads gained nothing here:
    # the operations are small, and the copies share the memory's bandwidth.)
    for row, (lo, hi, whole) in enumerate(spans):
        if lo == hi:
            continue  # sees nothing: zeros
        first, last = lo // size, -(-hi // size)
        cut = slice(lo - first * size, hi - first * size)
        for head in range(kv_heads):
            k = keys.head_positions(row, head, first, last)[cut, :]
            # (positions, D) @ (D, G) is the faster product; the scores are then laid out (G, positions)
            scores = _c_order(xp, xp.matrix_transpose(k @ xp.matrix_transpose(queries[row, head, ...])))
            if not whole:
                scores = xp.where(seen[row:row + 1, lo:hi], scores, -xp.inf)
            # The span's ends are visible: every row has a finite maximum and a positive sum.
            weights = backend.exp2_shifted(scores, xp.max(scores, axis=-1, keepdims=True))
            total = xp.sum(weights, axis=-1, keepdims=True)
            v = values.head_positions(row, head, first, last)[cut, :]
            out[row, head, ...] = (weights @ v) / total
    return xp.reshape(out, (rows, q_heads, 1, dv))


def visible_spans(backend, seen) -> list:
    """For each row of the boolean array ``seen`` ``(B, L)``: ``(lo, hi, whole)``, the span
    from its first to its last visible position and whether it sees every position in it
    (``(0, 0, True)`` for a row that sees nothing). Three numbers a row come to the host.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.paged_attention import visible_spans
    >>> backend = lucid.get_backend()
    >>> seen = backend.xp.asarray([[True, True, False], [True, False, True], [False, False, False]])
    >>> visible_spans(backend, seen)
    [(0, 2, True), (0, 3, False), (0, 0, True)]
    """
    xp, length = backend.xp, seen.shape[-1]
    lo = xp.argmax(xp.astype(seen, xp.int8), axis=-1)
    hi = length - xp.argmax(xp.astype(xp.flip(seen, axis=-1), xp.int8), axis=-1)
    count = xp.sum(xp.astype(seen, xp.int64), axis=-1)
    spans = []
    for lo_, hi_, count_ in zip(*(backend.to_host(a).tolist() for a in (lo, hi, count))):
        spans.append((0, 0, True) if not count_ else (lo_, hi_, hi_ - lo_ == count_))
    return spans


def _c_order(xp, x):
    """``x`` copied into a new C-contiguous array (the scores' rows then reduce in order)."""
    out = xp.empty(tuple(x.shape), dtype=x.dtype)
    out[...] = x
    return out
