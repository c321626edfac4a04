"""``StaticLayer``: a layer with a fixed capacity, allocated once."""
from __future__ import annotations

from ...validation import check_int
from .kv_layer import KVLayer


class StaticLayer(KVLayer):
    """A layer of ``max_cache_len`` positions, allocated at its first write.

    ``update`` never reallocates: it writes in place, and a write past ``max_cache_len``
    raises ``ValueError`` and changes nothing. ``crop`` keeps the capacity. ``reset`` forgets
    the contents but keeps the buffers (still counted by ``nbytes``); the next first write
    reuses them when its shapes, dtype and device are the same, and releases them for new ones
    otherwise.

    With ``max_batch_size`` the layer allocates that many batch rows at its first write, so
    that beam search can grow the batch without allocating: ``batch_repeat_interleave``,
    ``batch_select_indices`` and ``reorder_cache`` then move live tokens inside the buffers,
    ``nbytes`` counts every row, and a batch larger than ``max_batch_size`` raises
    ``ValueError``. Without it the batch is the first write's, and a batch operation that
    changes it allocates new buffers.

    Parameters
    ----------
    max_cache_len : int
        Positions the layer holds (>= 1).
    max_batch_size : int, optional
        Batch rows to allocate (>= 1); the batch may then be any size up to it.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.StaticLayer(max_cache_len=16)
    >>> _ = layer.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64))
    >>> layer.length, layer.capacity
    (4, 16)
    >>> beams = nn.StaticLayer(max_cache_len=16, max_batch_size=4)
    >>> _ = beams.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64))
    >>> beams.prepare_select([0, 0, 0, 0])()  # what batch_repeat_interleave(4) does, in place
    >>> beams.batch_size, beams.nbytes() == 4 * 16 * 8 * (64 + 64) * 4
    (4, True)
    """

    capacity_argument = "max_cache_len"
    kind = "static"

    def __init__(self, max_cache_len: int, max_batch_size: int | None = None):
        self.max_cache_len = check_int(max_cache_len, "max_cache_len", minimum=1)
        self.max_batch_size = None if max_batch_size is None else check_int(max_batch_size, "max_batch_size", minimum=1)
        super().__init__()

    def arguments(self) -> dict:
        """``{"max_cache_len": ...}``, and ``max_batch_size`` when it is set.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).arguments(), nn.StaticLayer(16, max_batch_size=4).arguments()
        ({'max_cache_len': 16}, {'max_cache_len': 16, 'max_batch_size': 4})
        """
        if self.max_batch_size is None:
            return {"max_cache_len": self.max_cache_len}
        return {"max_cache_len": self.max_cache_len, "max_batch_size": self.max_batch_size}

    def rows_for(self, batch: int) -> int:
        """``max_batch_size`` (``ValueError`` if ``batch`` exceeds it), or ``batch`` when unset.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).rows_for(3), nn.StaticLayer(16, max_batch_size=8).rows_for(3)
        (3, 8)
        """
        if self.max_batch_size is None:
            return batch
        if batch > self.max_batch_size:
            raise ValueError(
                f"a batch of {batch} rows does not fit max_batch_size={self.max_batch_size}; "
                "create the cache with a larger max_batch_size"
            )
        return self.max_batch_size

    def capacity_for(self, needed: int) -> int:
        """``max_cache_len``, or a ``ValueError`` when ``needed`` exceeds it.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).capacity_for(3)
        16
        """
        if needed > self.max_cache_len:
            raise ValueError(
                f"this write needs {needed} positions but max_cache_len is {self.max_cache_len}; "
                "create the cache with a larger max_cache_len or crop() it first"
            )
        return self.max_cache_len

    def reset(self) -> None:
        """Forget the contents; keep the buffers for the next first write of the same layout.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.StaticLayer(8)
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> layer.reset(); layer.get() is None, layer.nbytes()
        (True, 128)
        """
        self.written = False  # closes the fast path until the next first write
        self.length = 0

    def __repr__(self) -> str:
        rows = "" if self.max_batch_size is None else f", max_batch_size={self.max_batch_size}"
        return f"StaticLayer(max_cache_len={self.max_cache_len}{rows}, length={self.length}, written={self.written})"
