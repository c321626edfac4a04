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

    Storage is a mirrored ring: each position past the sinks is written at slot ``i`` and
    ``i + window`` of a ``2 * window`` buffer, so the last ``window`` positions are always
    contiguous and in order. A one-token step writes the token twice and returns views (no
    copy, no roll, the same cost at any window); with sinks it returns one copy of
    ``sink_tokens + window`` positions. Memory: ``2 * window + sink_tokens`` positions,
    allocated at the first write.

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
        self.sink_keys = self.sink_values = None  # (B, ..., sink_tokens, D)
        self.ring_keys = self.ring_values = None  # (B, ..., 2 * window, D)
        self.length = 0
        self.written = False
        self._spec = None

    # -- reading ---------------------------------------------------------
    def _first_kept(self, end: int, new_tokens: int = 1) -> int:
        """The first non-sink position the last update of ``new_tokens`` tokens returned."""
        return max(self.sink_tokens, end - self.window - new_tokens + 1)

    def _ring(self, ring, lo: int, hi: int):
        """A view of positions ``[lo, hi)`` (past the sinks, within the last window) of a ring."""
        start = (lo - self.sink_tokens) % self.window
        return ring[..., start:start + max(0, hi - lo), :]

    def _with_sinks(self, end: int, ring_k, ring_v):
        if not self.sink_tokens:
            return ring_k, ring_v
        xp = self._spec.backend.xp
        sinks = min(self.sink_tokens, end)
        return (xp.concat([self.sink_keys[..., :sinks, :], ring_k], axis=-2),
                xp.concat([self.sink_values[..., :sinks, :], ring_v], axis=-2))

    def get(self):
        """``(keys, values)`` of the sinks and the last ``window`` positions, in order (views
        without sinks, one copy with them), or ``None`` if unwritten.

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
        end = self.length
        lo = self._first_kept(end)
        k, v = self._with_sinks(end, self._ring(self.ring_keys, lo, end), self._ring(self.ring_values, lo, end))
        backend = self._spec.backend
        return _wrap(k, backend), _wrap(v, backend)

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
        """Bytes of the sink and ring buffers.

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
        arrays = [self.ring_keys, self.ring_values] + ([self.sink_keys, self.sink_values] if self.sink_tokens else [])
        return sum(a.size for a in arrays) * self._spec.lucid_dtype.itemsize

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
        if spec is not None and not self.sink_tokens and self.written:  # the decode step's fast path
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
        end, sinks, window = n + count, self.sink_tokens, self.window
        if self.written:
            sink_k, sink_v, ring_k, ring_v = self.sink_keys, self.sink_values, self.ring_keys, self.ring_values
        else:
            sink_k, sink_v, ring_k, ring_v = self._allocate(spec)
        xp, backend = spec.backend.xp, spec.backend
        # Everything that allocates happens before the first write: the ring slots a write
        # reuses still hold positions the layer shows until the commit.
        step = count == 1 and self.written and n >= sinks
        if step and sinks:
            shown = sinks + min(window, end - sinks)
            out_k = xp.empty(spec.step_k[:-2] + (shown, spec.step_k[-1]), dtype=spec.dtype)
            out_v = xp.empty(spec.step_v[:-2] + (shown, spec.step_v[-1]), dtype=spec.dtype)
        elif not step:
            out_k = self._returned(xp, k, sink_k, ring_k, n, end)
            out_v = self._returned(xp, v, sink_v, ring_v, n, end)
        if n < sinks:
            hi = min(sinks, end)
            sink_k[..., n:hi, :] = k[..., :hi - n, :]
            sink_v[..., n:hi, :] = v[..., :hi - n, :]
        first = max(sinks, n, end - window)  # the positions that go to the ring
        if first < end:
            self._write_ring(ring_k, k[..., first - n:, :], first - sinks)
            self._write_ring(ring_v, v[..., first - n:, :], first - sinks)
        if step:
            lo = self._first_kept(end)
            ring_view_k, ring_view_v = self._ring(ring_k, lo, end), self._ring(ring_v, lo, end)
            if sinks:
                out_k[..., :sinks, :] = sink_k
                out_k[..., sinks:, :] = ring_view_k
                out_v[..., :sinks, :] = sink_v
                out_v[..., sinks:, :] = ring_view_v
            else:
                out_k, out_v = ring_view_k, ring_view_v
        self.sink_keys, self.sink_values, self.ring_keys, self.ring_values = sink_k, sink_v, ring_k, ring_v
        self._spec, self.length, self.written = spec, end, True
        return _wrap(out_k, backend), _wrap(out_v, backend)

    def _step(self, k, v, n: int, backend):
        """One token at position ``n`` of a layer without sinks: two writes each, two views."""
        window, ring_k, ring_v = self.window, self.ring_keys, self.ring_values
        slot = n % window
        ring_k[..., slot:slot + 1, :] = k
        ring_k[..., slot + window:slot + window + 1, :] = k
        ring_v[..., slot:slot + 1, :] = v
        ring_v[..., slot + window:slot + window + 1, :] = v
        end = n + 1
        self.length = end
        shown = min(window, end)
        start = (end - shown) % window
        return _wrap(ring_k[..., start:start + shown, :], backend), _wrap(ring_v[..., start:start + shown, :], backend)

    def _returned(self, xp, x, sink, ring, n: int, end: int):
        """A new array of what an update ``x`` of positions ``[n, end)`` returns, built before
        anything is written: the sinks (old, then new), the window's positions the new queries
        still see, then the new positions past the sinks."""
        sinks = self.sink_tokens
        parts = [sink[..., :min(sinks, n), :]] if sinks and n else []
        if n < sinks:
            parts.append(x[..., :min(sinks, end) - n, :])
        lo, hi = max(sinks, n - self.window + 1), max(sinks, n)
        if lo < hi:
            parts.append(self._ring(ring, lo, hi))
        parts.append(x[..., min(end, max(sinks, n)) - n:, :])  # nothing past the sinks: an empty slice
        return xp.concat(parts, axis=-2)

    def _allocate(self, spec: Spec):
        spec.check_fits(2 * self.window + self.sink_tokens, f"window={self.window}, sink_tokens={self.sink_tokens}")
        xp = spec.backend.xp

        def zeros(step, positions):
            buf = xp.empty(step[:-2] + (positions, step[-1]), dtype=spec.dtype)
            buf[...] = 0  # touch the pages now, not during the decode steps
            return buf

        sinks = self.sink_tokens
        return (zeros(spec.step_k, sinks) if sinks else None, zeros(spec.step_v, sinks) if sinks else None,
                zeros(spec.step_k, 2 * self.window), zeros(spec.step_v, 2 * self.window))

    def _write_ring(self, ring, x, q: int) -> None:
        """Write ``x`` (at most ``window`` tokens) for ring index ``q`` on, at both mirror slots."""
        window, count = self.window, x.shape[-2]
        start = q % window
        head = min(count, window - start)
        ring[..., start:start + head, :] = x[..., :head, :]
        ring[..., start + window:start + window + head, :] = x[..., :head, :]
        if count > head:
            ring[..., :count - head, :] = x[..., head:, :]
            ring[..., window:window + count - head, :] = x[..., head:, :]

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
        names = ["ring_keys", "ring_values"] + (["sink_keys", "sink_values"] if self.sink_tokens else [])
        taken = {name: backend.take_rows(getattr(self, name), rows) for name in names}
        spec = self._spec.with_batch(len(rows))

        def commit() -> None:
            for name, array in taken.items():
                setattr(self, name, array)
            self._spec = spec

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

    def trimmable(self) -> int:
        """Every position while none has left the window (``length <= window + sink_tokens``),
        else none: the positions before the last ``window`` are gone, and after a trim the
        window would need them.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.SlidingWindowLayer(window=4)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2))
        >>> layer.trimmable()
        3
        >>> _ = layer.update(lucid.randn(1, 1, 2, 2), lucid.randn(1, 1, 2, 2))
        >>> layer.trimmable()
        0
        """
        if not self.written or self.length > self.window + self.sink_tokens:
            return 0
        return self.length

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
        sink_k, sink_v, ring_k, ring_v = self._allocate(spec)
        if held:
            sink_k[..., :held, :] = keys[..., :held, :]
            sink_v[..., :held, :] = values[..., :held, :]
        first = self._first_kept(end)
        if first < end:
            self._write_ring(ring_k, keys[..., held:, :], first - sinks)
            self._write_ring(ring_v, values[..., held:, :], first - sinks)
        self.sink_keys, self.sink_values, self.ring_keys, self.ring_values = sink_k, sink_v, ring_k, ring_v
        self._spec, self.length, self.written = spec, end, True

    def __repr__(self) -> str:
        return f"SlidingWindowLayer(window={self.window}, sink_tokens={self.sink_tokens}, length={self.length})"
