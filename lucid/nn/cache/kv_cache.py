"""``KVCache``: a cache that is a list of key/value layers; it checks arguments and delegates."""
from __future__ import annotations

from typing import Callable, Sequence

from .arguments import check_int, check_layer_idx, parse_batch_indices, repeat_indices
from .base import Cache, commit_all
from .cache_layer import CacheLayer, as_arrays, check_batch


class KVCache(Cache):
    """Base of the key/value caches: ``layers``, a list of :class:`~lucid.nn.CacheLayer`.

    Each layer owns its storage and policy; the cache checks arguments, keeps the batch size
    the same across layers, and delegates. With ``layers`` given the cache has exactly those
    layers; without, layers appear on first write (from :meth:`new_layer`).

    Notes
    -----
    * ``key``/``value`` have shape ``(B, ..., T, D)``: batch first, sequence on axis -2, head
      dimension last (the value head size may differ).
    * ``update`` and ``get`` return **views** of the cache's storage: no copy, valid until the
      next call that changes the cache.
    * A call that raises leaves the cache exactly as it was.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache: nn.KVCache = nn.DynamicKVCache()
    >>> k, v = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
    >>> k.shape, cache.get_seq_length(0)
    ((1, 2, 3, 4), 3)
    """

    def __init__(self, layers: Sequence[CacheLayer] | None = None) -> None:
        if type(self) is KVCache:
            raise TypeError("KVCache is the abstract interface; instantiate DynamicKVCache, StaticKVCache, "
                            "SlidingWindowKVCache, QuantizedKVCache or HybridKVCache")
        self.layers: list[CacheLayer] = [] if layers is None else list(layers)
        self._fixed = None if layers is None else len(self.layers)

    def arguments(self) -> dict:
        """The constructor's arguments (what a saved file records to rebuild the cache); none here.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().arguments()
        {}
        """
        return {}

    @classmethod
    def from_layers(cls, arguments: dict, layers: list) -> "KVCache":
        """A cache built from its constructor's ``arguments`` holding ``layers``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> cache = nn.DynamicKVCache.from_layers({}, [nn.DynamicLayer(), nn.DynamicLayer()])
        >>> len(cache.layers)
        2
        """
        cache = cls(**arguments)
        if cache._fixed is not None and len(layers) != cache._fixed:
            raise ValueError(f"{cls.__name__} with these arguments has {cache._fixed} layers, got {len(layers)}")
        cache.layers = list(layers)
        return cache

    def new_layer(self) -> CacheLayer:
        """The layer a growing cache adds for a new ``layer_idx`` (fixed-size caches never call it).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().new_layer()
        DynamicLayer(length=0, capacity=0, written=False)
        """
        raise NotImplementedError(f"{type(self).__name__} has a fixed list of layers")

    # -- reading ---------------------------------------------------------
    def _layer(self, layer_idx) -> CacheLayer | None:
        layer_idx = check_layer_idx(layer_idx, self._fixed)
        return self.layers[layer_idx] if layer_idx < len(self.layers) else None

    def get(self, layer_idx: int):
        """``(key, value)`` views of ``layer_idx``, shape ``(..., length, D)``, or ``None`` if never written.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
        >>> cache.get(0)[1].shape, cache.get(1) is None
        ((1, 2, 3, 4), True)
        """
        layer = self._layer(layer_idx)
        return None if layer is None else layer.get()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions ``layer_idx`` holds (0 if never written).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get_seq_length(3)
        0
        """
        layer = self._layer(layer_idx)
        return 0 if layer is None or not layer.written else layer.length

    def key_positions(self, layer_idx: int, new_tokens: int = 1):
        """Absolute positions of the keys ``layer_idx`` returned from its last ``update`` of
        ``new_tokens`` tokens (``new_tokens=1``: also of what ``get`` returns), as an Int64
        tensor on the layer's backend; ``None`` for a layer never written.

        Layers that keep every position answer ``0 .. length - 1``; a sliding window answers
        its sinks and recent positions. Models build attention masks from it.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.SlidingWindowKVCache(window=2, sink_tokens=1)
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> cache.key_positions(0, new_tokens=5).tolist(), cache.key_positions(0).tolist()
        ([0, 1, 2, 3, 4], [0, 3, 4])
        """
        layer = self._layer(layer_idx)
        if layer is None or not layer.written:
            return None
        return layer.key_positions(check_int(new_tokens, "new_tokens", minimum=1))

    def batch_size(self) -> int | None:
        """Batch rows of the written layers, or ``None`` when none is written.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(3, 1, 1, 4), lucid.randn(3, 1, 1, 4), 2)
        >>> cache.batch_size()
        3
        """
        return next((layer.batch_size for layer in self.layers if layer.written), None)

    def nbytes(self) -> int:
        """Bytes of storage the cache holds (allocated capacity and kept buffers, not just live tokens).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.StaticKVCache(max_cache_len=8, num_layers=2)
        >>> _ = cache.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4), 0)
        >>> cache.nbytes()  # one layer allocated: 8 positions x (4 + 4) float32 values
        256
        """
        return sum(layer.nbytes() for layer in self.layers)

    # -- writing ---------------------------------------------------------
    def update(self, key, value, layer_idx: int, cache_position=None):
        """Write ``key``/``value`` into ``layer_idx``; return the ``(key, value)`` to attend to.

        Parameters
        ----------
        key, value : Tensor or backend array, shape ``(B, ..., T, D)``
            New tokens. The first write fixes the layer's dtype, device and every axis but
            the sequence axis.
        layer_idx : int
            Non-negative layer index.
        cache_position : None, int, list, range or integer array/Tensor, optional
            ``None`` appends; a 0-D position writes one token there; a 1-D ``(T,)`` value
            gives the slots for every row; a 2-D ``(B, T)`` value gives them row by row. Gaps
            read as zeros; the length becomes ``max(length, max(position) + 1)``. Positions
            that are exactly the next ones take the append path.

        Returns
        -------
        (Tensor, Tensor)
            The keys and values to attend to. Dynamic and static layers return views of
            everything they hold (as ``get`` would); a sliding window returns what the new
            queries may see (``key_positions`` tells their positions); a quantized layer
            returns new full-precision arrays.

        Raises
        ------
        TypeError
            ``key``/``value`` not arrays, an unsupported dtype, a non-integer
            ``cache_position`` or ``layer_idx``.
        ValueError
            Shapes, dtypes or devices that do not fit the layer, bad positions, a batch
            size that differs from the cache's, or (static cache) a write past ``max_cache_len``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), 0, cache_position=3)
        >>> cache.get_seq_length(0)
        4
        """
        if type(layer_idx) is int and layer_idx >= 0:
            try:
                layer = self.layers[layer_idx]
            except IndexError:
                pass
            else:
                if layer.written:  # the layer checks the rest (and has a fast path for decode steps)
                    return layer.update(key, value, cache_position)
        return self._update_checked(key, value, layer_idx, cache_position)

    def _update_checked(self, key, value, layer_idx, cache_position):
        layer_idx = check_layer_idx(layer_idx, self._fixed)
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        if layer is None or not layer.written:
            k, _ = as_arrays(key, value)
            batch = self.batch_size()
            if batch is not None and k.ndim >= 3:
                check_batch(batch, k.shape[0])
        if layer is None:
            layer = self.new_layer()
            out = layer.update(key, value, cache_position)
            self.layers.extend(self.new_layer() for _ in range(layer_idx - len(self.layers)))
            self.layers.append(layer)
            return out
        return layer.update(key, value, cache_position)

    # -- batch operations, crop and reset ---------------------------------
    def _written(self) -> list[CacheLayer]:
        return [layer for layer in self.layers if layer.written]

    def _check_batch_fits(self, new_batch: int, argument: str) -> None:
        """A ``ValueError`` naming ``argument`` when a batch of ``new_batch`` rows could never fit."""
        written = self._written()
        try:
            needed = sum(layer.nbytes_for_batch(new_batch) for layer in written)
        except ValueError as exc:  # a layer that can never hold that batch
            raise ValueError(f"{argument}: {exc}") from None
        total = written[0].backend.total_memory()
        if needed > total:
            raise ValueError(
                f"{argument}: a batch of {new_batch} rows would need {needed / 2**30:,.1f} GiB, more than "
                f"the {total / 2**30:,.1f} GiB of memory on this {written[0].backend.device}"
            )

    # The batch operations and crop prepare every written layer, then commit them all.
    def prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        rows = parse_batch_indices(indices, name, self.batch_size())
        if self.batch_size() is None:
            return commit_all([])
        self._check_batch_fits(int(rows.shape[0]), f"{name} of length {rows.shape[0]}")
        return commit_all([layer.prepare_select(rows) for layer in self._written()])

    def prepare_repeat(self, repeats: int) -> Callable[[], None]:
        repeats = check_int(repeats, "repeats", minimum=1)
        batch = self.batch_size()
        if batch is None:
            return commit_all([])
        self._check_batch_fits(batch * repeats, f"repeats={repeats}")
        rows = repeat_indices(repeats, batch)
        return commit_all([layer.prepare_select(rows) for layer in self._written()])

    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        max_length = check_int(max_length, "max_length")
        return commit_all([layer.prepare_crop(max_length) for layer in self._written()])

    def prepare_trim(self, n: int) -> Callable[[], None]:
        n = check_int(n, "n")
        if n and not self._written():
            raise ValueError(f"trim(n={n}): the cache holds no positions; check can_trim(n) first")
        for index, layer in enumerate(self.layers):
            if layer.written and n > layer.trimmable():
                raise ValueError(f"trim(n={n}): layer {index} ({layer!r}) can drop at most its last "
                                 f"{layer.trimmable()} positions; check can_trim(n) first")
        return commit_all([layer.prepare_trim(n) for layer in self._written()])

    def reset(self) -> None:
        # Each layer's policy decides what it keeps (a static layer keeps its buffers).
        for layer in self.layers:
            layer.reset()

    def __repr__(self) -> str:
        lengths = [layer.length if layer.written else 0 for layer in self.layers]
        return f"{type(self).__name__}(layers={len(self.layers)}, lengths={lengths})"
