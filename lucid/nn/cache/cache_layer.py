"""``CacheLayer``: what every layer of a cache answers, and the checks all layer kinds share.

A cache is a list of layers; each layer kind (contiguous :class:`~lucid.nn.KVLayer`,
:class:`~lucid.nn.SlidingWindowLayer`, :class:`~lucid.nn.QuantizedLayer`) owns its storage and
policy and implements this interface. Changes are prepared first and committed after, so a call
that raises leaves the layer exactly as it was.
"""
from __future__ import annotations

import abc
import math
from typing import Callable, NamedTuple

import lucid_backends

from ... import dtypes
from ...tensor import Tensor

def nothing() -> None:
    """The commit of a change that changes nothing.

    Examples
    --------
    >>> from lucid.nn.cache.cache_layer import nothing
    >>> nothing()
    """


def as_arrays(key, value):
    """The backend arrays behind ``key`` and ``value``, or a ``TypeError`` naming the bad one.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.cache.cache_layer import as_arrays
    >>> k, v = as_arrays(lucid.ones(1, 1, 1, 2), lucid.ones(1, 1, 1, 2))
    >>> k.shape
    (1, 1, 1, 2)
    """
    arrays = []
    for name, x in (("key", key), ("value", value)):
        if isinstance(x, Tensor):
            x = x.array
        elif lucid_backends.backend_of(x) is None:
            raise TypeError(f"{name} must be a lucid.Tensor or a NumPy/CuPy array, got {type(x).__name__}")
        arrays.append(x)
    return arrays


def check_pair(k, v) -> None:
    """What any key/value update must satisfy: ranks, matching axes, dtype and device, ``T >= 1``.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.cache.cache_layer import check_pair
    >>> check_pair(lucid.ones(1, 2, 3, 4).array, lucid.ones(1, 2, 3, 6).array)  # the value head size may differ
    """
    if k.ndim < 3:
        raise ValueError(f"key must have at least 3 axes (batch, ..., seq_len, head_dim), got shape {tuple(k.shape)}")
    if tuple(k.shape[:-1]) != tuple(v.shape[:-1]):
        raise ValueError(
            f"key and value must agree on every axis but the last; got key {tuple(k.shape)} "
            f"and value {tuple(v.shape)}"
        )
    if k.shape[-2] < 1:
        raise ValueError("key/value hold no tokens (seq_len is 0); an update needs at least one token")
    if 0 in tuple(k.shape) or 0 in tuple(v.shape):
        raise ValueError(f"key and value must have no empty axis (a batch of 0 rows, 0 heads...); got key "
                         f"{tuple(k.shape)} and value {tuple(v.shape)}")
    if type(k) is not type(v):
        raise ValueError(f"key and value must live on one device; got {type(k).__name__} and {type(v).__name__}")
    if k.dtype != v.dtype:
        raise ValueError(f"key and value must share a dtype; got {k.dtype} and {v.dtype}")


def check_saved(keys, values, positions: int, what: str) -> None:
    """What a saved key/value pair must satisfy to be restored: arrays of one type and dtype,
    batch first, agreeing on every axis but the last, holding ``positions`` positions.

    Examples
    --------
    >>> import lucid
    >>> from lucid.nn.cache.cache_layer import check_saved
    >>> check_saved(lucid.ones(1, 2, 3, 4).array, lucid.ones(1, 2, 3, 4).array, 3, "layer 0")
    """
    if type(keys) is not type(values) or keys.dtype != values.dtype:
        raise ValueError(f"{what}: saved keys and values differ in type or dtype ({keys.dtype}, {values.dtype})")
    if keys.ndim < 3 or tuple(keys.shape[:-1]) != tuple(values.shape[:-1]) or keys.shape[0] < 1:
        raise ValueError(f"{what}: saved keys {tuple(keys.shape)} and values {tuple(values.shape)} do not "
                         "form a (batch, ..., positions, head_dim) pair")
    if keys.shape[-2] != positions:
        raise ValueError(f"{what}: the settings say {positions} positions are saved, the arrays hold {keys.shape[-2]}")


def check_batch(expected: int, got: int) -> None:
    """Every layer of a cache holds the same number of batch rows.

    Examples
    --------
    >>> from lucid.nn.cache.cache_layer import check_batch
    >>> check_batch(2, 2)
    """
    if got != expected:
        raise ValueError(
            f"the cache holds batches of {expected} rows; the update has {got}. "
            "batch_repeat_interleave / batch_select_indices change the batch of every layer"
        )


class Spec(NamedTuple):
    """What a layer's first write fixes: backend, array type, dtype, and the shapes of one token."""

    backend: object
    array_type: type
    dtype: object  # the backend's dtype object
    lucid_dtype: dtypes.DType
    step_k: tuple  # shape of a one-token key update, (B, ..., 1, D)
    step_v: tuple

    @classmethod
    def of(cls, k, v) -> "Spec":
        """The spec of an update ``k``/``v``; ``TypeError`` for a dtype lucid cannot hand back."""
        backend = lucid_backends.backend_of(k)
        return cls(backend, type(k), k.dtype, dtypes.from_backend(backend, k.dtype),
                   tuple(k.shape[:-2]) + (1, k.shape[-1]), tuple(v.shape[:-2]) + (1, v.shape[-1]))

    def same_layout(self, other: "Spec | None") -> bool:
        """Whether buffers made for ``other`` can hold updates of this spec."""
        return (other is not None and self.array_type is other.array_type and self.dtype == other.dtype
                and self.step_k == other.step_k and self.step_v == other.step_v)

    def with_batch(self, batch: int) -> "Spec":
        return self._replace(step_k=(batch,) + self.step_k[1:], step_v=(batch,) + self.step_v[1:])

    def bytes_per_position(self) -> int:
        return (math.prod(self.step_k) + math.prod(self.step_v)) * self.lucid_dtype.itemsize

    def check_fits(self, positions: int, blame: str) -> None:
        """``ValueError`` naming ``blame`` (the arguments that set the size) when ``positions``
        positions of this layout could never fit in the device's memory."""
        size = positions * self.bytes_per_position()
        total = self.backend.total_memory()
        if size > total:
            raise ValueError(f"{blame}: a layer of {positions:,} positions would need {size / 2**30:,.1f} GiB, "
                             f"more than the {total / 2**30:,.1f} GiB of memory on this {self.backend.device}")


_KINDS: dict[str, type] = {}


class CacheLayer(abc.ABC):
    """The interface of one layer of a cache (see the module docstring).

    Attributes
    ----------
    length : int
        Positions written so far: what ``get_seq_length`` answers (absolute, for layers that
        keep only some of them).
    written : bool
        Whether the layer holds tokens (``get`` answers ``None`` otherwise).

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.SlidingWindowLayer(4), nn.CacheLayer)
    True
    """

    length: int = 0
    written: bool = False
    _spec: Spec | None = None
    #: The layer kind's name in saved files (``"dynamic"``, ``"static"``...); a class that
    #: sets one is registered under it, so that a file names the kind to rebuild.
    kind: str = ""

    def arguments(self) -> dict:
        """The constructor's arguments, to rebuild an empty layer of the same kind.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowLayer(8, sink_tokens=2).arguments()
        {'window': 8, 'sink_tokens': 2}
        """
        return {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):  # a layer kind of its own (a subclass without one saves as its parent)
            _KINDS[cls.kind] = cls

    def state(self) -> tuple[dict, dict]:
        """``(settings, arrays)``: what a file needs to rebuild this layer exactly.

        ``settings`` is JSON-able: the kind, the constructor's arguments, ``written``,
        ``length`` and whatever else the kind records; ``arrays`` maps names to backend arrays
        of the contents (none for an unwritten layer).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.StaticLayer(8)
        >>> _ = layer.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4))
        >>> settings, arrays = layer.state()
        >>> settings, arrays["keys"].shape
        ({'kind': 'static', 'args': {'max_cache_len': 8}, 'written': True, 'length': 3}, (1, 2, 3, 4))
        """
        settings = {"kind": self.kind, "args": self.arguments(), "written": self.written, "length": self.length}
        if not self.written:
            return settings, {}
        extra, arrays = self._contents()
        return {**settings, **extra}, arrays

    @abc.abstractmethod
    def _contents(self) -> tuple[dict, dict]:
        """``(extra settings, arrays)`` of a written layer, for :meth:`state`."""

    @classmethod
    def from_state(cls, settings: dict, arrays: dict) -> "CacheLayer":
        """The layer :meth:`state` described, of the kind it names, its arrays on their backend.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4))
        >>> copy = nn.CacheLayer.from_state(*layer.state())
        >>> type(copy).__name__, bool((copy.get()[0] == layer.get()[0]).min().item())
        ('DynamicLayer', True)
        """
        kind = _KINDS.get(settings.get("kind"))
        if kind is None or not issubclass(kind, cls):
            raise ValueError(f"settings describe a layer of kind {settings.get('kind')!r}, not a {cls.__name__} "
                             f"lucid knows (kinds: {', '.join(sorted(_KINDS))})")
        layer = kind(**settings["args"])
        if settings["written"]:
            layer._restore(settings, arrays)
        return layer

    @abc.abstractmethod
    def _restore(self, settings: dict, arrays: dict) -> None:
        """Fill this new layer with the contents :meth:`state` described (``written`` is true)."""

    def fresh(self) -> "CacheLayer":
        """A new, unwritten layer of the same kind and arguments: what a growing cache adds
        for each new ``layer_idx``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowLayer(8, sink_tokens=2).fresh()
        SlidingWindowLayer(window=8, sink_tokens=2, length=0)
        """
        return type(self)(**self.arguments())

    @property
    def batch_size(self) -> int | None:
        """Batch rows of a written layer, else ``None``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(3, 1, 1, 2), lucid.randn(3, 1, 1, 2))
        >>> layer.batch_size
        3
        """
        return self._spec.step_k[0] if self.written else None

    @property
    def backend(self):
        """The backend of the layer's buffers (``None`` before the first write).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicLayer().backend is None
        True
        """
        return None if self._spec is None else self._spec.backend

    def spec_for(self, k, v) -> Spec:
        """The layer's spec after an update ``k``/``v``: its own (checked against the update),
        or, at the first write, the update's. Raises as the cache contract says.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> nn.DynamicLayer().spec_for(lucid.ones(2, 1, 3, 4).array, lucid.ones(2, 1, 3, 4).array).step_k
        (2, 1, 1, 4)
        """
        check_pair(k, v)
        if not self.written:
            return Spec.of(k, v)
        spec = self._spec
        if type(k) is not spec.array_type:
            raise ValueError(
                f"this layer lives on {spec.backend.name}/{spec.backend.device}; the update is a "
                f"{type(k).__module__}.{type(k).__name__}. Move it with .to(device) first"
            )
        if k.dtype != spec.dtype:
            got = dtypes.from_backend(spec.backend, k.dtype)  # TypeError if lucid has no such dtype
            raise ValueError(f"this layer holds {spec.lucid_dtype}; the update is {got}. Cast it first")
        check_batch(spec.step_k[0], k.shape[0])
        for name, got, step in (("key", k.shape, spec.step_k), ("value", v.shape, spec.step_v)):
            if tuple(got[:-2]) != step[:-2] or got[-1] != step[-1]:
                want = "(" + ", ".join(map(str, step[:-2])) + f", seq_len, {step[-1]})"
                raise ValueError(f"this layer expects {name} of shape {want}, got {tuple(got)}")
        return spec

    def key_positions(self, new_tokens: int = 1) -> Tensor:
        """Absolute positions of the keys the last ``update`` of ``new_tokens`` tokens returned
        (``new_tokens=1``: also what ``get`` returns), as an Int64 tensor on the layer's backend.

        For a layer that keeps every position this is ``0, 1, ..., length - 1``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.key_positions().tolist()
        [0, 1, 2]
        """
        backend = self.backend
        return Tensor.wrap(backend.xp.arange(self.length, dtype=backend.xp.int64), backend)

    @abc.abstractmethod
    def update(self, key, value, cache_position=None):
        """Write ``key``/``value`` (``(B, ..., T, D)``); return the ``(keys, values)`` to attend to."""

    @abc.abstractmethod
    def get(self):
        """``(keys, values)`` the layer holds, or ``None`` if unwritten."""

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the layer really holds."""

    def nbytes_for_batch(self, batch: int) -> int:
        """Bytes the layer would hold with ``batch`` rows (``ValueError`` if it never can);
        this is how batch operations check, before changing anything, that a batch can fit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=4)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.nbytes_for_batch(2) == 2 * layer.nbytes()
        True
        """
        return self.nbytes() // self.batch_size * batch

    @abc.abstractmethod
    def prepare_select(self, rows) -> Callable[[], None]:
        """Prepare to replace the batch by ``rows`` (validated host ints); return the commit."""

    @abc.abstractmethod
    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Prepare to keep the latest ``max_length`` positions; return the commit."""

    def trimmable(self, appended: int = 0) -> int:
        """How many of the last positions :meth:`prepare_trim` can drop, now or (``appended``)
        after one more update of that many positions: all of them here; a layer kind that no
        longer holds some of what came before them says less.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> layer.trimmable(), layer.trimmable(appended=3)
        (5, 8)
        """
        return (self.length if self.written else 0) + appended

    def prepare_trim(self, count: int) -> Callable[[], None]:
        """Prepare to drop the last ``count`` positions (at most :meth:`trimmable`); the others
        keep their positions. Return the commit.

        Layers that keep every position read them from their buffers up to ``length``: dropping
        the last ones is a shorter length (slots past it are zeroed before a later write could
        expose them, as for any gap).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> layer.prepare_trim(2)(); layer.length
        3
        """
        if not self.written or not count:
            return nothing
        length = self.length - count

        def commit() -> None:
            self.length = length

        return commit

    @abc.abstractmethod
    def _release(self) -> None:
        """Drop the contents and the buffers: back to a new, unwritten layer."""

    def reset(self) -> None:
        """Forget the contents and release the buffers (a layer kind may keep them, as
        ``StaticLayer`` does for its next first write).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=2)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.reset(); layer.get() is None, layer.length, layer.nbytes()
        (True, 0, 0)
        """
        self._release()
