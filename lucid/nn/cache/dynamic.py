"""``DynamicKVCache``: layers that appear on first write and grow as tokens arrive."""
from .dynamic_layer import DynamicLayer
from .kv_cache import KVCache


class DynamicKVCache(KVCache):
    """A KV cache without a length limit: every layer a :class:`~lucid.nn.DynamicLayer`.

    Appending a token costs amortized O(token); past 256 positions a layer holds at most
    1.5x its live positions (or ``reserve``); ``crop`` hands memory back and ``reset`` drops
    it. Any non-negative ``layer_idx`` (below 65536) is accepted; layers never written answer
    ``None`` / 0.

    Parameters
    ----------
    reserve : int
        Positions each layer allocates at once while they suffice (see
        :class:`~lucid.nn.DynamicLayer`): the length a generation will reach, when it is known.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.DynamicKVCache()
    >>> for step in range(3):
    ...     k, v = cache.update(lucid.randn(1, 8, 1, 64), lucid.randn(1, 8, 1, 64), layer_idx=0)
    >>> k.shape, cache.get_seq_length(0)
    ((1, 8, 3, 64), 3)
    """

    def __init__(self, reserve: int = 0) -> None:
        super().__init__(prototype=DynamicLayer(reserve))
