"""Backend-agnostic functions for attention models, written over the tensor's array namespace."""
from __future__ import annotations

import math

from ..tensor import Tensor
from .cache.quantized_codes import QuantizedTensor
from .cache.paged_tensor import PagedTensor
from .cache.window_tensor import WindowTensor
from .causal_attention import attend_causal, fits
from .paged_attention import attend_blocks, block_mask
from .scores import LOG2_E, c_order
from .quantized_attention import CODES_ROWS, attend_codes


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
    return x.with_array(_softmax(x.backend.xp, x.array, axis))


def _softmax(xp, data, axis: int = -1):
    peak = xp.max(data, axis=axis, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    weights = xp.exp(data - peak)
    total = xp.sum(weights, axis=axis, keepdims=True)
    return weights / xp.where(total > 0, total, xp.ones_like(total))


def attention_mask(query_positions, key_positions, window: int | None = None, sink_tokens: int = 0) -> Tensor:
    """Which keys each query may attend to, from absolute positions: a boolean ``(Lq, Lk)`` mask
    (``(B, Lq, Lk)`` for positions given per row, ``(B, Lq)`` and ``(B, Lk)``).

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
    rows = q.array[..., :, None]
    cols = q.as_operand(k)[..., None, :]
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
    _check_shapes(query.shape, key.shape, value.shape)
    batch, q_heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if k_len == 0:  # no keys (a layer cropped to nothing): every row attends nothing
        return query.with_array(xp.zeros((batch, q_heads, q_len, value.shape[-1]), dtype=query.array.dtype))
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    allowed = additive = None
    if attn_mask is not None:
        mask = query.as_operand(_tensor(attn_mask, "attn_mask"))
        if mask.dtype == xp.bool:
            allowed = mask
        else:
            additive = mask
    if (isinstance(key, WindowTensor) and isinstance(value, WindowTensor) and additive is None
            and (q_len == 1 or not is_causal) and (allowed is None or bool(xp.all(allowed)))):
        # A sliding window with sinks, read by queries that see every key it holds: the
        # softmax does not depend on the keys' order, so read them as the ring holds them.
        key, value = Tensor.wrap(key.unordered, key.backend), Tensor.wrap(value.unordered, value.backend)
        allowed, is_causal = None, False
    if (isinstance(key, QuantizedTensor) and isinstance(value, QuantizedTensor) and additive is None
            and key.backend is query.backend and value.backend is query.backend
            and q_heads // kv_heads * q_len <= CODES_ROWS):
        # A decode step over a quantized layer: read the codes, never the full-precision history.
        if is_causal:
            causal = xp.arange(k_len)[None, :] <= xp.arange(k_len - q_len, k_len)[:, None]
            allowed = causal if allowed is None else (allowed & causal)
        if allowed is not None and bool(xp.all(allowed)):
            allowed = None
        return query.with_array(attend_codes(xp, query.array, key.codes, value.codes, allowed, scale))
    if (isinstance(key, PagedTensor) and isinstance(value, PagedTensor) and additive is None and q_len == 1
            and key.backend is query.backend and value.backend is query.backend and key.ndim == 4
            and key.lengths == value.lengths and key.dtype == value.dtype == query.dtype
            and query.backend.matmul_dtype(query.array.dtype) == query.array.dtype):
        # A decode step over a paged cache: read the blocks as they are, not laid out in order.
        seen = block_mask(xp, key, allowed)  # q_len == 1: causal or not, every key
        if seen is not None:
            return query.with_array(attend_blocks(query.backend, query.array, key, value, seen, scale))
    q, k, v = query.array, query.as_operand(key), query.as_operand(value)
    given = q.dtype
    work = query.backend.matmul_dtype(given)
    if work != given:  # a dtype the backend multiplies slowly: attention in one it multiplies fast
        q, k, v = (xp.astype(a, work) for a in (q, k, v))
    if (is_causal and allowed is None and additive is None and 1 < q_len <= k_len
            and fits(batch, kv_heads, q_heads // kv_heads, k_len)):
        # A prefill's causal attention: the mask is known, blocks of queries need no reading of one.
        result = attend_causal(query.backend, q, k, v, scale)
        return query.with_array(result if result.dtype == given else xp.astype(result, given))
    # Blocks of queries and batch rows whose scores stay small enough to live in the CPU's
    # cache (the full (B, H, Lq, Lk) matrix of a long prefill would be hundreds of megabytes,
    # written and read several times), with enough query rows per block for efficient matrix
    # products. Each block reads only the keys some of its rows may see (a causal prefill
    # skips the future, a sliding window the distant past) and masks only the keys its rows
    # disagree on (none, in a decode step).
    per_row = q_heads * k_len
    group = q_heads // kv_heads
    # Two blocks at least once there is enough work, so that two cores can share it.
    budget = min(SCORES_PER_BLOCK, max(SPLIT_FROM, batch * per_row * q_len // 2))
    rows = min(q_len, max(MIN_QUERY_BLOCK, min(QUERY_BLOCK, budget // per_row)))
    tiled = (additive is None and group * min(rows, QUERY_BLOCK) >= KEYS_FIRST_ROWS and PROBE_KEYS > 0
             and dim >= TILED_FROM_DIM)
    if tiled:
        # Keys go through a block in tiles, so only a tile's scores need to stay in the
        # CPU's cache: blocks of a few query rows per key/value head whatever the length.
        tile_keys = min(k_len, KEY_TILE)
        budget = min(budget, TILE_SCORES)
        rows = min(q_len, max(MIN_QUERY_BLOCK, min(QUERY_BLOCK, TILE_QUERY_ROWS // group,
                                                   budget // (q_heads * tile_keys))))
        per_row = q_heads * tile_keys
    if (is_causal or allowed is not None) and batch * per_row * q_len > budget:
        # Split anyway: at most half the queries per block, so that a causal mask's diagonal
        # (keys computed, then masked) covers at most a quarter of a block's scores.
        rows = min(rows, max(MIN_QUERY_BLOCK, -(-q_len // 2)))
    batch_rows = min(batch, max(1, budget // (per_row * rows)))
    factor = scale * LOG2_E  # scores in base 2: the exponential is then exp2, the faster one
    # The tiled blocks read keys and values with a column of ones appended: the ones let the
    # scores' product subtract each row's shift, and the values' product sum the weights.
    k_ones = _with_ones(xp, k) if tiled else None
    v_ones = _with_ones(xp, v) if tiled else None
    bounds = None
    if not tiled and additive is None and group * rows >= KEYS_FIRST_ROWS:
        bounds = _ScoreBounds(xp, k, v)

    def block(task):
        start, b0 = task
        stop, b1 = min(q_len, start + rows), min(batch, b0 + batch_rows)
        visible = _rows(allowed, start, stop, q_len)
        if is_causal:
            causal = xp.arange(k_len)[None, :] <= (xp.arange(start, stop)[:, None] + (k_len - q_len))
            visible = causal if visible is None else (visible & causal)
        first, last, masked = 0, k_len, (0, k_len)
        if visible is not None and bool(xp.all(visible)):
            visible = None  # a decode step's usual mask: nothing to trim or mask
        if visible is not None and visible.shape[-1] == k_len and k_len:
            first, last, masked = _key_spans(xp, _batch(visible, b0, b1, batch))
            visible = visible[..., masked[0]:masked[1]]
        bias = _rows(additive, start, stop, q_len)
        if bias is not None and bias.shape[-1] == k_len:
            bias = bias[..., first:last]
        block_q = q[b0:b1, :, start:stop, :] * factor
        result = None
        if tiled:
            result = _attend_tiled(query.backend, block_q, k_ones[b0:b1, :, first:last, :],
                                   v_ones[b0:b1, :, first:last, :], _batch(visible, b0, b1, batch),
                                   (masked[0] - first, masked[1] - first))
        if result is None:  # each row shifted by its own maximum, unless the scores are bounded
            shift = bounds is None or not bounds.unshifted(block_q, b0, b1, first, last)
            result = _attend(query.backend, block_q, k[b0:b1, :, first:last, :], v[b0:b1, :, first:last, :],
                             _batch(visible, b0, b1, batch), (masked[0] - first, masked[1] - first),
                             _batch(bias, b0, b1, batch), shift)
        if out is None:
            return result
        out[b0:b1, :, start:stop, :] = result  # each block fills its part: nothing to join after

    # The latest queries first: with a causal mask they see the most keys, and starting the
    # longest blocks first keeps the cores evenly busy to the end.
    tasks = [(start, b0) for start in reversed(range(0, q_len, rows)) for b0 in range(0, batch, batch_rows)]
    out = None if len(tasks) == 1 else xp.empty((batch, q_heads, q_len, v.shape[-1]), dtype=q.dtype)
    # Independent blocks: the backend may run them at once (NumPy: one per core).
    results = query.backend.map_blocks(block, tasks)
    result = results[0] if out is None else out
    return query.with_array(result if result.dtype == given else xp.astype(result, given))


def _check_shapes(q: tuple, k: tuple, v: tuple) -> None:
    """``ValueError`` unless query, key and value shapes fit one attention."""
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise ValueError(f"query, key and value must be 4-D (B, H, L, D); got {q}, {k}, {v}")
    if q[1] % k[1] or v[1] != k[1] or v[2] != k[2] or k[3] != q[3]:
        raise ValueError(
            f"shapes do not fit: query {tuple(q)}, key {tuple(k)}, value {tuple(v)}; "
            "query heads must be a multiple of key/value heads and key/value must share their length"
        )


#: Scores (``batch rows * heads * query rows * keys``) one block may produce at most: 4 MB.
SCORES_PER_BLOCK = 2**20
#: Query rows per block at most (and at least, whatever the budget: fewer would make the
#: matrix products inefficient).
QUERY_BLOCK = 128
MIN_QUERY_BLOCK = 16
#: Scores below which attention stays one block.
SPLIT_FROM = 2**17


def _batch(mask, start: int, stop: int, batch: int):
    """Batch rows ``[start, stop)`` of a mask broadcastable to ``(B, H, Lq, Lk)``."""
    if mask is None or mask.ndim < 4 or mask.shape[0] != batch or stop - start == batch:
        return mask
    return mask[start:stop, ...]


def _key_spans(xp, visible):
    """Host ints for a block's mask: the keys some row sees ``[first, last)`` and, within
    them, the span ``(lo, hi)`` of keys that some row may not see (the only ones to mask)."""
    flat = xp.reshape(visible, (-1, visible.shape[-1]))
    index = xp.arange(flat.shape[-1])
    seen, partial = xp.any(flat, axis=0), ~xp.all(flat, axis=0)
    none = flat.shape[-1]
    first = int(xp.min(xp.where(seen, index, none)))
    if first == none:  # nothing visible at all: one key keeps the shapes valid, its row comes out zero
        return 0, 1, (0, 1)
    last = int(xp.max(xp.where(seen, index, -1))) + 1
    lo = int(xp.min(xp.where(partial[first:last], index[first:last], last)))
    hi = int(xp.max(xp.where(partial[first:last], index[first:last], lo - 1))) + 1
    return first, last, (lo, hi)


def _rows(mask, start: int, stop: int, q_len: int):
    """The query rows ``[start, stop)`` of a mask broadcastable to ``(..., Lq, Lk)``."""
    if mask is None or mask.ndim < 2 or mask.shape[-2] != q_len:
        return mask
    return mask[..., start:stop, :]


def _attend(backend, q, k, v, visible, masked, bias, shift: bool):
    """Attention of one block of queries: ``softmax(q k^T + bias, masked) v`` with ``q``
    already scaled into base 2 (the softmax's exponential is ``exp2``).

    ``visible`` covers the keys ``masked = (lo, hi)``; the others are all visible. ``shift``
    False: the caller proved the scores small enough for ``2 ** score`` without subtracting
    each row's maximum (see :class:`_ScoreBounds`).

    The query heads that share a key/value head (grouped-query attention) and the block's
    queries form one matrix per key/value head, multiplied with its keys in one product.
    A large block (a prefill) lays its scores out keys first, ``(B, Hkv, Lk, G, Lq)``, from
    ``k @ q^T``: long in the keys and short in the head dimension, the shape BLAS runs
    fastest (about twice ``q @ k^T`` on prefill blocks). A decode step's few rows keep the
    queries first, ``(B, Hq, Lq, Lk)``, where the softmax's reductions run along memory; their
    scores still come from ``k @ q^T`` (with ``q^T`` and the result copied contiguous, which
    is cheap for so few rows): BLAS runs ``q @ k^T`` with a handful of rows several times
    slower. The softmax's division goes into the output (``Lq x Dv`` values, not
    ``Lq x Lk``) and the exponential reuses the scores' memory.
    """
    xp = backend.xp
    batch, q_heads, q_len, dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    qg = xp.reshape(q, (batch, kv_heads, group * q_len, dim))
    if group * q_len >= KEYS_FIRST_ROWS:
        scores, axis = xp.reshape(k @ xp.matrix_transpose(qg), (batch, kv_heads, k_len, group, q_len)), 2
        bias = None if bias is None else _keys_first(xp, bias, kv_heads, group)
        visible = None if visible is None else _keys_first(xp, visible, kv_heads, group)
    else:
        scores = c_order(xp, xp.matrix_transpose(k @ c_order(xp, xp.matrix_transpose(qg))))
        scores, axis = xp.reshape(scores, (batch, q_heads, q_len, k_len)), 3
    if bias is not None:
        scores = scores + bias * LOG2_E  # into base 2 as the scores
    lo, hi = masked
    if visible is not None and hi > lo:
        # In place, adding 0 or -inf from the mask's own (smaller) shape: several times faster
        # than a where() that broadcasts the mask over the scores. The addend is laid out in
        # C order, as the scores are (a keys-first mask is a transposed view, and where()
        # would keep that layout: the addition would then stride across memory).
        zero = xp.zeros((), dtype=scores.dtype)
        scores[(slice(None),) * axis + (slice(lo, hi), ...)] += c_order(xp, xp.where(visible, zero, zero - math.inf))
    peak = None
    if shift:
        peak = xp.max(scores, axis=axis, keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    weights = backend.exp2_shifted(scores, peak)
    total = xp.sum(weights, axis=axis, keepdims=True)
    total = xp.reshape(xp.where(total > 0, total, xp.ones_like(total)), (batch, q_heads, q_len, 1))
    if axis == 2:
        weights = xp.matrix_transpose(xp.reshape(weights, (batch, kv_heads, k_len, group * q_len)))
    else:
        weights = xp.reshape(weights, (batch, kv_heads, group * q_len, k_len))
    return xp.reshape(weights @ v, (batch, q_heads, q_len, v.shape[-1])) / total


def _with_ones(xp, x):
    """``x`` ``(..., D)`` with a column of ones appended: ``(..., D + 1)``."""
    out = xp.empty(tuple(x.shape[:-1]) + (x.shape[-1] + 1,), dtype=x.dtype)
    out[..., :-1] = x
    out[..., -1] = 1
    return out


def _attend_tiled(backend, q, k_ones, v_ones, visible, masked):
    """Attention of one block of queries as :func:`_attend` computes it, the keys taken in
    tiles of ``KEY_TILE``; ``None`` where this block needs :func:`_attend` instead.

    ``k_ones`` and ``v_ones`` are the keys and values with a column of ones appended. Each
    row's shift is fixed before the tiles: the largest of its scores on the keys its mask
    covers (``masked``: in a causal prefill the block's diagonal, the latest keys) and on a
    few keys every row sees (``PROBE_KEYS`` spread over the others, the first of them the
    first token, which trained models attend to most). Usually that is the row's maximum,
    or close below it. Its negative goes into the queries' extra column, so each tile's
    scores come out of their product shifted; the values' column of ones sums the weights in
    the weighted sum's product. A tile's scores then take two passes (the exponential, and
    the mask where it covers them) and stay in the cache from their product to their weighted
    sum, with no running maximum to rescale between tiles, where the exact softmax makes five
    over the block's whole scores.

    A shift below the true maximum only makes weights larger, never rounds them to zero:
    where it is so far below that a weight overflows, the sums are not finite and the block
    is left to the exact maximum (``None``), as is a block with a row that sees no key.
    """
    xp = backend.xp
    batch, q_heads, q_len, dim = q.shape
    kv_heads, k_len = k_ones.shape[1], k_ones.shape[2]
    group = q_heads // kv_heads
    rows = group * q_len
    lo, hi = (k_len, k_len) if visible is None else masked
    queries = xp.empty((batch, kv_heads, rows, dim + 1), dtype=q.dtype)
    queries[..., :dim] = xp.reshape(q, (batch, kv_heads, rows, dim))
    queries[..., dim] = 0
    shift = None
    if lo > 0:
        probes = k_ones[:, :, 0:lo:-(-lo // PROBE_KEYS), :]  # the first key, then evenly spread
        shift = xp.max(probes @ xp.matrix_transpose(queries), axis=2)
    out = xp.empty((batch, kv_heads, rows, v_ones.shape[-1]), dtype=q.dtype)
    with backend.overflow_quietly():  # overflowing weights are caught below
        if hi > lo:  # the keys the mask covers, first: their scores finish the shift
            zero = xp.zeros((), dtype=q.dtype)
            scores = xp.reshape(k_ones[:, :, lo:hi, :] @ xp.matrix_transpose(queries),
                                (batch, kv_heads, hi - lo, group, q_len))
            scores += c_order(xp, xp.where(_keys_first(xp, visible, kv_heads, group), zero, zero - math.inf))
            peak = xp.reshape(xp.max(scores, axis=2), (batch, kv_heads, rows))
            shift = peak if shift is None else xp.maximum(shift, peak)
            if not bool(xp.all(xp.isfinite(shift))):
                return None  # a row that sees no key
            weights = backend.exp2_shifted(xp.reshape(scores, (batch, kv_heads, hi - lo, rows)), shift[:, :, None, :])
            backend.matmul_into(xp.matrix_transpose(weights), v_ones[:, :, lo:hi, :], out)
        if shift is None:
            return None  # neither a key every row sees nor a masked span: nothing to shift by
        queries[..., dim] = -shift
        queries_t = xp.matrix_transpose(queries)
        tile = min(k_len, KEY_TILE)
        scratch = xp.empty((batch * kv_heads * tile * rows,), dtype=q.dtype)
        part = xp.empty_like(out)
        for t0 in [t for start, stop in ((0, lo), (hi, k_len)) for t in range(start, stop, tile)]:
            t1 = min(lo if t0 < lo else k_len, t0 + tile)
            shape = (batch, kv_heads, t1 - t0, rows)
            scores = backend.matmul_into(k_ones[:, :, t0:t1, :], queries_t, xp.reshape(scratch[:math.prod(shape)], shape))
            weights = backend.exp2_shifted(scores)
            if t0 == 0 and hi == lo:  # the first product of a block without a mask
                backend.matmul_into(xp.matrix_transpose(weights), v_ones[:, :, t0:t1, :], out)
            else:
                out += backend.matmul_into(xp.matrix_transpose(weights), v_ones[:, :, t0:t1, :], part)
    if not bool(xp.all(xp.isfinite(out))):
        return None
    values = v_ones.shape[-1] - 1
    return xp.reshape(out[..., :values] / out[..., values:], (batch, q_heads, q_len, values))


#: Largest base-2 score bound for which the softmax skips subtracting each row's maximum.
UNSHIFTED_BOUND = 32.0


class _ScoreBounds:
    """When a block's softmax may skip the row maxima: a bound on its scores from norms.

    By Cauchy-Schwarz, ``|q . k| <= |q| |k|``, so ``max |q| * max |k|`` over a block bounds
    every score in it. When that bound is at most ``UNSHIFTED_BOUND`` (in base 2), every
    ``2 ** score`` lies in ``[2**-32, 2**32]``: normal float32 numbers, as accurate as the
    shifted ones, whose sums and products with the values cannot overflow. Then the pass
    that finds each row's maximum and the pass that subtracts it are skipped; the
    normalisation divides the same factor out. Models whose scores are larger take the usual
    shifted path. The key norms are computed once per attention call; a block takes the
    largest over its keys.
    """

    def __init__(self, xp, k, v):
        self.xp, self.squared_key_norms = xp, None
        limit = _finite_limit(xp, v, k.shape[2])
        if limit >= UNSHIFTED_BOUND:
            self.squared_key_norms = xp.vecdot(k, k)  # (B, Hkv, Lk)

    def unshifted(self, q, b0: int, b1: int, first: int, last: int) -> bool:
        """Whether the scores of queries ``q`` (base-2 scaled) against keys ``[first, last)`` of
        batch rows ``[b0, b1)`` are bounded by ``UNSHIFTED_BOUND``."""
        if self.squared_key_norms is None:
            return False
        xp = self.xp
        q_sq = float(xp.max(xp.vecdot(q, q)))
        k_sq = float(xp.max(self.squared_key_norms[b0:b1, :, first:last]))
        return math.sqrt(q_sq * k_sq) <= UNSHIFTED_BOUND  # False for NaN or inf norms


def _finite_limit(xp, v, k_len: int) -> float:
    """The largest base-2 score for which ``k_len`` weights of ``2 ** score`` times the values
    ``v`` still sum to a finite number, with a margin of ``2**8``; ``-inf`` when the values
    are not finite or not a float type of at least 32 bits."""
    if v.dtype not in (xp.float32, xp.float64) or k_len == 0:
        return -math.inf
    largest = max(float(xp.max(v)), -float(xp.min(v)))
    if not math.isfinite(largest):
        return -math.inf
    return math.log2(float(xp.finfo(v.dtype).max)) - math.log2(k_len) - math.log2(max(largest, 1.0)) - 8


#: Query rows per key/value head (``G * Lq``) from which a block's scores are laid out keys first.
KEYS_FIRST_ROWS = 64
#: Keys per tile of a tiled block (:func:`_attend_tiled`).
KEY_TILE = 512
#: Scores of one tile at most (1 MB: a core's share of this machine's second-level cache).
TILE_SCORES = 2**18
#: Query rows per key/value head (``G * Lq``) a tiled block aims for.
TILE_QUERY_ROWS = 192
#: Keys whose scores set a tiled block's shift (0: no tiles).
PROBE_KEYS = 8
#: Head dimension from which a prefill's blocks go in tiles. Smaller heads (32) make products
#: too short for the tiles' extra column and calls to pay: a 256-wide model with heads of 32
#: prefilled 1.1-1.2x slower in tiles than with the row maxima (or no shift where bounded).
TILED_FROM_DIM = 64


def _keys_first(xp, mask, kv_heads: int, group: int):
    """A mask or bias broadcastable to ``(B, Hq, Lq, Lk)``, laid out as the scores are:
    ``(B, Hkv, Lk, G, Lq)`` (its batch and head axes may stay 1)."""
    mask = xp.reshape(mask, (1,) * (4 - mask.ndim) + tuple(mask.shape))
    batch, heads, q_len, k_len = mask.shape
    mask = xp.permute_dims(mask, (0, 1, 3, 2))
    if heads == 1:
        return xp.reshape(mask, (batch, 1, k_len, 1, q_len))
    return xp.permute_dims(xp.reshape(mask, (batch, kv_heads, group, k_len, q_len)), (0, 1, 3, 2, 4))
