"""``SlidingWindowKVCache``: every layer a sliding window, appearing on first write."""
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
        super().__init__(prototype=SlidingWindowLayer(window, sink_tokens))

    @property
    def window(self) -> int:
        """Positions each layer keeps.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8).window
        8
        """
        return self.prototype.window

    @property
    def sink_tokens(self) -> int:
        """First positions each layer keeps forever.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8, sink_tokens=2).sink_tokens
        2
        """
        return self.prototype.sink_tokens

    def get_max_cache_shape(self) -> int:
        """Positions a layer keeps between updates: ``sink_tokens + window``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowKVCache(8, sink_tokens=2).get_max_cache_shape()
        10
        """
        return self.sink_tokens + self.window
