"""Key/value storage of one attention layer, shared by the dynamic and static caches.

The buffers have shape ``(B, ..., capacity, D)`` with the sequence on axis -2.
Slots ``[0, length)`` hold the layer's tokens (never-written slots in there are
zeros); slots at and beyond ``length`` are scratch and never shown.

Capacity policy, the only difference between the two caches:

* ``max_capacity=None`` (dynamic): grow to ``max(needed, 2 * capacity)``, so an
  append costs amortized O(token) and memory stays within 2x the live tokens;
  ``crop`` hands memory back once less than half the buffer is live.
* ``max_capacity=N`` (static): allocate ``N`` slots at the first write, never
  reallocate, and raise ``ValueError`` for anything past ``N``.
"""
from __future__ import annotations

from ...tensor import Tensor
from .host_checks import Positions

_new_tensor = object.__new__


def check_pair(k, v) -> None:
    """Checks that hold for any key/value update: ranks, matching axes, dtype, T >= 1."""
    if k.ndim < 3:
        raise ValueError(f"key must have at least 3 axes (batch, ..., seq_len, head_dim), got shape {tuple(k.shape)}")
    if tuple(k.shape[:-1]) != tuple(v.shape[:-1]):
        raise ValueError(
            f"key and value must agree on every axis but the last; got key {tuple(k.shape)} "
            f"and value {tuple(v.shape)}"
        )
    if k.shape[-2] < 1:
        raise ValueError("key/value hold no tokens (seq_len is 0); an update needs at least one token")
    if k.dtype != v.dtype or type(k) is not type(v):
        raise ValueError(f"key and value must share dtype and device; got {k.dtype} and {v.dtype}")


def check_batch(expected: int, got: int) -> None:
    """Every layer of a cache shares one batch size."""
    if got != expected:
        raise ValueError(
            f"the cache holds batches of {expected} rows; the update has {got}. "
            "batch_repeat_interleave / batch_select_indices change the batch of every layer"
        )


class LayerStore:
    """Buffers, length and capacity policy of one layer (see the module docstring)."""

    __slots__ = ("backend", "layer_idx", "max_capacity", "keys", "values", "length", "capacity",
                 "_dtype", "_type", "_step_k", "_step_v")

    def __init__(self, backend, layer_idx: int, max_capacity: int | None, k, v, needed: int):
        """Fix the layer's shapes from its first update ``k``/``v`` and allocate ``needed`` slots."""
        self.backend = backend
        self.layer_idx = layer_idx
        self.max_capacity = max_capacity
        self._dtype = k.dtype
        self._type = type(k)
        self._step_k = tuple(k.shape[:-2]) + (1, k.shape[-1])
        self._step_v = tuple(v.shape[:-2]) + (1, v.shape[-1])
        self.length = 0
        self.capacity = 0
        self.keys = self.values = None
        self._reserve(needed)

    @property
    def batch(self) -> int:
        return self._step_k[0]

    def nbytes(self) -> int:
        """Bytes held by the two buffers (from the standard's ``size`` and dtype info)."""
        xp = self.backend.xp
        if xp.isdtype(self._dtype, "bool"):
            itemsize = 1
        else:
            info = xp.finfo if xp.isdtype(self._dtype, "real floating") else xp.iinfo
            itemsize = info(self._dtype).bits // 8
        return (self.keys.size + self.values.size) * itemsize

    # -- validation ------------------------------------------------------
    def fits(self, k, v) -> bool:
        """Whether ``k``/``v`` match this layer's fixed axes, dtype and device."""
        return (type(k) is self._type and k.dtype == self._dtype and v.dtype == self._dtype
                and tuple(k.shape[:-2]) == self._step_k[:-2] and k.shape[-1] == self._step_k[-1]
                and tuple(v.shape[:-2]) == self._step_v[:-2] and v.shape[-1] == self._step_v[-1])

    def check(self, k, v) -> None:
        """Raise ``ValueError`` unless ``k``/``v`` fit this layer (any seq_len)."""
        check_pair(k, v)
        if type(k) is not self._type:
            raise ValueError(
                f"layer {self.layer_idx} lives on {self.backend.name}/{self.backend.device}; the update "
                f"is a {type(k).__module__}.{type(k).__name__}. Move it with .to(device) first"
            )
        if k.dtype != self._dtype:
            raise ValueError(f"layer {self.layer_idx} holds {self._dtype}; the update is {k.dtype}. Cast it first")
        check_batch(self.batch, k.shape[0])
        for name, got, step in (("key", k.shape, self._step_k), ("value", v.shape, self._step_v)):
            want = "(" + ", ".join(map(str, step[:-2])) + f", seq_len, {step[-1]})"
            if tuple(got[:-2]) != step[:-2] or got[-1] != step[-1]:
                raise ValueError(f"layer {self.layer_idx} expects {name} of shape {want}, got {tuple(got)}")

    # -- writes ----------------------------------------------------------
    def append(self, k, v):
        """Write ``k``/``v`` after the last token; return ``Tensor`` views of the whole layer.

        This is the decode-step hot path: a handful of cheap checks, two slice
        writes, two views. Everything else lives in :meth:`check`.
        """
        start = self.length
        if (k.shape == self._step_k and v.shape == self._step_v and type(k) is self._type
                and type(v) is self._type and k.dtype is self._dtype and v.dtype is self._dtype):
            end = start + 1  # one well-formed token: nothing more to check
        else:
            self.check(k, v)  # raises unless only seq_len differs (a multi-token append)
            end = start + k.shape[-2]
        if end > self.capacity:
            self._reserve(end)
        keys = self.keys
        values = self.values
        keys[..., start:end, :] = k
        values[..., start:end, :] = v
        self.length = end
        out_k = _new_tensor(Tensor)
        out_k._data = keys[..., :end, :]
        out_k._backend = self.backend
        out_v = _new_tensor(Tensor)
        out_v._data = values[..., :end, :]
        out_v._backend = self.backend
        return out_k, out_v

    def write(self, k, v, pos: Positions):
        """Write ``k``/``v`` at validated positions; return views of the whole layer."""
        self.check(k, v)
        end = max(self.length, pos.hi)
        if end > self.capacity:
            self._reserve(end)
        keys, values = self.keys, self.values
        if pos.hi > self.length and not pos.covers(self.length):
            keys[..., self.length:pos.hi, :] = 0
            values[..., self.length:pos.hi, :] = 0
        if pos.contiguous:
            keys[..., pos.lo:pos.hi, :] = k
            values[..., pos.lo:pos.hi, :] = v
        else:
            positions = self.backend.from_host(pos.host)
            self.backend.scatter(keys, k, positions, pos.lo, pos.hi)
            self.backend.scatter(values, v, positions, pos.lo, pos.hi)
        self.length = end
        return self.view()

    def view(self):
        """``(key, value)`` Tensor views of the live tokens."""
        end = self.length
        return (Tensor._wrap(self.keys[..., :end, :], self.backend),
                Tensor._wrap(self.values[..., :end, :], self.backend))

    # -- capacity --------------------------------------------------------
    def _reserve(self, needed: int) -> None:
        """Make room for ``needed`` slots, or raise before anything changes."""
        if self.max_capacity is not None:
            if needed > self.max_capacity:
                raise ValueError(
                    f"layer {self.layer_idx}: this write needs {needed} positions but max_cache_len is "
                    f"{self.max_capacity}; create the StaticKVCache with a larger max_cache_len or crop() it first"
                )
            if self.keys is None:
                self._reallocate(self.max_capacity)
            return
        self._reallocate(max(needed, 2 * self.capacity))

    def _reallocate(self, capacity: int) -> None:
        xp = self.backend.xp
        old_k, old_v, live = self.keys, self.values, self.length
        self.keys = xp.empty(self._step_k[:-2] + (capacity, self._step_k[-1]), dtype=self._dtype)
        self.values = xp.empty(self._step_v[:-2] + (capacity, self._step_v[-1]), dtype=self._dtype)
        if live:
            self.keys[..., :live, :] = old_k[..., :live, :]
            self.values[..., :live, :] = old_v[..., :live, :]
        self.capacity = capacity

    # -- whole-layer edits -----------------------------------------------
    def crop(self, max_length: int) -> None:
        """Keep the latest ``max_length`` tokens, renumbered from 0."""
        if self.length <= max_length:
            return
        xp = self.backend.xp
        start = self.length - max_length
        # Copy first: source and destination overlap, and not every backend
        # guarantees an overlapping slice assignment.
        kept_k = xp.asarray(self.keys[..., start:self.length, :], copy=True)
        kept_v = xp.asarray(self.values[..., start:self.length, :], copy=True)
        self.length = 0
        if self.max_capacity is None and self.capacity > 2 * max_length:
            self._reallocate(max_length)
        self.keys[..., :max_length, :] = kept_k
        self.values[..., :max_length, :] = kept_v
        self.length = max_length

    def select_rows(self, rows) -> None:
        """Replace the batch by ``rows`` (a backend int array) of the current one."""
        xp = self.backend.xp
        self.keys = xp.take(self.keys, rows, axis=0)
        self.values = xp.take(self.values, rows, axis=0)
        batch = (int(rows.shape[0]),)
        self._step_k = batch + self._step_k[1:]
        self._step_v = batch + self._step_v[1:]
