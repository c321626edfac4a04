"""Attention read straight from a quantized layer's codes, a block of positions at a time.

A decode step over a quantized cache never builds the full-precision keys and values of its
history: each block of positions is dequantized into a small buffer (``CODES_BLOCK_BYTES``),
multiplied, and dropped, so a step reads the codes once and its temporaries stay the size of
a block whatever the length. Long prefills (many query rows) build the arrays instead, where
the one dequantization is shared by every row.
"""
from __future__ import annotations

import math

from .cache.quantized_codes import Codes, work_dtype

#: Bytes of dequantized keys or values one block holds at most.
CODES_BLOCK_BYTES = 1 << 20
#: Query rows per key/value head (``G * Lq``) up to which attention reads the codes; more
#: rows read the dequantized arrays (one dequantization shared by many rows).
CODES_ROWS = 64


def attend_codes(xp, q, keys: Codes, values: Codes, visible, scale: float):
    """``softmax(q k^T * scale, visible) v`` with ``k`` and ``v`` read from codes.

    Parameters
    ----------
    xp : array namespace
    q : array ``(B, Hq, Lq, D)``
    keys, values : Codes
        Of one layer, ``Hq`` a multiple of their heads.
    visible : bool array broadcastable to ``(B, Hq, Lq, Lk)``, or None
    scale : float

    Returns
    -------
    array ``(B, Hq, Lq, Dv)`` in ``q``'s dtype; rows that see nothing are zero.

    Examples
    --------
    >>> import lucid, lucid.nn as nn, numpy as np
    >>> from lucid.nn.functional import scaled_dot_product_attention
    >>> from lucid.nn.quantized_attention import attend_codes
    >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
    >>> k, v = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
    >>> q = lucid.randn(1, 2, 1, 4).array
    >>> out = attend_codes(np, q, k.codes, v.codes, None, 0.5)
    >>> dense = scaled_dot_product_attention(q, k.numpy(), v.numpy(), scale=0.5).numpy()
    >>> out.shape, bool(np.allclose(out, dense, atol=1e-6))
    ((1, 2, 1, 4), True)
    """
    work = work_dtype(xp, keys.dtype_name)
    batch, q_heads, q_len, dim = q.shape
    kv_heads, k_len = keys.recent.shape[1], keys.length
    rows = q_heads // kv_heads * q_len
    qt = xp.matrix_transpose(xp.reshape(xp.astype(q, work) * scale, (batch, kv_heads, rows, dim)))
    # Scores laid out keys first, (B, Hkv, Lk, rows): k @ q^T is the product BLAS runs fastest
    # for a few query rows, and each block's scores land next to each other.
    parts = [keys.read(xp, start, stop) @ qt for start, stop in _blocks(keys)]
    if parts:
        parts[0] = parts[0][..., keys.skip:, :]
    if keys.recent.shape[-2]:
        parts.append(xp.astype(keys.recent, work) @ qt)
    scores = xp.concat(parts, axis=2) if len(parts) > 1 else parts[0]
    if visible is not None:
        seen = xp.broadcast_to(visible, (batch, q_heads, q_len, k_len))
        seen = xp.matrix_transpose(xp.reshape(seen, (batch, kv_heads, rows, k_len)))
        scores = xp.where(seen, scores, xp.asarray(-math.inf, dtype=work))
    peak = xp.max(scores, axis=2, keepdims=True)
    weights = xp.exp(scores - xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak)))
    total = xp.sum(weights, axis=2)  # (B, Hkv, rows)
    out = xp.zeros((batch, kv_heads, rows, values.recent.shape[-1]), dtype=work)
    quantized = values.quantized
    for start, stop in _blocks(values):
        block = values.read(xp, start, stop)
        if start < values.skip:
            block = block[..., values.skip - start:, :]
        first = max(0, start - values.skip)
        out = out + xp.matrix_transpose(weights[:, :, first:first + block.shape[-2], :]) @ block
    if values.recent.shape[-2]:
        out = out + xp.matrix_transpose(weights[:, :, quantized:, :]) @ xp.astype(values.recent, work)
    out = out / xp.where(total > 0, total, xp.ones_like(total))[..., None]
    return xp.astype(xp.reshape(out, (batch, q_heads, q_len, out.shape[-1])), q.dtype)


def _blocks(codes: Codes) -> list:
    """``(start, stop)`` of the stored positions, in blocks of at most ``CODES_BLOCK_BYTES``
    of dequantized work values (whole key groups)."""
    stored, size = codes.codes.shape[-2], codes.group_size
    per_position = math.prod(codes.recent.shape[:-2]) * codes.recent.shape[-1] * 4
    step = max(size, CODES_BLOCK_BYTES // per_position // size * size)
    return [(start, min(stored, start + step)) for start in range(0, stored, step)]
