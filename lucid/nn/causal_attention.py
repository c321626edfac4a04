"""Causal attention of a prefill in blocks of queries: the path a prompt takes through a model.

Query ``i`` of ``Lq`` sees keys ``j <= i + Lk - Lq``: the queries are the last ``Lq``
positions of the keys, in order. Knowing that, nothing needs to be read from a mask. A block
of ``QUERY_ROWS`` queries reads the keys up to its last query's and masks only the square
where its queries meet their own keys (a constant triangle); every key before it is visible
to every query of the block. Each block is a handful of whole-array operations: one product
for the scores (keys first, ``(B, Hkv, keys, G, queries)``: long in the keys, the shape BLAS
runs fastest), the row maxima, the exponential in place (base 2), the sums, one product for
the weighted values. Every row sees its own key, so no row is empty and no check for one is
needed.
"""
from __future__ import annotations

import math

from .scores import LOG2_E

#: Queries per block. Blocks this short keep the computed part of the diagonal small (6% of
#: the scores a 1,024-token prefill computes are masked at 64, 11% at 128) and give the
#: cores many blocks to share: the 30 layers' attention of SmolLM2's 1,024-token prefill ran
#: 1.04x (one thread) and 1.37x (two) faster than in the mask-reading blocks
#: (``benchmarks/prefill_attention.py``). On SmolLM2-shaped random data, 64 queries were the
#: fastest of 64, 128 and 256 at 128 to 1,024 tokens on one thread, and within 7% of the best on two.
QUERY_ROWS = 64
#: Scores one block may hold at most (4 MB of float32): beyond this the scores of a block no
#: longer stay in the CPU's cache, and the key-tiled path of ``scaled_dot_product_attention``
#: is faster (prompts of a few thousand tokens).
BLOCK_SCORES = 2**20


def fits(batch: int, kv_heads: int, group: int, k_len: int) -> bool:
    """Whether a causal prefill over ``k_len`` keys goes through :func:`attend_causal`: one
    batch row's block of ``QUERY_ROWS`` queries against every key fits ``BLOCK_SCORES``.

    Examples
    --------
    >>> from lucid.nn.causal_attention import fits
    >>> fits(1, 3, 3, 1024), fits(1, 3, 3, 8192)
    (True, False)
    """
    return kv_heads * group * QUERY_ROWS * k_len <= BLOCK_SCORES


def attend_causal(backend, q, k, v, scale: float):
    """Causal attention ``softmax(q k^T * scale) v`` of queries ``q`` ``(B, Hq, Lq, D)`` that
    are the last ``Lq`` of the keys ``k`` ``(B, Hkv, Lk, D)`` (values ``v`` ``(B, Hkv, Lk,
    Dv)``), with ``Hq`` a multiple of ``Hkv``: ``(B, Hq, Lq, Dv)``.

    The blocks are independent: the backend may run them at once (NumPy: one per core), the
    latest queries first (they see the most keys), so the cores finish together.

    Examples
    --------
    >>> import numpy as np, lucid
    >>> from lucid.nn.causal_attention import attend_causal
    >>> backend = lucid.get_backend()
    >>> q = np.ones((1, 2, 3, 4), dtype=np.float32)
    >>> v = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    >>> attend_causal(backend, q, np.ones((1, 1, 3, 4), dtype=np.float32), v, 0.5)[0, 1].tolist()
    [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0], [4.0, 5.0, 6.0, 7.0]]
    """
    xp = backend.xp
    batch, q_heads, q_len, dim = q.shape
    kv_heads, k_len, dv = k.shape[1], k.shape[2], v.shape[-1]
    group = q_heads // kv_heads
    offset = k_len - q_len
    rows = min(q_len, QUERY_ROWS)
    batch_rows = max(1, min(batch, BLOCK_SCORES // (kv_heads * group * rows * k_len)))
    queries = xp.reshape(q, (batch, kv_heads, group, q_len, dim))
    factor = xp.asarray(scale * LOG2_E, dtype=q.dtype)
    # The diagonal square, keys first: key jj of a block's own keys is visible to its query
    # ii when jj <= ii (added as 0 or -inf, broadcast over the heads of a group).
    index = xp.arange(rows)
    zero = xp.zeros((), dtype=q.dtype)
    diagonal = xp.reshape(xp.where(index[:, None] <= index[None, :], zero, zero - math.inf), (rows, 1, rows))
    out = xp.empty((batch, kv_heads, group, q_len, dv), dtype=q.dtype)

    def block(task):
        start, b0 = task
        stop, b1 = min(q_len, start + rows), min(batch, b0 + batch_rows)
        n, seen, own = stop - start, stop + offset, start + offset
        bq = xp.reshape(queries[b0:b1, :, :, start:stop, :] * factor, (b1 - b0, kv_heads, group * n, dim))
        scores = xp.reshape(k[b0:b1, :, :seen, :] @ xp.matrix_transpose(bq), (b1 - b0, kv_heads, seen, group, n))
        scores[:, :, own:seen, :, :] += diagonal[:n, :, :n]
        weights = backend.exp2_shifted(scores, xp.max(scores, axis=2, keepdims=True))
        total = xp.reshape(xp.sum(weights, axis=2), (b1 - b0, kv_heads, group * n, 1))
        weights = xp.reshape(weights, (b1 - b0, kv_heads, seen, group * n))
        result = (xp.matrix_transpose(weights) @ v[b0:b1, :, :seen, :]) / total
        out[b0:b1, :, :, start:stop, :] = xp.reshape(result, (b1 - b0, kv_heads, group, n, dv))

    backend.map_blocks(block, [(start, b0) for start in reversed(range(0, q_len, rows))
                               for b0 in range(0, batch, batch_rows)])
    return xp.reshape(out, (batch, q_heads, q_len, dv))
