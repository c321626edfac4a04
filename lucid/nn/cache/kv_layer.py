"""``KVLayer``: the key/value storage of one attention layer, written once over the array namespace.

The buffers have shape ``(B, ..., capacity, D)`` with the sequence on axis -2. Slots
``[0, length)`` hold the layer's tokens (never-written slots among them are zeros); slots at
and past ``length`` are scratch and never shown. Subclasses choose the capacity policy and the
batch rows to allocate (:class:`~lucid.nn.DynamicLayer`, :class:`~lucid.nn.StaticLayer`);
everything else lives here. A policy may allocate more rows than the batch holds: the buffers
are then the first ``B`` rows of the allocation, and batch operations that stay within it run
in place.

Every change is prepared first (new buffers allocated, copies made) and committed after, by
plain attribute assignments that cannot fail, so a call that raises, out of memory included,
leaves the layer exactly as it was.
"""
from __future__ import annotations

import abc
import sys
from typing import Callable

import lucid_backends

from ...tensor import Tensor
from .arguments import classify_positions, is_next
from .cache_layer import CacheLayer, Spec, as_arrays, check_saved, nothing

_wrap = Tensor.wrap
_new_object = object.__new__
_refcount = getattr(sys, "getrefcount", lambda obj: 0)


def _references_when_unshared() -> int:
    """What ``sys.getrefcount`` answers, in the fast path's own code shape, for an object that
    only an attribute of the layer and the fast path's local variable hold; -1 (the returned
    tensors are then never reused) where that answer is not known to be exact: outside CPython,
    and from CPython 3.14 on, whose compiler may pass a local to a call without counting it."""

    class Holder:
        pass

    holder = Holder()
    holder.out = object()
    out = holder.out
    known = sys.implementation.name == "cpython" and sys.version_info < (3, 14)
    return _refcount(out) if known else -1


_UNSHARED = _references_when_unshared()


def _first_rows(allocation, batch: int):
    """The batch's buffer in an allocation: the allocation itself when it has no reserved rows."""
    return allocation if allocation.shape[0] == batch else allocation[:batch, ...]


class KVLayer(CacheLayer):
    """Keys and values of one attention layer; subclasses set the capacity policy.

    A layer starts unwritten and takes its dtype, device and every axis but the sequence
    from its first update. :meth:`update` handles every kind of write, with a fast path
    for the decode step.

    Attributes
    ----------
    keys, values : array or None
        The buffers, shape ``(B, ..., capacity, D)``; ``None`` before the first write.
    length : int
        Positions held (``[0, length)`` are shown).
    capacity : int
        Positions the buffers have room for.
    written : bool
        Whether the layer holds tokens (``get`` answers ``None`` otherwise).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.DynamicLayer()
    >>> k, v = layer.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4))
    >>> layer.length, k.shape
    (3, (1, 2, 3, 4))
    """

    #: The constructor argument that sets the capacity (named in errors), or ``None``.
    capacity_argument: str | None = None

    def __init__(self) -> None:
        self._release()

    def _release(self) -> None:
        self.keys = self.values = None
        self._all_k = self._all_v = None  # the allocation: ``keys``/``values`` are its first B rows
        self.length = 0
        self.capacity = 0
        self.written = False
        self._spec: Spec | None = None
        self._out_k = self._out_v = None

    def __getstate__(self) -> dict:
        # ``keys``/``values`` are views of the allocation; pickle would store them apart.
        return {**self.__dict__, "keys": None, "values": None, "_out_k": None, "_out_v": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._all_k is not None:
            batch = self._spec.step_k[0]
            self.keys, self.values = _first_rows(self._all_k, batch), _first_rows(self._all_v, batch)

    # -- policy ----------------------------------------------------------
    @abc.abstractmethod
    def capacity_for(self, needed: int) -> int:
        """The capacity to allocate when ``needed`` positions do not fit (``ValueError`` if never).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).capacity_for(5)
        16
        """

    def rows_for(self, batch: int) -> int:
        """Batch rows to allocate for a batch of ``batch`` (``ValueError`` if it can never fit).

        ``batch`` here; a policy that reserves rows answers more.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16, max_batch_size=4).rows_for(2)
        4
        """
        return batch

    def shrunk_capacity(self, length: int) -> int | None:
        """The smaller capacity ``crop`` should move a layer of ``length`` positions to, or ``None``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.StaticLayer(16).shrunk_capacity(2) is None
        True
        """
        return None

    # -- reading ---------------------------------------------------------
    def get(self):
        """``(keys, values)`` views of the ``length`` positions held, or ``None`` if unwritten.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> layer.get() is None
        True
        """
        if not self.written:
            return None
        end, backend = self.length, self._spec.backend
        return _wrap(self.keys[..., :end, :], backend), _wrap(self.values[..., :end, :], backend)

    def nbytes(self) -> int:
        """Bytes the layer's buffers hold (capacity, not just live positions; kept buffers count).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.StaticLayer(8)
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))
        >>> layer.nbytes()  # 8 positions x (4 + 4) float32 values
        256
        """
        if self._all_k is None:
            return 0
        return (self._all_k.size + self._all_v.size) * self._spec.lucid_dtype.itemsize

    def nbytes_for_batch(self, batch: int) -> int:
        """Bytes the layer would hold with ``batch`` rows (``ValueError`` if it never can).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.StaticLayer(8, max_batch_size=4)
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))
        >>> layer.nbytes(), layer.nbytes_for_batch(3)  # four rows are allocated either way
        (1024, 1024)
        """
        return self.nbytes() // self._all_k.shape[0] * self.rows_for(batch)

    # -- writing ---------------------------------------------------------
    def update(self, key, value, cache_position=None):
        """Write ``key``/``value`` (shape ``(B, ..., T, D)``) and return ``(keys, values)`` views.

        ``cache_position`` is ``None`` (append), or positions in any form the cache contract
        accepts (int, list, range, 1-D ``(T,)`` or 2-D ``(B, T)`` integer array or tensor).
        Never-written slots below the new length read as zeros.

        The decode step takes a fast path: one token of exactly the layer's shape, dtype and
        device, at the next position (``None``, ``[t]``, ``t``... see
        :func:`~lucid.nn.cache.arguments.is_next`), with room left, is written after a few
        identity and shape comparisons. Anything else goes through every check. The fast path
        hands back the two ``Tensor`` objects of the step before, holding the new views, when
        nothing else references them any more (CPython's reference count tells, before 3.14),
        which saves creating and freeing two objects a step; a tensor the caller kept never
        changes.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.ones(1, 1, 1, 2), lucid.ones(1, 1, 1, 2), cache_position=2)
        >>> layer.get()[0][0, 0, :, 0].tolist()
        [0.0, 0.0, 1.0]
        """
        k = key.array if type(key) is Tensor else key
        v = value.array if type(value) is Tensor else value
        start, spec = self.length, self._spec
        # (The test is negated so that the fast code follows it: CPython then jumps less.)
        if not (start < self.capacity and self.written and type(k) is type(v) is spec.array_type
                and k.shape == spec.step_k and v.shape == spec.step_v and k.dtype is v.dtype is spec.dtype
                and (cache_position is None
                     or (type(cache_position) is list and len(cache_position) == 1  # what models send
                         and cache_position[0] == start and type(cache_position[0]) is int)
                     or is_next(cache_position, start, 1))):
            return self._update_checked(key, value, cache_position)
        end = start + 1
        keys, values = self.keys, self.values
        keys[..., start:end, :] = k
        values[..., start:end, :] = v
        self.length = end
        # The tensors returned last time, when nobody else holds them any more (a model drops
        # them after its attention), are reused: no one can see the change. Else two new ones,
        # built as Tensor.wrap does, without its call overhead.
        out_k, out_v = self._out_k, self._out_v
        if _refcount(out_k) == _UNSHARED and _refcount(out_v) == _UNSHARED:
            out_k.array = keys[..., :end, :]
            out_v.array = values[..., :end, :]
            return out_k, out_v
        backend = spec.backend
        out_k = _new_object(Tensor)
        out_k.array = keys[..., :end, :]
        out_k.backend = backend
        out_v = _new_object(Tensor)
        out_v.array = values[..., :end, :]
        out_v.backend = backend
        self._out_k, self._out_v = out_k, out_v
        return out_k, out_v

    def _update_checked(self, key, value, cache_position):
        k, v = as_arrays(key, value)
        spec = self.spec_for(k, v)
        live = self.length if self.written else 0
        n_tokens = k.shape[-2]
        pos = classify_positions(cache_position, live, n_tokens, k.shape[0])
        if pos is None:
            lo, hi = live, live + n_tokens
            reason = f"appending {n_tokens} token(s) after position {live}"
        else:
            lo, hi = pos.lo, max(live, pos.hi)
            reason = f"cache_position up to {pos.hi - 1}"
        all_k, all_v, capacity = self._buffers_for(spec, hi, live, reason)
        keys, values = _first_rows(all_k, spec.step_k[0]), _first_rows(all_v, spec.step_k[0])
        if pos is None:
            keys[..., lo:hi, :] = k
            values[..., lo:hi, :] = v
        else:
            if pos.hi > live and not pos.covers(live):
                keys[..., live:pos.hi, :] = 0
                values[..., live:pos.hi, :] = 0
            if pos.contiguous:
                keys[..., pos.lo:pos.hi, :] = k
                values[..., pos.lo:pos.hi, :] = v
            else:
                # Both writes are prepared (everything that allocates) before either runs, so
                # running out of memory between the keys and the values changes neither.
                backend = spec.backend
                positions = backend.from_host(pos.host)
                writes = [backend.prepare_scatter(keys, k, positions, pos.lo, pos.hi),
                          backend.prepare_scatter(values, v, positions, pos.lo, pos.hi)]
                for write in writes:
                    write()
        self._commit(spec, all_k, all_v, capacity, hi)
        return self.get()

    def _fits(self, spec: Spec) -> bool:
        """Whether the allocation held (written or kept by ``reset``) can take updates of ``spec``."""
        old, batch = self._spec, spec.step_k[0]
        return (old is not None and spec.same_layout(old.with_batch(batch))
                and self.rows_for(batch) == self._all_k.shape[0])

    def _buffers_for(self, spec: Spec, needed: int, live: int, reason: str):
        """An allocation (every row of it) with room for ``needed`` positions holding the ``live``
        ones: the current one when it fits, else a new one (not yet installed)."""
        if needed <= self.capacity and self._fits(spec):
            return self._all_k, self._all_v, self.capacity
        capacity = self.capacity_for(needed)
        all_k, all_v = self._allocate(spec, capacity, reason)
        batch = spec.step_k[0]
        keys, values = _first_rows(all_k, batch), _first_rows(all_v, batch)
        if live:
            keys[..., :live, :] = self.keys[..., :live, :]
            values[..., :live, :] = self.values[..., :live, :]
        # Touch the room past this write now, and the reserved rows: the decode steps that fill
        # it, and batch operations that grow into them, then write to memory the OS has already
        # mapped (no page faults there). [live, needed) is written by the caller (gaps in it
        # zeroed there).
        keys[..., needed:, :] = 0
        values[..., needed:, :] = 0
        all_k[batch:, ...] = 0
        all_v[batch:, ...] = 0
        return all_k, all_v, capacity

    def _allocate(self, spec: Spec, capacity: int, reason: str):
        """A new allocation of ``capacity`` positions and the rows the policy asks for, keys and
        values; ``ValueError`` if it could never fit."""
        batch = spec.step_k[0]
        rows = self.rows_for(batch)
        size = capacity * spec.bytes_per_position() // batch * rows
        total = spec.backend.total_memory()
        if size > total:
            # A layer sized by its arguments names them all (capacity and reserved rows).
            blame = ", ".join(f"{k}={v}" for k, v in self.arguments().items()) if self.capacity_argument else reason
            raise ValueError(
                f"{blame}: a layer of {capacity} positions and {rows} batch row(s) would need "
                f"{size / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB of memory on this {spec.backend.device}"
            )
        xp = spec.backend.xp
        keys = xp.empty((rows,) + spec.step_k[1:-2] + (capacity, spec.step_k[-1]), dtype=spec.dtype)
        values = xp.empty((rows,) + spec.step_v[1:-2] + (capacity, spec.step_v[-1]), dtype=spec.dtype)
        return keys, values

    def _commit(self, spec: Spec, all_k, all_v, capacity: int, length: int) -> None:
        self.keys, self.values = _first_rows(all_k, spec.step_k[0]), _first_rows(all_v, spec.step_k[0])
        self._all_k, self._all_v = all_k, all_v
        self.capacity, self.length = capacity, length
        self._out_k = self._out_v = None
        self._spec = spec
        self.written = True

    # -- whole-layer edits, prepared then committed -----------------------
    def prepare_select(self, rows) -> Callable[[], None]:
        """Prepare to replace the batch by ``rows`` (validated host ints); return the commit.

        Only live positions move. When the new batch fits the allocation (the same batch size,
        as ``reorder_cache`` in beam search keeps it, or any size within rows a policy
        reserved) the rows are rearranged in place. Otherwise they are gathered into a new
        allocation of the same capacity.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(2, 1, 3, 2), lucid.randn(2, 1, 3, 2))
        >>> commit = layer.prepare_select([1, 1, 0])
        >>> layer.batch_size
        2
        >>> commit(); layer.batch_size
        3
        """
        if not self.written:
            return nothing
        rows = [int(r) for r in rows]
        if self.rows_for(len(rows)) == self._all_k.shape[0]:
            return self._prepare_rearrange(rows)
        live, backend = self.length, self._spec.backend
        spec = self._spec.with_batch(len(rows))
        all_k, all_v = self._allocate(spec, self.capacity, f"a batch of {len(rows)} rows")
        backend.copy_rows(all_k[:len(rows), ..., :live, :], self.keys[..., :live, :], rows)
        backend.copy_rows(all_v[:len(rows), ..., :live, :], self.values[..., :live, :], rows)
        return lambda: self._commit(spec, all_k, all_v, self.capacity, live)

    def _prepare_rearrange(self, rows: list) -> Callable[[], None]:
        """``prepare_select`` within the allocation: each changed row is written once, in place.

        Rows are written from the last to the first, so a source row below its destination
        is read before anything overwrites it (a repeat needs no extra copy); the sources that
        would be overwritten before they are read are copied aside here, in one gather.
        """
        changed = [i for i, row in enumerate(rows) if row != i]
        overwritten = set(changed)
        aside = sorted({rows[i] for i in changed if rows[i] > i and rows[i] in overwritten})
        live, backend = self.length, self._spec.backend
        spec = self._spec.with_batch(len(rows))
        all_k, all_v = self._all_k, self._all_v
        if aside:
            saved_k = backend.take_rows(self.keys[..., :live, :], aside)
            saved_v = backend.take_rows(self.values[..., :live, :], aside)
        slot = {row: n for n, row in enumerate(aside)}

        def commit() -> None:
            for i in reversed(changed):
                row = rows[i]
                if row in slot:
                    all_k[i, ..., :live, :] = saved_k[slot[row], ...]
                    all_v[i, ..., :live, :] = saved_v[slot[row], ...]
                else:
                    all_k[i, ..., :live, :] = all_k[row, ..., :live, :]
                    all_v[i, ..., :live, :] = all_v[row, ..., :live, :]
            self._commit(spec, all_k, all_v, self.capacity, live)

        return commit

    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Prepare to keep the latest ``max_length`` positions, renumbered from 0; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.DynamicLayer()
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> commit = layer.prepare_crop(2)
        >>> commit(); layer.length
        2
        """
        if not self.written or self.length <= max_length:
            return nothing
        spec, start, end = self._spec, self.length - max_length, self.length
        capacity = self.shrunk_capacity(max_length)
        if capacity is not None and capacity < self.capacity:
            all_k, all_v = self._allocate(spec, capacity, f"crop({max_length})")
            batch = spec.step_k[0]
            all_k[:batch, ..., :max_length, :] = self.keys[..., start:end, :]
            all_v[:batch, ..., :max_length, :] = self.values[..., start:end, :]
            return lambda: self._commit(spec, all_k, all_v, capacity, max_length)
        # In place: copy the kept positions first (source and destination may overlap).
        xp = spec.backend.xp
        kept_k = xp.asarray(self.keys[..., start:end, :], copy=True)
        kept_v = xp.asarray(self.values[..., start:end, :], copy=True)

        def commit() -> None:
            self.keys[..., :max_length, :] = kept_k
            self.values[..., :max_length, :] = kept_v
            self.length = max_length

        return commit

    def _contents(self) -> tuple[dict, dict]:
        end = self.length
        return {}, {"keys": self.keys[..., :end, :], "values": self.values[..., :end, :]}

    def _restore(self, settings: dict, arrays: dict) -> None:
        # The capacity follows the policy; the contents are exact.
        keys, values = arrays["keys"], arrays["values"]
        check_saved(keys, values, settings["length"], repr(self))
        if keys.shape[-2] == 0:  # written, then cropped to nothing: keep its layout
            xp = lucid_backends.backend_of(keys).xp
            one_k = xp.zeros(tuple(keys.shape[:-2]) + (1, keys.shape[-1]), dtype=keys.dtype)
            one_v = xp.zeros(tuple(values.shape[:-2]) + (1, values.shape[-1]), dtype=values.dtype)
            self.update(one_k, one_v)
            self.prepare_crop(0)()
        else:
            self.update(keys, values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, capacity={self.capacity}, written={self.written})"
