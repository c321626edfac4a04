"""``PagedTensor``: a paged cache's keys or values as the blocks they live in, laid out in order only when read."""
from __future__ import annotations

import math

from .lazy_tensor import LazyTensor

#: Bytes of blocks one ``take`` copies: small enough to stay in a core's cache.
GATHER_BYTES = 1 << 19


class PagedTensor(LazyTensor):
    """Keys or values of the sequences of a :class:`~lucid.nn.PagedKVCache` batch, as the
    blocks they live in: ``pool`` is the layer's ``(num_blocks, ..., block_size, D)`` pool (the
    middle axes: the heads) and ``table`` ``(B, C)`` the blocks of each row, in order; row
    ``i``'s first ``lengths[i]`` positions are in its first blocks (a shorter row's table is
    padded with block 0).

    The tensor it stands for is ``(B, ..., max(lengths), D)``: each row's positions in order,
    zeros past its own length. Gathering it copies every position out of the pool; that is
    done the first time ``array`` is read.
    :func:`~lucid.nn.functional.scaled_dot_product_attention` reads the blocks instead, one
    row and head at a time (:meth:`head_positions`), for a decode step whose mask hides every
    row's positions past its length (what a model's mask does). Like every tensor a cache
    returns, it reads the cache's storage and is valid until the next call that changes the
    cache.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.PagedKVCache(8, block_size=2)
    >>> keys, _ = cache.update(lucid.arange(6.0).reshape(2, 1, 3, 1), lucid.zeros(2, 1, 3, 1), 0)
    >>> keys.table.tolist(), keys.lengths, keys.shape
    ([[0, 1], [2, 3]], (3, 3), (2, 1, 3, 1))
    >>> keys.numpy().ravel().tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """

    __slots__ = ("pool", "table", "lengths")

    def __init__(self, pool, table, lengths: tuple, backend):
        self.pool, self.table, self.lengths, self.backend = pool, table, tuple(lengths), backend

    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each axis (read without gathering)."""
        shape = tuple(self.pool.shape)
        return (len(self.lengths),) + shape[1:-2] + (max(self.lengths), shape[-1])

    @property
    def _stored_dtype(self):
        return self.pool.dtype

    def blocks(self, start: int, stop: int):
        """Copies of the blocks of rows ``[start, stop)``: ``(rows, C, ..., block_size, D)``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(8, block_size=2)
        >>> keys, _ = cache.update(lucid.randn(2, 3, 5, 4), lucid.randn(2, 3, 5, 4), 0)
        >>> keys.blocks(1, 2).shape
        (1, 3, 3, 2, 4)
        """
        xp, part = self.backend.xp, self.table[start:stop, ...]
        taken = xp.take(self.pool, xp.reshape(part, (-1,)), axis=0)
        return xp.reshape(taken, tuple(part.shape) + tuple(self.pool.shape[1:]))

    def head_positions(self, row: int, head: int, first: int, last: int):
        """A copy of the positions of row ``row``'s blocks ``[first, last)`` for head ``head``,
        in order: ``((last - first) * block_size, D)``, for a pool ``(num_blocks, heads,
        block_size, D)``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(8, block_size=2)
        >>> keys, _ = cache.update(lucid.randn(2, 3, 5, 4), lucid.randn(2, 3, 5, 4), 0)
        >>> bool((keys.head_positions(1, 2, 0, 3)[:5] == keys.numpy()[1, 2]).all())
        True
        """
        xp = self.backend.xp
        taken = self.backend.take_rows(self.pool[:, head, ...], xp.reshape(self.table[row, first:last], (-1,)))
        return xp.reshape(taken, (-1, self.pool.shape[-1]))

    def rows_per_take(self) -> int:
        """How many rows' blocks one :meth:`blocks` call should take so that they stay in the
        CPU's cache while they are used: about ``GATHER_BYTES``, at least one row.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(8, block_size=2)
        >>> keys, _ = cache.update(lucid.randn(2, 3, 5, 4), lucid.randn(2, 3, 5, 4), 0)
        >>> keys.rows_per_take()  # 3 blocks of 3 x 2 x 4 float32 values per row
        1820
        """
        row_bytes = self.table.shape[1] * math.prod(self.pool.shape[1:]) * self.dtype.itemsize
        return max(1, GATHER_BYTES // max(1, row_bytes))

    def _build(self):
        # A few rows per take, laid out in order while they are still in the CPU's cache.
        xp, pool = self.backend.xp, self.pool
        rows, count = self.table.shape
        heads, (size, dim) = tuple(pool.shape[1:-2]), pool.shape[-2:]
        axes = len(heads) + 4
        step = self.rows_per_take()
        whole = xp.empty((rows, *heads, count * size, dim), dtype=pool.dtype)
        by_block = xp.reshape(whole, (rows, *heads, count, size, dim))  # a view
        for first in range(0, rows, step):
            last = min(first + step, rows)
            by_block[first:last, ...] = xp.permute_dims(self.blocks(first, last),
                                                        (0, *range(2, axes - 2), 1, axes - 2, axes - 1))
        longest = max(self.lengths)
        out = whole[..., :longest, :]
        for row, length in enumerate(self.lengths):  # zeros past each row's own positions
            if length < longest:
                out[row, ..., length:, :] = 0
        return out
