"""Backend-agnostic functions for attention models, written over the tensor's array namespace."""
from __future__ import annotations

import math

from ..tensor import Tensor


def _tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return Tensor(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a lucid.Tensor or an array, got {type(x).__name__}") from exc


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Numerically stable softmax; a slice that is all ``-inf`` gives zeros, not NaN.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.functional import softmax
    >>> [round(p, 4) for p in softmax(lucid.Tensor([0.0, 0.0, float("-inf")])).tolist()]
    [0.5, 0.5, 0.0]
    """
    x = _tensor(x, "x")
    xp = x.backend.xp
    data = x.array
    peak = xp.max(data, axis=axis, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    weights = xp.exp(data - peak)
    total = xp.sum(weights, axis=axis, keepdims=True)
    return x.with_array(weights / xp.where(total > 0, total, xp.ones_like(total)))


def attention_mask(query_positions, key_positions, window: int | None = None, sink_tokens: int = 0) -> Tensor:
    """Which keys each query may attend to, from absolute positions: a boolean ``(Lq, Lk)`` mask.

    Query ``q`` sees key ``k`` when ``k <= q`` (causal) and, with a ``window``, when
    ``q - k < window`` or ``k < sink_tokens`` (attention sinks stay visible). Key positions
    come from the cache (``cache.key_positions``), so the mask is right whatever the cache
    kept: everything, a sliding window, or sinks plus a window.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.functional import attention_mask
    >>> attention_mask(lucid.Tensor([5]), lucid.Tensor([0, 3, 4, 5]), window=2, sink_tokens=1).tolist()
    [[True, False, True, True]]
    """
    q = _tensor(query_positions, "query_positions")
    k = _tensor(key_positions, "key_positions")
    xp = q.backend.xp
    rows = xp.reshape(q.array, (-1, 1))
    cols = xp.reshape(q.as_operand(k), (1, -1))
    visible = cols <= rows
    if window is not None:
        visible = visible & ((rows - cols < window) | (cols < sink_tokens))
    return q.with_array(visible)


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """Attention ``softmax(q k^T * scale + mask) v`` over the last two axes.

    Parameters
    ----------
    query : Tensor, shape ``(B, Hq, Lq, D)``
    key : Tensor, shape ``(B, Hkv, Lk, D)``
        ``Hq`` must be a multiple of ``Hkv`` (grouped-query attention: each
        key/value head serves ``Hq // Hkv`` query heads).
    value : Tensor, shape ``(B, Hkv, Lk, Dv)``
    attn_mask : Tensor, optional
        Broadcastable to ``(B, Hq, Lq, Lk)``. Boolean: ``True`` means *may
        attend*. Floating: added to the scores (use ``-inf`` to block).
    is_causal : bool
        Query ``i`` sees keys ``j <= i + Lk - Lq``: the queries are the last
        ``Lq`` positions of the keys, which is what a decode step with a cache
        needs (``Lq == Lk`` gives the usual lower triangle).
    scale : float, optional
        Defaults to ``1 / sqrt(D)``.

    Returns
    -------
    Tensor, shape ``(B, Hq, Lq, Dv)``. Rows that may attend nothing are zero.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.functional import scaled_dot_product_attention
    >>> q = lucid.randn(1, 4, 1, 8); k = lucid.randn(1, 2, 5, 8); v = lucid.randn(1, 2, 5, 8)
    >>> scaled_dot_product_attention(q, k, v, is_causal=True).shape
    (1, 4, 1, 8)
    """
    query, key, value = _tensor(query, "query"), _tensor(key, "key"), _tensor(value, "value")
    xp = query.backend.xp
    q, k, v = query.array, query.as_operand(key), query.as_operand(value)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"query, key and value must be 4-D (B, H, L, D); got {q.shape}, {k.shape}, {v.shape}")
    batch, q_heads, q_len, dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q_heads % kv_heads or v.shape[1] != kv_heads or v.shape[2] != k_len or k.shape[3] != dim:
        raise ValueError(
            f"shapes do not fit: query {tuple(q.shape)}, key {tuple(k.shape)}, value {tuple(v.shape)}; "
            "query heads must be a multiple of key/value heads and key/value must share their length"
        )
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    # (B, Hkv, G, Lq, D) against (B, Hkv, 1, Lk, D): GQA by broadcasting, no copies of k/v.
    qg = xp.reshape(q, (batch, kv_heads, group, q_len, dim))
    scores = (qg @ xp.matrix_transpose(k[:, :, None, ...])) * scale
    scores = xp.reshape(scores, (batch, q_heads, q_len, k_len))
    blocked = None
    if is_causal:
        rows = xp.arange(q_len)[:, None] + (k_len - q_len)
        blocked = xp.arange(k_len)[None, :] > rows
    if attn_mask is not None:
        mask = query.as_operand(_tensor(attn_mask, "attn_mask"))
        if mask.dtype == xp.bool:
            blocked = ~mask if blocked is None else (blocked | ~mask)
        else:
            scores = scores + mask
    if blocked is not None:
        scores = xp.where(blocked, xp.asarray(-math.inf, dtype=scores.dtype), scores)
    weights = softmax(query.with_array(scores)).array
    weights = xp.reshape(weights, (batch, kv_heads, group, q_len, k_len))
    out = weights @ v[:, :, None, ...]
    return query.with_array(xp.reshape(out, (batch, q_heads, q_len, v.shape[-1])))
