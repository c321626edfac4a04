"""Attention of a decode step over a paged cache's blocks as they come out of the pool.

Laying each row's blocks out in order (``(B, H, L, D)``) would copy every position a second
time; the scores do not need it. With the blocks ``(B, C, Hkv, block_size, D)``, the queries
of each key/value head multiply every block in one batched product, the softmax runs over
the block and position axes together, and the weighted values are summed over the blocks.
"""
from __future__ import annotations

from .cache.paged_tensor import PagedTensor


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
    rows, count = keys.table.shape
    _, kv_heads, size, dim = keys.pool.shape
    q_heads, dv = q.shape[1], values.pool.shape[-1]
    group = q_heads // kv_heads
    visible = xp.reshape(seen, (rows, count, 1, size, 1))
    out = xp.empty((rows, kv_heads, group, dv), dtype=q.dtype)

    def part(span):
        b0, b1 = span
        # (b, 1, Hkv, D, G): each key/value head's queries as columns, scaled once
        qt = xp.empty((b1 - b0, 1, kv_heads, dim, group), dtype=q.dtype)
        qt[...] = xp.matrix_transpose(xp.reshape(q[b0:b1, ...] * scale, (b1 - b0, 1, kv_heads, group, dim)))
        scores = keys.blocks(b0, b1) @ qt  # (b, C, Hkv, size, G)
        scores = xp.where(visible[b0:b1, ...], scores, -xp.inf)
        peak = xp.max(scores, axis=(1, 3), keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
        weights = xp.exp(scores - peak)
        total = xp.sum(weights, axis=(1, 3))  # (b, Hkv, G)
        total = xp.where(total > 0, total, xp.ones_like(total))
        summed = xp.sum(xp.matrix_transpose(weights) @ values.blocks(b0, b1), axis=1)  # (b, Hkv, G, Dv)
        out[b0:b1, ...] = summed / total[..., None]

    step = keys.rows_per_take()  # their blocks stay in the CPU's cache between the take and the products
    backend.map_blocks(part, [(b0, min(rows, b0 + step)) for b0 in range(0, rows, step)])
    return xp.reshape(out, (rows, q_heads, 1, dv))
