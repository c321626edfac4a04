"""``StaticKVCache``: a fixed number of layers, each of ``max_cache_len`` positions."""
from ...validation import check_int
from .arguments import MAX_LAYERS
from .kv_cache import KVCache
from .static_layer import StaticLayer


class StaticKVCache(KVCache):
    """A KV cache with fixed storage: ``num_layers`` :class:`~lucid.nn.StaticLayer` of ``max_cache_len``.

    A layer's buffers are allocated at its first write and never reallocated by ``update``;
    a write past ``max_cache_len`` raises ``ValueError`` and changes nothing. ``crop`` keeps
    the capacity; ``reset`` keeps the buffers (``nbytes`` still counts them) for the next
    first write of the same layout.

    Parameters
    ----------
    max_cache_len : int
        Positions per layer (>= 1).
    num_layers : int
        Number of layers, 1 to 65536; ``layer_idx`` must be below it.
    max_batch_size : int, optional
        Batch rows each layer allocates (>= 1), for beam search: the batch may then grow
        and shrink up to this size (``batch_repeat_interleave(num_beams)``, ``reorder_cache``)
        without allocating, moving only live tokens. Unset, the first write fixes the batch
        and a batch operation that changes it allocates new buffers.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.StaticKVCache(max_cache_len=16, num_layers=2)
    >>> k, v = cache.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64), layer_idx=1)
    >>> cache.get_seq_length(1), cache.get_max_cache_shape()
    (4, 16)
    >>> beams = nn.StaticKVCache(max_cache_len=16, num_layers=2, max_batch_size=4)
    >>> _ = beams.update(lucid.randn(1, 8, 4, 64), lucid.randn(1, 8, 4, 64), layer_idx=0)
    >>> beams.batch_repeat_interleave(4)  # in place: the rows were allocated at the first write
    >>> beams.batch_size()
    4
    """

    def __init__(self, max_cache_len: int, num_layers: int, *, max_batch_size: int | None = None):
        first = StaticLayer(max_cache_len, max_batch_size)  # checks both
        num_layers = check_int(num_layers, "num_layers", minimum=1, maximum=MAX_LAYERS)
        super().__init__([first] + [first.fresh() for _ in range(num_layers - 1)])

    @property
    def max_cache_len(self) -> int:
        """Positions each layer holds.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(max_cache_len=128, num_layers=2).max_cache_len
        128
        """
        return self.layers[0].max_cache_len

    @property
    def max_batch_size(self) -> int | None:
        """Batch rows each layer allocates, or ``None`` when the first write fixes the batch.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(16, 2, max_batch_size=4).max_batch_size
        4
        """
        return self.layers[0].max_batch_size

    @property
    def num_layers(self) -> int:
        """The number of layers.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(16, 2).num_layers
        2
        """
        return len(self.layers)

    def arguments(self) -> dict:
        """The constructor's arguments.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(16, 2).arguments()
        {'num_layers': 2, 'max_cache_len': 16}
        """
        return {"num_layers": self.num_layers, **self.layers[0].arguments()}

    def get_max_cache_shape(self) -> int:
        """``max_cache_len``: the positions each layer can hold.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticKVCache(max_cache_len=128, num_layers=2).get_max_cache_shape()
        128
        """
        return self.max_cache_len
