"""``KVCache``: a cache that is a list of key/value layers; it checks arguments and delegates."""
from __future__ import annotations

from typing import Callable, Sequence

from ...validation import check_int
from .arguments import check_layer_idx, parse_batch_indices, repeat_indices
from .base import Cache, commit_all
from .cache_layer import CacheLayer, as_arrays, check_batch
from .dynamic_layer import DynamicLayer


def _check_layers(layers) -> list:
    """``layers`` as a list of distinct cache layers, or the error that says what is wrong."""
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"layers must be a sequence of cache layers, got {type(layers).__name__}") from None
    if not layers:
        raise ValueError("layers must hold at least one layer (one per model layer)")
    seen = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, CacheLayer):
            raise TypeError(f"layers[{i}] must be a cache layer such as nn.DynamicLayer(), got {type(layer).__name__}")
        if id(layer) in seen:
            raise ValueError(f"layers[{seen[id(layer)]}] and layers[{i}] are the same object; "
                             "each model layer needs a layer of its own")
        seen[id(layer)] = i
    batches = {layer.batch_size for layer in layers if layer.written}
    if len(batches) > 1:
        raise ValueError(f"layers hold batches of {sorted(batches)} rows; every layer of a cache holds the same batch")
    return layers


class KVCache(Cache):
    """A key/value cache: ``layers``, a list of :class:`~lucid.nn.CacheLayer`, one per model layer.

    Each layer owns its storage and policy; the cache checks arguments, keeps the batch size
    the same across layers, and delegates. Built from ``layers``, the cache has exactly those
    (any mix of kinds, as models that interleave sliding-window and full attention need;
    ``layer_idx`` must be below ``len(layers)``). Built from a ``prototype`` layer, layers
    appear on first write, each a :meth:`~lucid.nn.CacheLayer.fresh` copy of it, for any
    ``layer_idx`` below 65536. With neither, the prototype is a :class:`~lucid.nn.DynamicLayer`.

    :class:`~lucid.nn.DynamicKVCache`, :class:`~lucid.nn.StaticKVCache`,
    :class:`~lucid.nn.SlidingWindowKVCache`, :class:`~lucid.nn.QuantizedKVCache` and
    :class:`~lucid.nn.HybridKVCache` are named constructors of this class.

    Parameters
    ----------
    layers : sequence of CacheLayer, optional
        One new layer object per model layer (the same object twice would share storage:
        ``ValueError``).
    prototype : CacheLayer, optional
        The layer to replicate for each new ``layer_idx`` (its contents are never used).

    Notes
    -----
    * ``key``/``value`` have shape ``(B, ..., T, D)``: batch first, sequence on axis -2, head
      dimension last (the value head size may differ).
    * ``update`` and ``get`` return **views** of the cache's storage where the layer kind
      allows: no copy, valid until the next call that changes the cache.
    * A call that raises leaves the cache exactly as it was.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.KVCache(prototype=nn.SlidingWindowLayer(window=4, sink_tokens=1))
    >>> k, v = cache.update(lucid.randn(1, 2, 9, 8), lucid.randn(1, 2, 9, 8), layer_idx=1)
    >>> len(cache.layers), cache.get_seq_length(1), cache.key_positions(1).tolist()
    (2, 9, [0, 5, 6, 7, 8])
    >>> mixed = nn.KVCache([nn.SlidingWindowLayer(4), nn.DynamicLayer()])
    >>> _ = mixed.update(lucid.randn(1, 2, 9, 8), lucid.randn(1, 2, 9, 8), layer_idx=0)
    >>> mixed.get(0)[0].shape
    (1, 2, 4, 8)
    """

    def __init__(self, layers: Sequence[CacheLayer] | None = None, *, prototype: CacheLayer | None = None) -> None:
        if layers is not None and prototype is not None:
            raise ValueError("give layers (a fixed list) or prototype (a layer to replicate), not both")
        if layers is not None:
            self.layers: list[CacheLayer] = _check_layers(layers)
            self.prototype: CacheLayer | None = None
        else:
            if prototype is not None and not isinstance(prototype, CacheLayer):
                raise TypeError(f"prototype must be a cache layer such as nn.DynamicLayer(), got {type(prototype).__name__}")
            self.layers = []
            self.prototype = DynamicLayer() if prototype is None else prototype

    def arguments(self) -> dict:
        """The settings of the named constructor that builds a cache like this one: the
        prototype layer's arguments for a cache that grows (``{}`` for ``DynamicKVCache``),
        none for a list of layers (``StaticKVCache`` says its own).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().arguments(), nn.SlidingWindowKVCache(8).arguments()
        ({}, {'window': 8, 'sink_tokens': 0})
        """
        return {} if self.prototype is None else self.prototype.arguments()

    def state(self) -> tuple[dict, dict]:
        """``(settings, arrays)``: the class, the prototype's kind and arguments (for a cache
        that grows), and every layer's state.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.SlidingWindowKVCache(window=4)
        >>> _ = cache.update(lucid.randn(1, 2, 6, 8), lucid.randn(1, 2, 6, 8), 0)
        >>> settings, arrays = cache.state()
        >>> settings["prototype"], settings["layers"][0]["length"], arrays["layers.0.keys"].shape
        ({'kind': 'sliding_window', 'args': {'window': 4, 'sink_tokens': 0}, 'written': False, 'length': 0}, 6, (1, 2, 4, 8))
        """
        settings = {"class": type(self).__name__, "prototype": None if self.prototype is None else self.prototype.fresh().state()[0],
                    "layers": []}
        arrays = {}
        for i, layer in enumerate(self.layers):
            layer_settings, layer_arrays = layer.state()
            settings["layers"].append(layer_settings)
            arrays.update({f"layers.{i}.{name}": array for name, array in layer_arrays.items()})
        return settings, arrays

    @classmethod
    def _from_state(cls, settings: dict, arrays: dict) -> "KVCache":
        layers = []
        for i, layer_settings in enumerate(settings["layers"]):
            names = f"layers.{i}."
            parts = {key[len(names):]: value for key, value in arrays.items() if key.startswith(names)}
            layers.append(CacheLayer.from_state(layer_settings, parts))
        prototype = settings["prototype"]
        # Not through the subclass's constructor: the layers carry every argument it would check.
        cache = cls.__new__(cls)
        if prototype is None:
            KVCache.__init__(cache, layers)
        else:
            KVCache.__init__(cache, prototype=CacheLayer.from_state(prototype, {}))
            cache.layers = layers
        return cache

    # -- reading ---------------------------------------------------------
    def _layer(self, layer_idx) -> CacheLayer | None:
        layer_idx = check_layer_idx(layer_idx, None if self.prototype else len(self.layers))
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
        layer_idx = check_layer_idx(layer_idx, None if self.prototype else len(self.layers))
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        if layer is None or not layer.written:
            k, _ = as_arrays(key, value)
            batch = self.batch_size()
            if batch is not None and k.ndim >= 3:
                check_batch(batch, k.shape[0])
        if layer is None:
            layer = self.prototype.fresh()
            out = layer.update(key, value, cache_position)
            self.layers.extend(self.prototype.fresh() for _ in range(layer_idx - len(self.layers)))
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
    def _prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        rows = parse_batch_indices(indices, name, self.batch_size())
        if self.batch_size() is None:
            return commit_all([])
        self._check_batch_fits(int(rows.shape[0]), f"{name} of length {rows.shape[0]}")
        return commit_all([layer.prepare_select(rows) for layer in self._written()])

    def _prepare_repeat(self, repeats: int) -> Callable[[], None]:
        repeats = check_int(repeats, "repeats", minimum=1)
        batch = self.batch_size()
        if batch is None:
            return commit_all([])
        self._check_batch_fits(batch * repeats, f"repeats={repeats}")
        rows = repeat_indices(repeats, batch)
        return commit_all([layer.prepare_select(rows) for layer in self._written()])

    def _prepare_crop(self, max_length: int) -> Callable[[], None]:
        max_length = check_int(max_length, "max_length")
        return commit_all([layer.prepare_crop(max_length) for layer in self._written()])

    def _prepare_trim(self, n: int) -> Callable[[], None]:
        n = check_int(n, "n")
        if n and not self._written():
            raise ValueError(f"trim(n={n}): the cache holds no positions; check can_trim(n) first")
        for index, layer in enumerate(self.layers):
            if layer.written and n > layer.trimmable():
                raise ValueError(f"trim(n={n}): layer {index} ({layer!r}) can drop at most its last "
                                 f"{layer.trimmable()} positions; check can_trim(n) first")
        return commit_all([layer.prepare_trim(n) for layer in self._written()])

    def _trimmable(self, appended: int) -> int:
        # Every layer gets the update (a cache still growing: as its prototype would).
        return min(layer.trimmable(appended) for layer in (self.layers or [self.prototype]))

    def reset(self) -> None:
        # Each layer's policy decides what it keeps (a static layer keeps its buffers).
        for layer in self.layers:
            layer.reset()

    def __repr__(self) -> str:
        lengths = [layer.length if layer.written else 0 for layer in self.layers]
        return f"{type(self).__name__}(layers={len(self.layers)}, lengths={lengths})"
