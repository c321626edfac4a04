"""``SlidingWindowLayer``: the last ``window`` positions (plus the first ``sink_tokens``), in order."""
from __future__ import annotations

from typing import Callable

from ...tensor import Tensor
from ...validation import check_int
from .arguments import check_append, is_next
from .cache_layer import CacheLayer, Spec, as_arrays, check_saved, nothing
from .window_tensor import WindowTensor

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

    Storage is one buffer per keys and values: the sinks' home, then a ring of ``window``
    slots. A position past the sinks goes to ring slot ``(position - sink_tokens) % window``; a
    one-token step writes the token once into the keys and once into the values (one slice
    write each), whatever the window and the length, and never copies the window.

    Until the window has slid every position sits at its own slot, and what ``update`` and
    ``get`` return are views in order; so are they whenever the ring's oldest slot is its first.
    Otherwise they are :class:`~lucid.nn.cache.window_tensor.WindowTensor` s: the sinks and the
    window, joined in temporal order only if something reads them. Attention reads the buffer
    as it lies (a decode step's query sees every key it holds, and the softmax does not depend
    on their order). Memory: ``sink_tokens + window`` positions, allocated at the first write.
    Like every tensor a cache returns, what ``update`` and ``get`` return reads this storage and
    is valid until the next call that changes the cache.

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
        # (B, ..., D): the sinks' home, then the ring
        self.ring_keys = self.ring_values = None
        self.length = 0
        self.written = False
        self._spec = None

    # -- where positions live ---------------------------------------------
    def _first_kept(self, end: int, new_tokens: int = 1) -> int:
        """The first non-sink position the last update of ``new_tokens`` tokens returned."""
        return max(self.sink_tokens, end - self.window - new_tokens + 1)

    def _shown(self, keys, values, end: int, backend) -> tuple:
        """What ``get`` returns after ``end`` positions (see the class docstring)."""
        sinks, window = self.sink_tokens, self.window
        if end - sinks <= window:  # nothing has left the window: every position at its own slot
            return _wrap(keys[..., :end, :], backend), _wrap(values[..., :end, :], backend)
        oldest = (end - sinks) % window  # the ring slot of the first position kept
        if oldest == 0:  # the ring lies in order
            return _wrap(keys, backend), _wrap(values, backend)
        return WindowTensor(keys, sinks, window, oldest, backend), WindowTensor(values, sinks, window, oldest, backend)

    def _window(self, buffer, lo: int, hi: int) -> list:
        """Views of window positions ``[lo, hi)`` (past the sinks, among the latest ``window``
        written), in order: one, or two where the ring wraps."""
        sinks, window = self.sink_tokens, self.window
        start, count = sinks + (lo - sinks) % window, max(0, hi - lo)
        if start + count > sinks + window:
            return [buffer[..., start:, :], buffer[..., sinks:start + count - window, :]]
        return [buffer[..., start:start + count, :]]

    # -- reading ---------------------------------------------------------
    def get(self):
        """``(keys, values)`` of the sinks and the last ``window`` positions, in order (views
        of the buffers, or ``WindowTensor`` s that join them when read), or ``None`` if
        unwritten.

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
        return self._shown(self.ring_keys, self.ring_values, self.length, self._spec.backend)

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
        >>> layer.nbytes()  # (4 + 1) positions x (2 + 2) float32 values
        80
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
                slot = self.sink_tokens + (n - self.sink_tokens) % self.window
                self.ring_keys[..., slot:slot + 1, :] = k
                self.ring_values[..., slot:slot + 1, :] = v
                self.length = n + 1
                return self._shown(self.ring_keys, self.ring_values, n + 1, spec.backend)
        k, v = as_arrays(key, value)
        spec = self.spec_for(k, v)
        n, count = self.length, k.shape[-2]
        check_append(cache_position, n, count, k.shape[0], "a sliding-window layer")
        keys, values = (self.ring_keys, self.ring_values) if self.written else self._allocate(spec)
        # What the update returns is built before the first write: the slots a write reuses
        # still hold what it returns.
        xp, end = spec.backend.xp, n + count
        out_k, out_v = self._returned(xp, k, keys, n, end), self._returned(xp, v, values, n, end)
        for buffer, x in ((keys, k), (values, v)):
            self._write(buffer, x, n, end)
        self.ring_keys, self.ring_values = keys, values
        self._spec, self.length, self.written = spec, end, True
        if out_k is None:  # a one-token step: views
            return self._shown(keys, values, end, spec.backend)
        backend = spec.backend
        return _wrap(out_k, backend), _wrap(out_v, backend)

    def _returned(self, xp, x, buffer, n: int, end: int):
        """A new array of what an update ``x`` of positions ``[n, end)`` returns, built before
        anything is written: the sinks (old, then new), the window's positions the new queries
        still see, then the new positions past the sinks. (A one-token step past the sinks
        returns views instead: ``None`` here.)"""
        sinks = self.sink_tokens
        if x.shape[-2] == 1 and self.written and n >= sinks:
            return None
        parts = [buffer[..., :min(sinks, n), :]] if sinks and n else []
        if n < sinks:
            parts.append(x[..., :min(sinks, end) - n, :])
        lo, hi = max(sinks, n - self.window + 1), max(sinks, n)
        if lo < hi:
            parts += self._window(buffer, lo, hi)
        parts.append(x[..., min(end, max(sinks, n)) - n:, :])  # nothing past the sinks: an empty slice
        return xp.concat(parts, axis=-2)

    def _write(self, buffer, x, n: int, end: int) -> None:
        """Write positions ``[n, end)``: sinks to their home, the latest ``window`` of the rest to
        their ring slots."""
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
            buffer[..., sinks + start:sinks + start + head, :] = part
            if count > head:
                buffer[..., sinks:sinks + count - head, :] = rest

    def _allocate(self, spec: Spec):
        positions = self.sink_tokens + self.window
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
        self.ring_keys, self.ring_values = buffers
        self._spec, self.length, self.written = spec, end, True

    def __repr__(self) -> str:
        return f"SlidingWindowLayer(window={self.window}, sink_tokens={self.sink_tokens}, length={self.length})"
