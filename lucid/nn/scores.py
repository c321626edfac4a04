"""Helpers for attention scores shared by the attention paths: scores in base 2 (queries
scaled by ``LOG2_E`` give scores whose softmax numerator is ``2 ** s``, the faster exponential
of CuPy and of NumPy on AVX-512 CPUs, instead of ``e ** s``; the backend computes it through
``exp`` where that is the faster one) and scores laid out in C order."""
from __future__ import annotations

import math

#: ``1 / ln 2``: queries scaled by it give scores in base 2 (``exp(s) == 2 ** (s / ln 2)``).
LOG2_E = 1.0 / math.log(2.0)


def c_order(xp, x):
    """``x`` copied into a new C-contiguous array (a transposed view, or what ``where()`` and
    arithmetic make of one, keeps its strided layout otherwise; a score row then reduces in
    order).

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.scores import c_order
    >>> xp = lucid.get_backend().xp
    >>> c_order(xp, xp.matrix_transpose(xp.reshape(xp.arange(6), (2, 3)))).tolist()
    [[0, 3], [1, 4], [2, 5]]
    """
    out = xp.empty(tuple(x.shape), dtype=x.dtype)
    out[...] = x
    return out
