"""``Cache`` (the abstract interface) and ``KVCache`` (per-layer key/value stores)."""
from __future__ import annotations

import abc

import backends

from ...tensor import Tensor
from .host_checks import check_int, parse_batch_indices, parse_positions, repeat_indices
from .layer_store import LayerStore, check_batch, check_pair


class Cache(abc.ABC):
    """Abstract interface of every lucid cache.

    Subclasses store per-layer attention state and support the batch
    utilities that generation loops need (beam expansion and reordering),
    cropping and resetting.

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.DynamicKVCache(), nn.Cache)
    True
    """

    @abc.abstractmethod
    def update(self, key, value, layer_idx: int, cache_position=None):
        """Store new state for ``layer_idx`` and return what the layer holds.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> k, v = cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), layer_idx=0)
        >>> k.shape
        (1, 2, 4, 4)
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every layer's contents.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.reset()
        >>> cache.get_seq_length(0)
        0
        """

    @abc.abstractmethod
    def batch_select_indices(self, indices) -> None:
        """Keep the batch rows ``indices`` (in that order, repeats allowed).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.batch_select_indices([0, 0])
        >>> cache.get(0)[0].shape[0]
        2
        """

    @abc.abstractmethod
    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row ``repeats`` times in place.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.batch_repeat_interleave(3)
        >>> cache.get(0)[0].shape[0]
        3
        """

    @abc.abstractmethod
    def crop(self, max_length: int) -> None:
        """Keep only the most recent ``max_length`` positions of every layer.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.crop(1)
        >>> cache.get_seq_length(0)
        1
        """

    def reorder_cache(self, beam_idx) -> None:
        """Reorder the batch after a beam-search step (``batch_select_indices`` for beams).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.reorder_cache([0])
        >>> cache.get(0)[0].shape[0]
        1
        """
        self.batch_select_indices(beam_idx)

    def get_max_cache_shape(self) -> int | None:
        """The fixed sequence capacity, or ``None`` when the cache grows on demand.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.get_max_cache_shape() is None
        True
        """
        return None


class KVCache(Cache):
    """Base of the key/value caches: a list of per-layer stores.

    The cache checks arguments and orchestrates; each layer's
    :class:`~lucid.nn.cache.layer_store.LayerStore` owns its buffers. The
    subclasses differ only in ``_max_capacity`` (``None``: grow on demand) and
    in which ``layer_idx`` values they accept.

    Notes
    -----
    * ``key``/``value`` have shape ``(B, ..., T, D)``: batch first, sequence on
      axis -2, head dimension last (the value head size may differ).
    * ``update`` and ``get`` return **views** of the cache's storage: no copy,
      valid until the next call that changes the cache.
    * A call that raises leaves the cache exactly as it was.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache: nn.KVCache = nn.DynamicKVCache()
    >>> k, v = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
    >>> k.shape, cache.get_seq_length(0)
    ((1, 2, 3, 4), 3)
    """

    _max_capacity: int | None = None

    def __init__(self) -> None:
        if type(self) is KVCache:
            raise TypeError("KVCache is the abstract interface; instantiate DynamicKVCache or StaticKVCache")
        self.layers: list[LayerStore | None] = []

    # -- reading ---------------------------------------------------------
    def get(self, layer_idx: int):
        """``(key, value)`` of ``layer_idx`` as views of shape ``(..., length, D)``, or ``None``.

        ``None`` means the layer was never written (or was reset).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> cache.get(0) is None
        True
        """
        store = self._store(layer_idx)
        return None if store is None else store.view()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The number of positions ``layer_idx`` holds (0 if never written).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get_seq_length(3)
        0
        """
        store = self._store(layer_idx)
        return 0 if store is None else store.length

    # -- writing ---------------------------------------------------------
    def update(self, key, value, layer_idx: int, cache_position=None):
        """Write ``key``/``value`` into ``layer_idx``; return the layer's ``(key, value)`` views.

        Parameters
        ----------
        key, value : Tensor or backend array, shape ``(B, ..., T, D)``
            New tokens. The first write fixes the layer's dtype, device and
            every axis but the sequence axis.
        layer_idx : int
            Non-negative layer index.
        cache_position : None, int, list or integer Tensor, optional
            ``None`` appends; a 0-D position writes one token there; a 1-D
            ``(T,)`` tensor gives the slots for every row; a 2-D ``(B, T)``
            tensor gives them row by row. Gaps read as zeros; the length
            becomes ``max(length, max(position) + 1)``.

        Returns
        -------
        (Tensor, Tensor)
            Views of everything the layer holds, as ``get(layer_idx)`` would.

        Raises
        ------
        TypeError
            ``key``/``value`` not arrays, or a non-integer ``cache_position``.
        ValueError
            Shapes, dtypes or devices that do not fit, bad positions, or
            (static cache) a write past ``max_cache_len``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), 0, cache_position=3)
        >>> cache.get_seq_length(0)
        4
        """
        k = key._data if type(key) is Tensor else _as_array(key, "key")
        v = value._data if type(value) is Tensor else _as_array(value, "value")
        if cache_position is None and type(layer_idx) is int and layer_idx >= 0:
            try:
                store = self.layers[layer_idx]
            except IndexError:
                store = None
            if store is not None:  # the decode-step hot path
                return store.append(k, v)
        return self._update_general(k, v, layer_idx, cache_position)

    def _update_general(self, k, v, layer_idx, cache_position):
        layer_idx = self._check_layer_idx(layer_idx)
        check_pair(k, v)
        pos = None if cache_position is None else parse_positions(cache_position, k.shape[-2], k.shape[0])
        store = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        if store is None:
            store = self._new_store(k, v, layer_idx, k.shape[-2] if pos is None else pos.hi)
            out = store.append(k, v) if pos is None else store.write(k, v, pos)
            if layer_idx >= len(self.layers):
                self.layers.extend([None] * (layer_idx + 1 - len(self.layers)))
            self.layers[layer_idx] = store
            return out
        return store.append(k, v) if pos is None else store.write(k, v, pos)

    def _check_batch(self, k) -> None:
        batch = self._batch_size()
        if batch is not None:
            check_batch(batch, k.shape[0])

    def _new_store(self, k, v, layer_idx, needed) -> LayerStore:
        self._check_batch(k)
        return LayerStore(backends.backend_of(k), layer_idx, self._max_capacity, k, v, needed)

    # -- batch utilities -------------------------------------------------
    def batch_select_indices(self, indices) -> None:
        """Keep batch rows ``indices`` of every layer (1-D ints in ``[0, B)``, repeats allowed).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.batch_select_indices([1, 1, 0])
        >>> cache.get(0)[0].shape
        (3, 1, 1, 4)
        """
        self._select_rows(self._prepare_select(indices, "indices"))

    def reorder_cache(self, beam_idx) -> None:
        """Reorder the batch for beam search: row ``i`` becomes old row ``beam_idx[i]``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.reorder_cache(lucid.Tensor([1, 0], dtype=lucid.Int32))
        """
        self._select_rows(self._prepare_select(beam_idx, "beam_idx"))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch row ``repeats`` times in place: ``[a, b] -> [a, a, b, b]``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.batch_repeat_interleave(3)
        >>> cache.get(0)[0].shape[0]
        6
        """
        self._select_rows(self._prepare_repeat(repeats))

    def _prepare_select(self, indices, name):
        return parse_batch_indices(indices, name, self._batch_size())

    def _prepare_repeat(self, repeats):
        return repeat_indices(repeats, self._batch_size())

    def _select_rows(self, host_rows) -> None:
        """Apply validated row indices (``None`` for an empty cache) to every written layer."""
        if host_rows is None:
            return
        device_rows = {}
        for store in self._written():
            backend = store.backend
            if backend.name not in device_rows:
                device_rows[backend.name] = backend.from_host(host_rows)
            store.select_rows(device_rows[backend.name])

    # -- crop and reset --------------------------------------------------
    def crop(self, max_length: int) -> None:
        """Keep the latest ``max_length`` positions of every longer layer, renumbered from 0.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2), 0)
        >>> cache.crop(2); cache.get_seq_length(0)
        2
        """
        max_length = check_int(max_length, "max_length", minimum=0)
        for store in self._written():
            store.crop(max_length)

    def reset(self) -> None:
        """Make every layer never-written (``get`` answers ``None`` again).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 1, 2), lucid.randn(1, 1, 1, 2), 0)
        >>> cache.reset(); cache.get(0) is None
        True
        """
        self.layers = [None] * len(self.layers)

    # -- helpers ---------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes of storage the cache holds (allocated, not just live tokens).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().nbytes()
        0
        """
        return sum(store.nbytes() for store in self._written())

    def _written(self):
        return [store for store in self.layers if store is not None]

    def _batch_size(self) -> int | None:
        return next((store.batch for store in self.layers if store is not None), None)

    def _store(self, layer_idx) -> LayerStore | None:
        layer_idx = self._check_layer_idx(layer_idx)
        return self.layers[layer_idx] if layer_idx < len(self.layers) else None

    def _check_layer_idx(self, layer_idx) -> int:
        if type(layer_idx) is not int or layer_idx < 0:
            raise ValueError(f"layer_idx must be a non-negative int, got {layer_idx!r}")
        return layer_idx

    def __repr__(self) -> str:
        lengths = [0 if s is None else s.length for s in self.layers]
        return f"{type(self).__name__}(layers={len(self.layers)}, lengths={lengths})"


def _as_array(x, name: str):
    """The backend array behind a key/value argument, or a ``TypeError`` naming it."""
    if backends.backend_of(x) is None:
        raise TypeError(f"{name} must be a lucid.Tensor or a NumPy/CuPy array, got {type(x).__name__}")
    return x
