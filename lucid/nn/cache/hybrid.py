"""``HybridKVCache``: one layer object per model layer, of any kind."""
from typing import Sequence

from .cache_layer import CacheLayer
from .kv_cache import KVCache


class HybridKVCache(KVCache):
    """A KV cache built from the layers given: one per model layer, in order, any mix.

    Models such as Mistral, Gemma 2/3 and Qwen interleave sliding-window and full-attention
    layers; give each model layer the layer object that matches its attention. (The same as
    ``KVCache(layers)``, under the name users of other libraries look for.)

    Parameters
    ----------
    layers : sequence of CacheLayer
        One new layer object per model layer (the same object twice would share storage:
        ``ValueError``). ``layer_idx`` must be below ``len(layers)``.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.HybridKVCache([nn.SlidingWindowLayer(4), nn.DynamicLayer()])
    >>> for layer in range(2):
    ...     _ = cache.update(lucid.randn(1, 2, 10, 8), lucid.randn(1, 2, 10, 8), layer)
    >>> cache.get(0)[0].shape, cache.get(1)[0].shape, cache.get_seq_length(0)
    ((1, 2, 4, 8), (1, 2, 10, 8), 10)
    """

    def __init__(self, layers: Sequence[CacheLayer]):
        super().__init__(layers)
