"""``QuantizedKVCache``: every layer quantized, appearing on first write."""
from .kv_cache import KVCache
from .quantized_layer import QuantizedLayer


class QuantizedKVCache(KVCache):
    """A KV cache whose layers are all :class:`~lucid.nn.QuantizedLayer`.

    Old positions are stored as ``bits``-bit codes, keys per channel over groups of
    ``group_size`` positions and values per position over groups of ``group_size`` head-dimension
    values; the last ``residual_length`` positions (and up to ``group_size - 1`` more) and the
    first ``sink_tokens`` in full precision. ``update``/``get`` return snapshots whose full-precision arrays (new ones, not
    views) are built when read; attention reads the codes. The settings are the prototype
    layer's (``cache.prototype.bits`` and so on).

    Parameters
    ----------
    bits : {4, 8}
    group_size : int
    residual_length : int
    sink_tokens : int

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128)
    >>> k = lucid.randn(1, 8, 4096, 64).astype(lucid.Float16)
    >>> _ = cache.update(k, k, 0)
    >>> dense = nn.DynamicKVCache(); _ = dense.update(k, k, 0)
    >>> round(cache.nbytes() / dense.nbytes(), 2), cache.prototype.bits
    (0.21, 4)
    """

    def __init__(self, bits: int = 4, group_size: int = 64, residual_length: int = 128, sink_tokens: int = 0):
        super().__init__(prototype=QuantizedLayer(bits, group_size, residual_length, sink_tokens))
