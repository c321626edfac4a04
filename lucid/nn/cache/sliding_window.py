"""``SlidingWindowKVCache``: every layer a sliding window, appearing on first write."""
from .arguments import check_int
from .kv_cache import KVCache
from .sliding_window_layer import SlidingWindowLayer


class SlidingWindowKVCache(KVCache):
    """A KV cache whose layers are all :class:`~lucid.nn.SlidingWindowLayer`.

    ``get_seq_length`` is absolute (positions written); what ``update``/``get`` return is the
    sinks plus the recent window, whose absolute positions :meth:`key_positions` gives.
    ``crop`` is a no-op when it would keep every position and a ``ValueError`` otherwise.

    Parameters
    ----------
    window : int
        Positions each layer keeps (>= 1).
    sink_tokens : int
        First positions kept forever (>= 0).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.SlidingWindowKVCache(window=4)
    >>> for t in range(6):
    ...     k, v = cache.update(lucid.randn(1, 2, 1, 8), lucid.randn(1, 2, 1, 8), 0, cache_position=[t])
    >>> k.shape, cache.get_seq_length(0), cache.key_positions(0).tolist()
    ((1, 2, 4, 8), 6, [2, 3, 4, 5])
    """

    def __init__(self, window: int, sink_tokens: int = 0):
        self.window = check_int(window, "window", minimum=1)
        self.sink_tokens = check_int(sink_tokens, "sink_tokens")
        super().__init__()

    def new_layer(self) -> SlidingWindowLayer:
        """A fresh :class:`~lucid.nn.SlidingWindowLayer` with this cache's window and sinks.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8, sink_tokens=2).new_layer()
        SlidingWindowLayer(window=8, sink_tokens=2, length=0)
        """
        return SlidingWindowLayer(self.window, self.sink_tokens)

    def get_max_cache_shape(self) -> int:
        """Positions a layer keeps between updates: ``sink_tokens + window``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8, sink_tokens=2).get_max_cache_shape()
        10
        """
        return self.sink_tokens + self.window

    def arguments(self) -> dict:
        """The constructor's arguments.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8).arguments()
        {'window': 8, 'sink_tokens': 0}
        """
        return {"window": self.window, "sink_tokens": self.sink_tokens}
