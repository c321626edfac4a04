"""Attention of a decode step over a paged cache's blocks as they come out of the pool.

Laying every row's blocks out in order (``(B, H, L, D)``, zeros past each row's length) would
copy the whole batch's history into one array and attend over the longest row's length in
every row. Instead each row is read on its own: for each key/value head, the blocks holding
the positions the row sees are copied out of the pool in order (a contiguous
``(positions, D)`` array that stays in the CPU's cache), and two matrix products over just
those positions give the row's scores and weighted values. A step thus reads each row's
history once and computes nothing past its length. Blocks that several rows share from their
start (a system prompt, a fork's prompt) are read once for all of them (shared-prefix
attention, as Hydragen and FlashInfer's cascade attention do).
"""
from __future__ import annotations

from .cache.paged_tensor import PagedTensor
from .scores import LOG2_E, c_order


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
    # Blocks that several rows share from their first position on (a system prompt, a fork's
    # prompt) are read once for all of them: one product of the shared keys with every such
    # row's queries. Each row then attends to the rest of its positions on its own, and the
    # two parts' softmax sums are joined (the maximum of each part rescales the other's).
    prefixes = {}
    for members, blocks in shared_prefixes(backend.to_host(keys.table).tolist(), spans, size):
        picked, parts = backend.from_host(members), []
        for head in range(kv_heads):
            k = keys.head_positions(members[0], head, 0, blocks)
            mine = xp.reshape(xp.take(queries[:, head, ...], picked, axis=0), (len(members) * group, -1))
            scores = c_order(xp, xp.matrix_transpose(k @ xp.matrix_transpose(mine)))
            peak = xp.max(scores, axis=-1, keepdims=True)
            weights = backend.exp2_shifted(scores, peak)
            parts.append((peak, xp.sum(weights, axis=-1, keepdims=True),
                          weights @ values.head_positions(members[0], head, 0, blocks)))
        # each part per member, every head at once: (H, G, 1), (H, G, 1) and (H, G, Dv)
        joined = [xp.reshape(xp.stack([p[i] for p in parts]), (kv_heads, len(members), group, -1))
                  for i in range(3)]
        for i, row in enumerate(members):
            prefixes[row] = tuple(part[:, i, ...] for part in joined)
            spans[row] = (blocks * size,) + spans[row][1:]  # what is left for the row alone
    # Row after row: its positions differ in number from the others', and a row's copies stay
    # in the CPU's cache from the take to the products. A row's heads go through the softmax
    # together, as one (H, G, positions) array. (Worker threads gained nothing here: the
    # operations are small, and the copies share the memory's bandwidth.)
    for row, (lo, hi, whole) in enumerate(spans):
        shared = prefixes.get(row)
        if lo == hi:  # nothing left: zeros, or the shared part alone
            if shared is not None:
                out[row, ...] = shared[2] / shared[1]
            continue
        first, last = lo // size, -(-hi // size)
        cut = slice(lo - first * size, hi - first * size)
        scores = xp.empty((kv_heads, group, hi - lo), dtype=q.dtype)
        for head in range(kv_heads):
            k = keys.head_positions(row, head, first, last)[cut, :]
            # (positions, D) @ (D, G) is the faster product; the scores are then laid out (G, positions)
            scores[head, ...] = xp.matrix_transpose(k @ xp.matrix_transpose(queries[row, head, ...]))
        if not whole:
            scores = xp.where(seen[row:row + 1, lo:hi], scores, -xp.inf)
        # The span's ends are visible: every row has a finite maximum and a positive sum.
        peak = xp.max(scores, axis=-1, keepdims=True)
        if shared is not None:
            peak = xp.maximum(peak, shared[0])
        weights = backend.exp2_shifted(scores, peak)
        total = xp.sum(weights, axis=-1, keepdims=True)
        weighted = xp.empty((kv_heads, group, dv), dtype=q.dtype)
        for head in range(kv_heads):
            weighted[head, ...] = weights[head, ...] @ values.head_positions(row, head, first, last)[cut, :]
        if shared is not None:
            rescale = backend.exp2_shifted(shared[0] - peak)
            total, weighted = total + shared[1] * rescale, weighted + shared[2] * rescale
        out[row, ...] = weighted / total
    return xp.reshape(out, (rows, q_heads, 1, dv))


def shared_prefixes(table: list, spans: list, size: int) -> list:
    """Groups of rows that share their first blocks: ``[(rows, blocks), ...]``, each group's
    rows (two or more) holding the same first ``blocks`` blocks (``table``: each row's block
    ids) and seeing every position in them (``spans``: :func:`visible_spans`).

    Rows are grouped by their first block; within a group, the prefix taken is the one that
    saves the most reads (rows sharing it, less one, times its blocks), and rows that share
    less of it attend alone.

    Examples
    --------
    >>> from lucid.nn.paged_attention import shared_prefixes
    >>> table = [[7, 8, 1], [7, 8, 2], [7, 3, 0], [4, 5, 6]]
    >>> shared_prefixes(table, [(0, 6, True), (0, 5, True), (0, 4, True), (0, 6, True)], 2)
    [([0, 1], 2)]
    >>> shared_prefixes(table, [(0, 6, True), (0, 3, True), (0, 4, True), (0, 6, True)], 2)  # row 1 sees 1 block whole
    [([0, 1, 2], 1)]
    """
    by_first = {}
    for row, (ids, (lo, hi, whole)) in enumerate(zip(table, spans)):
        full = hi // size if lo == 0 and whole else 0  # blocks the row sees whole from its start
        if full:
            by_first.setdefault(ids[0], []).append((row, ids[:full]))
    groups = []
    for members in by_first.values():
        lead = max((ids for _, ids in members), key=len)
        agree = [next((i for i in range(len(ids)) if ids[i] != lead[i]), len(ids)) for _, ids in members]
        blocks = max(set(agree), key=lambda n: ((sum(a >= n for a in agree) - 1) * n, n))
        rows = [row for (row, _), a in zip(members, agree) if a >= blocks]
        if len(rows) > 1:
            groups.append((rows, blocks))
    return groups


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

