"""``SlidingWindowLayer``: the last ``window`` positions (plus the first ``sink_tokens``), in order."""
from __future__ import annotations

from typing import Callable

from ...tensor import Tensor
from ...validation import check_int
from .arguments import check_append, is_next
from .cache_layer import CacheLayer, Spec, as_arrays, check_saved, nothing

_wrap = Tensor.wrap


class SlidingWindowLayer(CacheLayer):
    """A layer for sliding-window attention, with optional attention sinks (StreamingLLM).

    Positions are absolute: ``length`` counts every position written, and
    ``get_seq_length`` answers it, so a model knows the next position id. The layer keeps
    the first ``sink_tokens`` positions forever and the last ``window`` positions; writes are
    appends (``cache_position`` ``None`` or exactly the next positions).

    ``update`` with ``T`` tokens returns, in temporal order, every key one of the new queries
    may attend to: the sinks, then positions ``max(sinks, n - window + 1)`` to ``n + T - 1``
    (a prefill longer than the window returns all of it). :meth:`key_positions` tells the
    absolute position of each.

    Storage is one buffer per keys and values, of ``sink_tokens + 2 * window`` positions: the
    sinks' home, then a mirrored ring (each position past the sinks is written at ring slot
    ``i`` and ``i + window``, so the last ``window`` positions are always one contiguous slice,
    in order). What ``get`` shows is one slice of it too: the sinks sit in the ``sink_tokens``
    slots just before the window's first slot. As the window slides they move one slot on, over
    ring slots whose copies in the ring's second half are the ones in use; the ring slot they
    leave is restored from its copy. So a one-token step writes the token twice and the sinks
    once (no sinks: nothing more) and returns two views: no copy of the window, the same cost at
    any window and any length. Memory: ``2 * window + sink_tokens`` positions, allocated at the
    first write.

    Parameters
    ----------
    window : int
        Positions kept (>= 1).
    sink_tokens : int
        First positions kept forever (>= 0).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.SlidingWindowLayer(window=4, sink_tokens=1)
    >>> _ = layer.update(lucid.randn(1, 2, 10, 8), lucid.randn(1, 2, 10, 8))
    >>> k, v = layer.get()
    >>> layer.length, k.shape, layer.key_positions().tolist()
    (10, (1, 2, 5, 8), [0, 6, 7, 8, 9])
    """

    kind = "sliding_window"

    def __init__(self, window: int, sink_tokens: int = 0):
        self.window = check_int(window, "window", minimum=1)
        self.sink_tokens = check_int(sink_tokens, "sink_tokens", minimum=0)
        self._release()

    def _release(self) -> None:
        # (B, ..., sink_tokens + 2 * window, D): the sinks' home, then the mirrored ring
        self.ring_keys = self.ring_values = None
        self.length = 0
        self.written = False
        self._spec = None

    # -- where positions live ---------------------------------------------
    def _first_kept(self, end: int, new_tokens: int = 1) -> int:
        """The first non-sink position the last update of ``new_tokens`` tokens returned."""
        return max(self.sink_tokens, end - self.window - new_tokens + 1)

    def _shown_start(self, end: int) -> int:
        """Where the slice of sinks and window begins after ``end`` positions: the sinks' home
        until the window slides, then the ``sink_tokens`` slots before the window's first."""
        past = end - self.sink_tokens - self.window
        return past % self.window if past > 0 else 0

    def _shown(self, buffer, end: int):
        """The view of the sinks and the window after ``end`` positions."""
        start = self._shown_start(end)
        return buffer[..., start:start + min(end, self.sink_tokens + self.window), :]

    def _window(self, buffer, lo: int, hi: int):
        """A view of window positions ``[lo, hi)`` (past the sinks, at most ``window`` of the
        latest), read where the ring's copies are sure to hold them."""
        sinks, window = self.sink_tokens, self.window
        start, count = (lo - sinks) % window, max(0, hi - lo)
        if start + count <= window:  # the second half's copies: never under the sinks
            start += window
        return buffer[..., sinks + start:sinks + start + count, :]

    # -- reading ---------------------------------------------------------
    def get(self):
        """``(keys, values)`` of the sinks and the last ``window`` positions, in order (views
        of the buffers), or ``None`` if unwritten.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=3)
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> layer.get()[0].shape
        (1, 1, 3, 2)
        """
        if not self.written:
            return None
        backend, end = self._spec.backend, self.length
        return _wrap(self._shown(self.ring_keys, end), backend), _wrap(self._shown(self.ring_values, end), backend)

    def key_positions(self, new_tokens: int = 1) -> Tensor:
        """Absolute positions of what the last ``update`` of ``new_tokens`` tokens returned
        (``new_tokens=1``: also of what ``get`` returns).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=3, sink_tokens=2)
        >>> _ = layer.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2))
        >>> layer.key_positions(new_tokens=6).tolist(), layer.key_positions().tolist()
        ([0, 1, 2, 3, 4, 5], [0, 1, 3, 4, 5])
        """
        backend = self.backend
        xp = backend.xp
        end = self.length
        sinks = xp.arange(min(self.sink_tokens, end), dtype=xp.int64)
        recent = xp.arange(self._first_kept(end, new_tokens), end, dtype=xp.int64)
        return _wrap(xp.concat([sinks, recent]), backend)

    def nbytes(self) -> int:
        """Bytes of the two buffers.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=4, sink_tokens=1)
        >>> _ = layer.update(lucid.randn(1, 1, 1, 2), lucid.randn(1, 1, 1, 2))
        >>> layer.nbytes()  # (2 * 4 + 1) positions x (2 + 2) float32 values
        144
        """
        if self.ring_keys is None:
            return 0
        return (self.ring_keys.size + self.ring_values.size) * self._spec.lucid_dtype.itemsize

    # -- writing ---------------------------------------------------------
    def update(self, key, value, cache_position=None):
        """Append ``key``/``value`` (``(B, ..., T, D)``) and return every key the new queries
        may attend to, in temporal order (see the class docstring).

        ``cache_position`` must be ``None`` or the next positions ``[n, n + T)``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=2)
        >>> _ = layer.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2))
        >>> k, _ = layer.update(lucid.randn(1, 1, 1, 2), lucid.randn(1, 1, 1, 2), cache_position=[5])
        >>> k.shape, layer.key_positions().tolist()
        ((1, 1, 2, 2), [4, 5])
        """
        spec, n = self._spec, self.length
        if self.written and n >= self.sink_tokens:  # the decode step's fast path
            k = key.array if type(key) is Tensor else key
            v = value.array if type(value) is Tensor else value
            if (type(k) is type(v) is spec.array_type and k.shape == spec.step_k and v.shape == spec.step_v
                    and k.dtype is v.dtype is spec.dtype
                    and (cache_position is None or is_next(cache_position, n, 1))):
                return self._step(k, v, n, spec.backend)
        k, v = as_arrays(key, value)
        spec = self.spec_for(k, v)
        n, count = self.length, k.shape[-2]
        check_append(cache_position, n, count, k.shape[0], "a sliding-window layer")
        if self.written:
            keys, values = self.ring_keys, self.ring_values
        else:
            keys, values = self._allocate(spec)
        # Everything that allocates (what the update returns, the sinks set aside) happens
        # before the first write: the slots a write reuses still hold what the layer shows.
        xp, end = spec.backend.xp, n + count
        out_k, out_v = self._returned(xp, k, keys, n, end), self._returned(xp, v, values, n, end)
        sinks, slides = self.sink_tokens, self.sink_tokens and end - self.sink_tokens > self.window
        if slides:  # the sinks to place before the window, set aside: the writes go over where they are
            placed = [xp.asarray(self._shown(buffer, n)[..., :sinks, :], copy=True) if n >= sinks
                      else xp.concat([buffer[..., :n, :], x[..., :sinks - n, :]], axis=-2)
                      for buffer, x in ((keys, k), (values, v))]
        for buffer, x in ((keys, k), (values, v)):
            self._write(buffer, x, n, end)
        if slides:
            start = self._shown_start(end)
            for buffer, kept in zip((keys, values), placed):
                buffer[..., start:start + sinks, :] = kept
                if start >= sinks:  # clear of home: home holds them too (what steps copy from)
                    buffer[..., :sinks, :] = kept
        self.ring_keys, self.ring_values = keys, values
        self._spec, self.length, self.written = spec, end, True
        if out_k is None:  # a one-token step: views
            out_k, out_v = self._shown(keys, end), self._shown(values, end)
        backend = spec.backend
        return _wrap(out_k, backend), _wrap(out_v, backend)

    def _step(self, k, v, n: int, backend):
        """One token at position ``n`` (past the sinks): written twice; once the window slides,
        the sinks move one slot on and the ring slot they leave is restored from its copy.

        The sinks' home (the buffer's first ``sink_tokens`` slots) holds them whenever the
        sinks sit at home or past it, so they are copied from there; only while their place
        overlaps home are they set aside first."""
        sinks, window, keys, values = self.sink_tokens, self.window, self.ring_keys, self.ring_values
        r = (n - sinks) % window  # the token's ring slot; also where the sinks sit, once sliding
        slot = sinks + r
        end = n + 1
        self.length = end
        if n - sinks < window or not sinks:  # nothing to move: the token, twice, and two views
            keys[..., slot:slot + 1, :] = k
            keys[..., slot + window:slot + window + 1, :] = k
            values[..., slot:slot + 1, :] = v
            values[..., slot + window:slot + window + 1, :] = v
            if n - sinks < window:
                return _wrap(keys[..., :end, :], backend), _wrap(values[..., :end, :], backend)
            start = r + 1 if r + 1 < window else 0
            return (_wrap(keys[..., start:start + window, :], backend),
                    _wrap(values[..., start:start + window, :], backend))
        start = r + 1 if r + 1 < window else 0
        if r < sinks:  # the sinks' place overlaps home: set them aside (before the token's write)
            xp = backend.xp
            kept_k = xp.asarray(keys[..., r:r + sinks, :], copy=True)
            kept_v = xp.asarray(values[..., r:r + sinks, :], copy=True)
        if not start:  # the window wraps: the token's first copy is in it (otherwise under the sinks)
            keys[..., slot:slot + 1, :] = k
            values[..., slot:slot + 1, :] = v
        keys[..., slot + window:slot + window + 1, :] = k
        values[..., slot + window:slot + window + 1, :] = v
        if r >= sinks:  # home holds the sinks, clear of where they go
            keys[..., start:start + sinks, :] = keys[..., :sinks, :]
            values[..., start:start + sinks, :] = values[..., :sinks, :]
        else:
            keys[..., start:start + sinks, :] = kept_k
            values[..., start:start + sinks, :] = kept_v
            if start >= sinks:  # clear of home again: put them back there too
                keys[..., :sinks, :] = kept_k
                values[..., :sinks, :] = kept_v
        # Restore the ring slots the sinks left (one; all of the old place when they wrap).
        lo, hi = max(sinks, r), (r + 1 if start else r + sinks)
        if lo < hi:
            keys[..., lo:hi, :] = keys[..., lo + window:hi + window, :]
            values[..., lo:hi, :] = values[..., lo + window:hi + window, :]
        stop = start + sinks + window
        return _wrap(keys[..., start:stop, :], backend), _wrap(values[..., start:stop, :], backend)

    def _returned(self, xp, x, buffer, n: int, end: int):
        """A new array of what an update ``x`` of positions ``[n, end)`` returns, built before
        anything is written: the sinks (old, then new), the window's positions the new queries
        still see, then the new positions past the sinks. (A one-token step past the sinks
        returns views instead: ``None`` here.)"""
        sinks = self.sink_tokens
        if x.shape[-2] == 1 and self.written and n >= sinks:
            return None
        parts = [self._shown(buffer, n)[..., :min(sinks, n), :]] if sinks and n else []
        if n < sinks:
            parts.append(x[..., :min(sinks, end) - n, :])
        lo, hi = max(sinks, n - self.window + 1), max(sinks, n)
        if lo < hi:
            parts.append(self._window(buffer, lo, hi))
        parts.append(x[..., min(end, max(sinks, n)) - n:, :])  # nothing past the sinks: an empty slice
        return xp.concat(parts, axis=-2)

    def _write(self, buffer, x, n: int, end: int) -> None:
        """Write positions ``[n, end)``: sinks to their home, the latest ``window`` of the rest to
        both ring slots; once the window slides, each ring slot's first copy again equals its
        second (the sinks are placed after, by the caller)."""
        sinks, window = self.sink_tokens, self.window
        if n < sinks:
            hi = min(sinks, end)
            buffer[..., n:hi, :] = x[..., :hi - n, :]
        first = max(sinks, n, end - window)
        count = end - first
        if count > 0:
            start = (first - sinks) % window
            head = min(count, window - start)
            part, rest = x[..., first - n:first - n + head, :], x[..., first - n + head:, :]
            for offset in (sinks, sinks + window):
                buffer[..., offset + start:offset + start + head, :] = part
                if count > head:
                    buffer[..., offset:offset + count - head, :] = rest
        if sinks and end - sinks > window:  # the sinks were over some first copies: restore them all
            buffer[..., sinks:sinks + window, :] = buffer[..., sinks + window:sinks + 2 * window, :]

    def _allocate(self, spec: Spec):
        positions = self.sink_tokens + 2 * self.window
        spec.check_fits(positions, f"window={self.window}, sink_tokens={self.sink_tokens}")
        xp = spec.backend.xp

        def zeros(step):
            buf = xp.empty(step[:-2] + (positions, step[-1]), dtype=spec.dtype)
            buf[...] = 0  # touch the pages now, not during the decode steps
            return buf

        return zeros(spec.step_k), zeros(spec.step_v)

    # -- whole-layer edits -----------------------------------------------
    def prepare_select(self, rows) -> Callable[[], None]:
        """Prepare to replace the batch by ``rows`` (validated host ints); return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=2)
        >>> _ = layer.update(lucid.randn(2, 1, 3, 2), lucid.randn(2, 1, 3, 2))
        >>> layer.prepare_select([0, 0, 1])(); layer.batch_size
        3
        """
        if not self.written:
            return nothing
        rows = [int(r) for r in rows]
        backend = self._spec.backend
        keys, values = backend.take_rows(self.ring_keys, rows), backend.take_rows(self.ring_values, rows)
        spec = self._spec.with_batch(len(rows))

        def commit() -> None:
            self.ring_keys, self.ring_values, self._spec = keys, values, spec

        return commit

    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """A no-op when ``max_length >= length``; otherwise a ``ValueError`` (the positions that
        crop would keep renumbered from 0 have already left the window).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=2)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.prepare_crop(5)()
        """
        if max_length >= self.length or not self.written:
            return nothing
        raise ValueError(
            f"crop({max_length}) would drop positions of a sliding-window layer holding {self.length}; "
            "positions that left the window cannot come back, so a sliding window can only be "
            "cropped to max_length >= its length (a no-op). Use reset() to start over"
        )

    def trimmable(self, appended: int = 0) -> int:
        """Every position while none has left the window (``length <= window + sink_tokens``),
        else none: the positions before the last ``window`` are gone, and after a trim the
        window would need them. ``appended``: the same after one more update of that many.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=4)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.trimmable(), layer.trimmable(appended=1), layer.trimmable(appended=2)
        (3, 4, 0)
        """
        total = (self.length if self.written else 0) + appended
        return total if total <= self.window + self.sink_tokens else 0

    def arguments(self) -> dict:
        """``{"window": ..., "sink_tokens": ...}``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.SlidingWindowLayer(4).arguments()
        {'window': 4, 'sink_tokens': 0}
        """
        return {"window": self.window, "sink_tokens": self.sink_tokens}

    def _contents(self) -> tuple[dict, dict]:
        keys, values = self.get()  # the sinks and the window, in order
        return {}, {"keys": keys.array, "values": values.array}

    def _restore(self, settings: dict, arrays: dict) -> None:
        keys, values = arrays["keys"], arrays["values"]
        end, sinks = settings["length"], self.sink_tokens
        held = min(sinks, end)
        check_saved(keys, values, held + max(0, end - self._first_kept(end)), repr(self))
        spec = Spec.of(keys, values)
        buffers = self._allocate(spec)
        first = self._first_kept(end)
        for buffer, saved in zip(buffers, (keys, values)):
            buffer[..., :held, :] = saved[..., :held, :]
            self._write(buffer, saved[..., held:, :], first, end)
            if end - sinks > self.window:  # the sinks go before the window (home holds them too)
                start = self._shown_start(end)
                buffer[..., start:start + sinks, :] = saved[..., :sinks, :]
        self.ring_keys, self.ring_values = buffers
        self._spec, self.length, self.written = spec, end, True

    def __repr__(self) -> str:
        return f"SlidingWindowLayer(window={self.window}, sink_tokens={self.sink_tokens}, length={self.length})"
