"""``HybridKVCache``: one layer object per model layer, of any kind."""
from typing import Sequence

from .cache_layer import CacheLayer
from .kv_cache import KVCache


class HybridKVCache(KVCache):
    """A KV cache built from the layers given: one per model layer, in order, any mix.

    Models such as Mistral, Gemma 2/3 and Qwen interleave sliding-window and full-attention
    layers; give each model layer the layer object that matches its attention.

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
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a sequence of cache layers, got {type(layers).__name__}") from None
        if not layers:
            raise ValueError("layers must hold at least one layer (one per model layer)")
        for i, layer in enumerate(layers):
            if not isinstance(layer, CacheLayer):
                raise TypeError(f"layers[{i}] must be a cache layer such as nn.DynamicLayer(), got {type(layer).__name__}")
        seen = {}
        for i, layer in enumerate(layers):
            if id(layer) in seen:
                raise ValueError(f"layers[{seen[id(layer)]}] and layers[{i}] are the same object; "
                                 "each model layer needs a layer of its own")
            seen[id(layer)] = i
        super().__init__(layers)

    @classmethod
    def from_layers(cls, arguments: dict, layers: list) -> "HybridKVCache":
        """A hybrid cache of ``layers`` (``arguments`` is empty: the layers are the arguments).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.HybridKVCache.from_layers({}, [nn.DynamicLayer()]).layers
        [DynamicLayer(length=0, capacity=0, written=False)]
        """
        return cls(layers)
