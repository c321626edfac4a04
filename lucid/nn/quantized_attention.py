"""Attention read straight from a quantized layer's codes, a block of positions at a time.

A decode step over a quantized cache never builds the full-precision keys and values of its
history. Scales fold into the small operands instead of the codes: a key group's per-channel
scales multiply the queries (``q . (c * s + z) == (q * s) . c + q . z``), a value's
per-position scales multiply the attention weights, so each block of codes is only converted
to floats (``CODES_BLOCK_BYTES`` at most) and multiplied. A 4-bit byte holds channel ``j`` in
its low half and channel ``j + D/2`` in its high half, so the two halves multiply the first and
the second half of the folded operand: no interleaving copy.
Long prefills (many query rows) build the arrays instead, where one dequantization is shared by
every row.
"""
from __future__ import annotations

import math

from .cache.quantized_codes import Codes, work_dtype

#: Bytes of float codes one block converts at most.
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
    qg = xp.reshape(xp.astype(q, work) * scale, (batch, kv_heads, rows, dim))
    # Scores come keys first, (B, Hkv, n, rows), from k @ q^T: the product BLAS runs fastest for a
    # few query rows. They are copied once into rows first, (B, Hkv, rows, Lk), where the
    # softmax's reductions and the values' products run along memory.
    parts = [_key_scores(xp, keys, qg, start, stop, work) for start, stop in _blocks(keys)]
    if parts:
        parts[0] = parts[0][..., keys.skip:, :]
    first = keys.first.shape[-2]
    if first:
        parts.insert(0, xp.astype(keys.first, work) @ xp.matrix_transpose(qg))
    if keys.recent.shape[-2]:
        parts.append(xp.astype(keys.recent, work) @ xp.matrix_transpose(qg))
    scores = xp.empty((batch, kv_heads, rows, k_len), dtype=work)
    scores[...] = xp.matrix_transpose(xp.concat(parts, axis=2) if len(parts) > 1 else parts[0])
    if visible is not None:
        seen = xp.reshape(xp.broadcast_to(visible, (batch, q_heads, q_len, k_len)), (batch, kv_heads, rows, k_len))
        scores = xp.where(seen, scores, xp.asarray(-math.inf, dtype=work))
    peak = xp.max(scores, axis=-1, keepdims=True)
    weights = xp.exp(scores - xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak)))
    total = xp.sum(weights, axis=-1, keepdims=True)  # (B, Hkv, rows, 1)
    out = weights[..., :first] @ xp.astype(values.first, work) if first else None
    weights = weights[..., first:]
    # The skipped (cropped) positions of the first block weigh nothing.
    if values.skip:
        weights = xp.concat([xp.zeros((batch, kv_heads, rows, values.skip), dtype=work), weights], axis=-1)
    for start, stop in _blocks(values):
        block = _weighted_values(xp, values, weights[..., start:stop], start, stop, work)
        out = block if out is None else out + block
    if values.recent.shape[-2]:
        recent = weights[..., values.codes.shape[-2]:] @ xp.astype(values.recent, work)
        out = recent if out is None else out + recent
    out = out / xp.where(total > 0, total, xp.ones_like(total))
    return xp.astype(xp.reshape(out, (batch, q_heads, q_len, out.shape[-1])), q.dtype)


def _key_scores(xp, keys: Codes, qg, start: int, stop: int, work):
    """Scores ``(B, H, stop - start, rows)`` of the queries ``qg`` ``(B, H, rows, D)`` against
    the stored keys ``[start, stop)`` (whole groups): per group, the queries times the group's
    channel scales against the codes, plus the queries against the group's zeros."""
    lead, rows, size = tuple(qg.shape[:2]), qg.shape[2], keys.group_size
    count = stop - start
    groups = count // size
    scales, zeros = (xp.astype(a[..., start // size:stop // size, :], work) for a in (keys.scales, keys.zeros))
    folded = qg[:, :, None, :, :] * scales[:, :, :, None, :]  # (B, H, groups, rows, D)
    bias = zeros @ xp.matrix_transpose(qg)  # (B, H, groups, rows)
    codes = keys.codes[..., start:stop, :]
    width = codes.shape[-1]
    as_groups = (lambda c: xp.reshape(xp.astype(c, work), lead + (groups, size, width)))
    if keys.bits == 8:
        scores = as_groups(codes) @ xp.matrix_transpose(folded)
    else:
        scores = (as_groups(xp.bitwise_and(codes, 15)) @ xp.matrix_transpose(folded[..., :width])
                  + as_groups(xp.bitwise_right_shift(codes, 4)) @ xp.matrix_transpose(folded[..., width:]))
    return xp.reshape(scores + bias[:, :, :, None, :], lead + (count, rows))


def _weighted_values(xp, values: Codes, weights, start: int, stop: int, work):
    """``weights @ v`` ``(B, H, rows, Dv)`` for the stored values ``[start, stop)`` and their
    ``weights`` ``(B, H, rows, stop - start)``: per group of the head dimension, the weights
    times the positions' scales against the codes, plus the weights against their zeros."""
    size, dim = values.group_size, values.recent.shape[-1]
    scales, zeros = (xp.astype(a[..., start:stop, :], work) for a in (values.scales, values.zeros))
    codes = values.codes[..., start:stop, :]
    floats = xp.astype(codes if values.bits == 8 else xp.bitwise_and(codes, 15), work)
    high = None if values.bits == 8 else xp.astype(xp.bitwise_right_shift(codes, 4), work)
    half, pieces = dim // 2, []
    for j in range(dim // size):
        scaled = weights * xp.matrix_transpose(scales[..., j:j + 1])  # (B, H, rows, n)
        bias = weights @ zeros[..., j:j + 1]  # (B, H, rows, 1)
        lo, hi = j * size, (j + 1) * size
        if high is None:
            pieces.append(scaled @ floats[..., lo:hi] + bias)
            continue
        if lo < half:  # low nibbles
            pieces.append(scaled @ floats[..., lo:min(hi, half)] + bias)
        if hi > half:  # high nibbles
            bottom = max(lo, half)
            pieces.append(scaled @ high[..., bottom - half:hi - half] + bias)
    return xp.concat(pieces, axis=-1) if len(pieces) > 1 else pieces[0]


def _blocks(codes: Codes) -> list:
    """``(start, stop)`` of the stored positions, in blocks of at most ``CODES_BLOCK_BYTES``
    of float codes (whole key groups)."""
    stored, size = codes.codes.shape[-2], codes.group_size
    per_position = math.prod(codes.recent.shape[:-2]) * codes.codes.shape[-1] * 4
    step = max(size, CODES_BLOCK_BYTES // per_position // size * size)
    return [(start, min(stored, start + step)) for start in range(0, stored, step)]
