"""``StaticKVCache``: a fixed number of layers, each preallocated to ``max_cache_len``."""
from .base import KVCache
from .host_checks import check_int


class StaticKVCache(KVCache):
    """A KV cache with fixed storage: ``max_cache_len`` positions for each of ``num_layers`` layers.

    A layer's buffer is allocated at its first write and never reallocated by
    ``update``; a write that would go past ``max_cache_len`` raises
    ``ValueError`` and changes nothing. ``crop`` keeps the capacity; ``reset``
    forgets the contents but keeps the buffers, and the next first write of a
    layer reuses them when its shapes, dtype and device are the same.

    Parameters
    ----------
    max_cache_len : int
        Positions per layer (>= 1).
    num_layers : int
        Number of layers (>= 1); ``layer_idx`` must be below it.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.StaticKVCache(max_cache_len=16, num_layers=2)
    >>> k, v = cache.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64), layer_idx=1)
    >>> cache.get_seq_length(1), cache.get_max_cache_shape()
    (4, 16)
    """

    def __init__(self, max_cache_len: int, num_layers: int):
        super().__init__()
        self.max_cache_len = check_int(max_cache_len, "max_cache_len", minimum=1)
        self.num_layers = check_int(num_layers, "num_layers", minimum=1)
        self._max_capacity = self.max_cache_len
        self.layers = [None] * self.num_layers
        self._spare = [None] * self.num_layers  # buffers kept by reset() for reuse

    def get_max_cache_shape(self) -> int:
        """``max_cache_len``: the positions each layer can hold.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(max_cache_len=128, num_layers=2).get_max_cache_shape()
        128
        """
        return self.max_cache_len

    def _check_layer_idx(self, layer_idx) -> int:
        layer_idx = super()._check_layer_idx(layer_idx)
        if layer_idx >= self.num_layers:
            raise ValueError(f"layer_idx must be < num_layers={self.num_layers}, got {layer_idx}")
        return layer_idx

    def reset(self) -> None:
        """Make every layer never-written, keeping its buffers for the next first write.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.StaticKVCache(max_cache_len=8, num_layers=1)
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
        >>> cache.reset(); cache.get(0) is None, cache.get_max_cache_shape()
        (True, 8)
        """
        self._spare = [live or spare for live, spare in zip(self.layers, self._spare)]
        super().reset()

    def _new_store(self, k, v, layer_idx, needed):
        spare = self._spare[layer_idx]
        if spare is None or not spare.fits(k, v):
            return super()._new_store(k, v, layer_idx, needed)
        self._check_batch(k)
        spare._reserve(needed)  # raises past max_cache_len, before anything changes
        spare.length = 0
        self._spare[layer_idx] = None
        return spare
