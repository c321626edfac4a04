"""``DynamicKVCache``: layers that grow as tokens arrive."""
from .base import KVCache


class DynamicKVCache(KVCache):
    """A KV cache without a length limit; each layer's buffer grows geometrically.

    Appending a token costs amortized O(token): a layer's buffer doubles when
    full, so it holds at most about twice the live tokens; ``crop`` hands the
    memory back once less than half of it is live, and ``reset`` drops it.
    Any non-negative ``layer_idx`` is accepted; layers never written answer
    ``None`` from ``get`` and 0 from ``get_seq_length``.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.DynamicKVCache()
    >>> for step in range(3):
    ...     k, v = cache.update(lucid.randn(2, 8, 1, 64), lucid.randn(2, 8, 1, 64), layer_idx=0)
    >>> k.shape, cache.get_max_cache_shape()
    ((2, 8, 3, 64), None)
    """

    _max_capacity = None
