"""``QuantizedKVCache``: every layer quantized, appearing on first write."""
from .kv_cache import KVCache
from .quantized_layer import QuantizedLayer


class QuantizedKVCache(KVCache):
    """A KV cache whose layers are all :class:`~lucid.nn.QuantizedLayer`.

    Old positions are stored as ``bits``-bit codes per group of ``group_size`` head-dimension
    values, the last ``residual_length`` in full precision. ``update``/``get`` return
    full-precision arrays (new ones, not views).

    Parameters
    ----------
    bits : {4, 8}
    group_size : int
    residual_length : int

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128)
    >>> k = lucid.randn(1, 8, 4096, 64).astype(lucid.Float16)
    >>> _ = cache.update(k, k, 0)
    >>> dense = nn.DynamicKVCache(); _ = dense.update(k, k, 0)
    >>> round(cache.nbytes() / dense.nbytes(), 2)
    0.22
    """

    def __init__(self, bits: int = 4, group_size: int = 64, residual_length: int = 128):
        self._template = QuantizedLayer(bits, group_size, residual_length)  # checks the arguments
        self.bits, self.group_size, self.residual_length = bits, group_size, residual_length
        super().__init__()

    def new_layer(self) -> QuantizedLayer:
        """A fresh :class:`~lucid.nn.QuantizedLayer` with this cache's settings.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.QuantizedKVCache(bits=8).new_layer()
        QuantizedLayer(bits=8, group_size=64, residual_length=128, length=0)
        """
        return QuantizedLayer(self.bits, self.group_size, self.residual_length)

    def arguments(self) -> dict:
        """The constructor's arguments.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.QuantizedKVCache(bits=8).arguments()
        {'bits': 8, 'group_size': 64, 'residual_length': 128}
        """
        return {"bits": self.bits, "group_size": self.group_size, "residual_length": self.residual_length}
