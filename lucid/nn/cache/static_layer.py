"""``StaticLayer``: a layer with a fixed capacity, allocated once."""
from __future__ import annotations

from .arguments import check_int
from .kv_layer import KVLayer


class StaticLayer(KVLayer):
    """A layer of ``max_cache_len`` positions, allocated at its first write.

    ``update`` never reallocates: it writes in place, and a write past ``max_cache_len``
    raises ``ValueError`` and changes nothing. ``crop`` keeps the capacity. ``reset`` forgets
    the contents but keeps the buffers (still counted by ``nbytes``); the next first write
    reuses them when its shapes, dtype and device are the same, and releases them for new ones
    otherwise.

    Parameters
    ----------
    max_cache_len : int
        Positions the layer holds (>= 1).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.StaticLayer(max_cache_len=16)
    >>> _ = layer.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64))
    >>> layer.length, layer.capacity
    (4, 16)
    """

    capacity_argument = "max_cache_len"
    kind = "static"

    def __init__(self, max_cache_len: int):
        self.max_cache_len = check_int(max_cache_len, "max_cache_len", minimum=1)
        super().__init__()

    def arguments(self) -> dict:
        """``{"max_cache_len": ...}``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).arguments()
        {'max_cache_len': 16}
        """
        return {"max_cache_len": self.max_cache_len}

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
        self.written = False
        self.length = 0
        self._step_k = None  # closes the fast path until the next first write

    def __repr__(self) -> str:
        return f"StaticLayer(max_cache_len={self.max_cache_len}, length={self.length}, written={self.written})"
