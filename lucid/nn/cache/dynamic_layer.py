"""``DynamicLayer``: a layer whose buffers grow by half as tokens arrive."""
from __future__ import annotations

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

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.DynamicLayer()
    >>> _ = layer.update(lucid.randn(1, 8, 1000, 64), lucid.randn(1, 8, 1000, 64))
    >>> layer.length, layer.capacity
    (1000, 1500)
    """

    kind = "dynamic"

    def capacity_for(self, needed: int) -> int:
        """``max(256, needed + needed // 2)``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicLayer().capacity_for(10), nn.DynamicLayer().capacity_for(1000)
        (256, 1500)
        """
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
