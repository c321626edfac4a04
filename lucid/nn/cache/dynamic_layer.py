"""``DynamicLayer``: a layer whose buffers grow by half as tokens arrive."""
from __future__ import annotations

from ...validation import check_int
from .kv_layer import KVLayer

#: Every dynamic layer has room for at least this many positions.
MIN_CAPACITY = 256


class DynamicLayer(KVLayer):
    """A layer without a length limit.

    Policy: when ``needed`` positions do not fit, the buffers move to
    ``max(256, needed + needed // 2)`` positions. So appending a token costs amortized
    O(token) (growth is geometric), a prefill leaves half its length as headroom (the decode
    steps after it write in place), and past 256 positions the layer never holds more than
    1.5x its live positions. ``crop`` moves to that size when the buffers are larger;
    ``reset`` releases them.

    A caller that knows how long the sequence will get (``generate``: the prompt plus
    ``max_new_tokens``) passes it as ``reserve``: while ``needed <= reserve`` the buffers are
    exactly ``reserve`` positions, so a whole generation allocates once and holds no headroom
    past its end; beyond it the layer grows by half as usual.

    Parameters
    ----------
    reserve : int
        Positions to allocate at once while they suffice (>= 0; 0: none).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.DynamicLayer()
    >>> _ = layer.update(lucid.randn(1, 8, 1000, 64), lucid.randn(1, 8, 1000, 64))
    >>> layer.length, layer.capacity
    (1000, 1500)
    >>> reserved = nn.DynamicLayer(reserve=1040)
    >>> _ = reserved.update(lucid.randn(1, 8, 1000, 64), lucid.randn(1, 8, 1000, 64))
    >>> reserved.capacity
    1040
    """

    kind = "dynamic"

    def __init__(self, reserve: int = 0) -> None:
        self.reserve = check_int(reserve, "reserve")
        super().__init__()

    def capacity_for(self, needed: int) -> int:
        """``reserve`` while ``needed`` fits in it, else ``max(256, needed + needed // 2)``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicLayer().capacity_for(10), nn.DynamicLayer().capacity_for(1000)
        (256, 1500)
        >>> nn.DynamicLayer(reserve=1040).capacity_for(1000), nn.DynamicLayer(reserve=1040).capacity_for(1041)
        (1040, 1561)
        """
        if needed <= self.reserve:
            return self.reserve
        return max(MIN_CAPACITY, needed + needed // 2)

    def shrunk_capacity(self, length: int) -> int:
        """What ``crop`` to ``length`` positions keeps room for: ``capacity_for(length)``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicLayer().shrunk_capacity(100)
        256
        """
        return self.capacity_for(length)

    def arguments(self) -> dict:
        """``{"reserve": ...}`` when one was given, else ``{}``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicLayer().arguments(), nn.DynamicLayer(reserve=64).arguments()
        ({}, {'reserve': 64})
        """
        return {"reserve": self.reserve} if self.reserve else {}
