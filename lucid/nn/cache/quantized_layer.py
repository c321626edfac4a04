"""``QuantizedLayer``: old positions as 4- or 8-bit codes, recent ones in full precision."""
from __future__ import annotations

from typing import Callable

from ...validation import check_int
from .arguments import check_append
from .cache_layer import CacheLayer, Spec, as_arrays, check_saved, nothing
from .quantized_codes import FLOATS, Codes, QuantizedTensor, pack, quantize

_NAMES = ("key", "value")


class QuantizedLayer(CacheLayer):
    """A layer that stores old positions as group-wise affine codes (``x ~ code * scale + zero``).

    Keys are quantized per channel over groups of ``group_size`` consecutive positions, values
    per position over groups of ``group_size`` consecutive head-dimension values (the KIVI
    scheme: trained models' keys have a few channels far wider than the rest, which a group
    along a channel keeps apart). ``scale = (max - min) / (2**bits - 1)`` and ``zero = min``
    of the group, kept in the input dtype; 4-bit codes two to a byte. Every value read back is
    within ``scale / 2`` of what was written (plus the rounding of the input dtype).

    The most recent positions stay in full precision: the last ``min(n, residual_length)``
    always read back exactly, and fewer than ``residual_length + group_size`` are held
    unquantized. When an update brings the residual to that, its oldest positions are
    quantized in whole groups of ``group_size``, leaving between ``residual_length`` and
    ``residual_length + group_size - 1`` (so ``residual_length=0`` still holds up to
    ``group_size - 1`` positions exactly).

    The first ``sink_tokens`` positions (the attention sinks: trained models give the first
    tokens a large share of every query's attention, so their error reaches every step) are
    also kept in full precision; codes start after them.

    Writes are appends. ``update`` returns keys and values of every position as
    :class:`~lucid.nn.cache.quantized_codes.QuantizedTensor`: a snapshot that later calls
    never change, whose full-precision array (new, in the input dtype) is built the first time
    it is read; attention reads the codes without building it. ``crop`` keeps the most recent
    positions.

    Parameters
    ----------
    bits : {4, 8}
    group_size : int
        Positions per key group, and values per value group: must divide the value head
        dimension (checked at the first write).
    residual_length : int
        Recent positions kept in full precision (>= 0).
    sink_tokens : int
        First positions kept in full precision (>= 0).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.QuantizedLayer(bits=4, group_size=32, residual_length=16)
    >>> k, v = layer.update(lucid.randn(1, 2, 100, 64), lucid.randn(1, 2, 100, 64))
    >>> k.shape, layer.quantized_length, layer.residual_length_held
    ((1, 2, 100, 64), 64, 36)
    """

    kind = "quantized"

    def __init__(self, bits: int = 4, group_size: int = 64, residual_length: int = 128, sink_tokens: int = 0):
        bits = check_int(bits, "bits")
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.bits = bits
        self.group_size = check_int(group_size, "group_size", minimum=1)
        self.residual_length = check_int(residual_length, "residual_length")
        self.sink_tokens = check_int(sink_tokens, "sink_tokens")
        self._release()

    def _release(self) -> None:
        # Per key/value: (codes, scales, zeros) of every quantized position (the first `skip`
        # of them cropped away), and the residual buffer of the recent ones.
        self.stored: dict[str, tuple | None] = {"key": None, "value": None}
        self.residual: dict[str, object] = {"key": None, "value": None}
        self.sinks: dict[str, object] = {"key": None, "value": None}  # (B, ..., sink_tokens, D) each
        self.sinks_held = 0
        self.skip = 0
        self.quantized_length = 0
        self.residual_length_held = 0
        self.length = 0
        self.written = False
        self._spec = None
        self._exposed = 0  # residual positions snapshots may read: rewriting them needs a new buffer
        self._sinks_exposed = 0  # the same for the sinks' buffer

    @property
    def _capacity(self) -> int:
        return self.residual_length + self.group_size  # the residual never reaches this

    # -- reading ---------------------------------------------------------
    def get(self):
        """Keys and values of every position (snapshots, read in full precision), or ``None``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
        >>> layer.get()[0].shape
        (1, 1, 9, 4)
        """
        if not self.written:
            return None
        self._exposed, self._sinks_exposed = self.residual_length_held, self.sinks_held
        backend = self._spec.backend
        return tuple(QuantizedTensor(self._codes(name, self.stored[name], self.residual[name]), backend)
                     for name in _NAMES)

    def _codes(self, name: str, stored: tuple, residual) -> Codes:
        sinks = self.sinks[name]
        first = residual[..., :0, :] if sinks is None else sinks[..., :self.sinks_held, :]
        return Codes(self.bits, self.group_size, name == "key", *stored, self.skip,
                     residual[..., :self.residual_length_held, :], self._spec.lucid_dtype.xp_name, first)

    def nbytes(self) -> int:
        """Bytes of codes, scales, zeros and the residual buffers.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=4, group_size=64, residual_length=0)
        >>> x = lucid.randn(1, 1, 128, 64).astype(lucid.Float16)
        >>> _ = layer.update(x, x)
        >>> layer.nbytes()  # each of keys and values: a 64-position residual buffer, 128 x 32 code bytes, 256 scales and zeros
        25600
        """
        if not self.written:
            return 0
        itemsize = self._spec.lucid_dtype.itemsize
        total = 0
        for name in _NAMES:
            codes, scales, zeros = self.stored[name]
            total += codes.size + (scales.size + zeros.size) * itemsize + self.residual[name].size * itemsize
            if self.sinks[name] is not None:
                total += self.sinks[name].size * itemsize
        return total

    # -- writing ---------------------------------------------------------
    def update(self, key, value, cache_position=None):
        """Append ``key``/``value`` and return keys and values of every position.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> k, v = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
        >>> k.shape, layer.quantized_length, layer.residual_length_held
        ((1, 1, 9, 4), 4, 5)
        """
        k, v = as_arrays(key, value)
        spec = self.spec_for(k, v)
        n, count = self.length, k.shape[-2]
        check_append(cache_position, n, count, k.shape[0], "a quantized layer")
        if not self.written:
            self._check_layout(spec)
            spec.check_fits(self._capacity + self.sink_tokens,
                            f"residual_length={self.residual_length}, group_size={self.group_size}, "
                            f"sink_tokens={self.sink_tokens}")
        xp, keep, size = spec.backend.xp, self.residual_length, self.group_size
        if not (bool(xp.all(xp.isfinite(k))) and bool(xp.all(xp.isfinite(v)))):
            raise ValueError("key and value must be finite to be quantized (a NaN or inf would spread over its "
                             "whole group); the update holds a NaN or an inf")
        first = self._to_sinks(count)
        key_first, value_first = k[..., :first, :], v[..., :first, :]
        sinks = {name: self._sinks_buffer(xp, name, step, spec, first)
                 for name, step in (("key", spec.step_k), ("value", spec.step_v))}
        k, v, count = k[..., first:, :], v[..., first:, :], count - first
        held, total = self.residual_length_held, self.residual_length_held + count
        quantize_now = (total - keep) // size * size if total >= self._capacity else 0
        stored, residual = {}, {}
        for name, x, step in (("key", k, spec.step_k), ("value", v, spec.step_v)):
            stored[name] = self.stored[name] or self._empty(xp, name, step, spec)
            buffer = self.residual[name]
            if quantize_now:
                combined = xp.concat([buffer[..., :held, :], x], axis=-2) if held else x
                stored[name] = self._append_codes(xp, name, stored[name], combined[..., :quantize_now, :], spec)
                buffer = xp.empty(step[:-2] + (self._capacity, step[-1]), dtype=spec.dtype)
                residual[name] = (buffer, combined[..., quantize_now:, :], 0)
            else:
                if buffer is None:
                    buffer = xp.empty(step[:-2] + (self._capacity, step[-1]), dtype=spec.dtype)
                elif held < self._exposed:  # a snapshot reads what this write would overwrite
                    buffer = xp.asarray(buffer, copy=True)
                residual[name] = (buffer, x, held)

        for name, x in (("key", key_first), ("value", value_first)):
            if first:
                sinks[name][..., self.sinks_held:self.sinks_held + first, :] = x
            buffer, recent, at = residual[name]
            buffer[..., at:at + recent.shape[-2], :] = recent
            self.stored[name], self.residual[name], self.sinks[name] = stored[name], buffer, sinks[name]
        self.sinks_held += first
        self.quantized_length = stored["key"][0].shape[-2] - self.skip
        self.residual_length_held = total - quantize_now
        self._spec, self.length, self.written = spec, n + first + count, True
        return self.get()

    def _to_sinks(self, count: int) -> int:
        """How many of ``count`` new positions go to the sinks: while nothing follows them."""
        if self.quantized_length or self.residual_length_held:
            return 0
        return min(count, self.sink_tokens - self.sinks_held)

    def _sinks_buffer(self, xp, name: str, step: tuple, spec: Spec, first: int):
        """The sinks' buffer a write of ``first`` positions goes to: the current one, a new one
        (none yet), or a copy (the write would change what a snapshot reads)."""
        buffer = self.sinks[name]
        if not first:
            return buffer
        if buffer is None:
            return xp.empty(step[:-2] + (self.sink_tokens, step[-1]), dtype=spec.dtype)
        return xp.asarray(buffer, copy=True) if self.sinks_held < self._sinks_exposed else buffer

    def _empty(self, xp, name: str, step: tuple, spec: Spec) -> tuple:
        """No codes yet: zero-length codes, scales and zeros of the layer's layout."""
        lead, dim = step[:-2], step[-1]
        codes = xp.empty(lead + (0, dim // 2 if self.bits == 4 else dim), dtype=xp.uint8)
        groups = dim if name == "key" else dim // self.group_size
        return (codes,) + tuple(xp.empty(lead + (0, groups), dtype=spec.dtype) for _ in range(2))

    def _append_codes(self, xp, name: str, stored: tuple, x, spec: Spec) -> tuple:
        """``stored`` with the positions ``x`` (a whole number of groups) quantized after them:
        new arrays, so that snapshots of the old ones stay as they were."""
        lead, count, dim, size = tuple(x.shape[:-2]), x.shape[-2], x.shape[-1], self.group_size
        if name == "key":  # per channel, over groups of positions
            codes, scales, zeros = quantize(xp, xp.reshape(x, lead + (count // size, size, dim)), -2, self.bits,
                                            spec.dtype, spec.lucid_dtype.xp_name)
            scales, zeros = scales[..., 0, :], zeros[..., 0, :]
        else:  # per position, over groups of head-dimension values
            codes, scales, zeros = quantize(xp, xp.reshape(x, lead + (count, dim // size, size)), -1, self.bits,
                                            spec.dtype, spec.lucid_dtype.xp_name)
            scales, zeros = scales[..., 0], zeros[..., 0]
        new = (pack(xp, xp.reshape(codes, lead + (count, dim)), self.bits), scales, zeros)
        return tuple(xp.concat([old, part], axis=-2) if old.shape[-2] else part for old, part in zip(stored, new))

    def _check_layout(self, spec: Spec) -> None:
        if spec.lucid_dtype.xp_name not in FLOATS:
            raise TypeError(f"a quantized layer stores floating-point keys and values; the update is {spec.lucid_dtype}")
        if spec.step_v[-1] % self.group_size:
            raise ValueError(f"group_size={self.group_size} must divide the value head dimension (values are "
                             f"grouped along it), got {spec.step_v[-1]}")
        for name, step in (("key", spec.step_k), ("value", spec.step_v)):
            if self.bits == 4 and step[-1] % 2:
                raise ValueError(f"4-bit codes pack two values a byte: the {name} head dimension must be even, "
                                 f"got {step[-1]}")

    # -- whole-layer edits -----------------------------------------------
    def prepare_select(self, rows) -> Callable[[], None]:
        """Prepare to replace the batch by ``rows``: codes, scales, zeros and residual alike.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(2, 1, 5, 4), lucid.randn(2, 1, 5, 4))
        >>> layer.prepare_select([1, 1, 0])(); layer.batch_size
        3
        """
        if not self.written:
            return nothing
        rows = [int(r) for r in rows]
        backend = self._spec.backend
        stored = {name: tuple(backend.take_rows(a, rows) for a in self.stored[name]) for name in _NAMES}
        residual = {name: backend.take_rows(self.residual[name], rows) for name in _NAMES}
        sinks = {name: None if self.sinks[name] is None else backend.take_rows(self.sinks[name], rows) for name in _NAMES}
        spec = self._spec.with_batch(len(rows))

        def commit() -> None:
            self.stored, self.residual, self.sinks, self._spec = stored, residual, sinks, spec

        return commit

    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Prepare to keep the most recent ``max_length`` positions; return the commit. Key
        groups go whole: the live part of a group stays, its cropped positions skipped.

        The sinks go first: they are the oldest positions.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
        >>> layer.prepare_crop(7)(); layer.length, layer.quantized_length, layer.skip
        (7, 2, 2)
        """
        if not self.written or self.length <= max_length:
            return nothing
        xp, size = self._spec.backend.xp, self.group_size
        drop, held, quantized = self.length - max_length, self.residual_length_held, self.quantized_length
        cut = min(drop, self.sinks_held)  # sinks dropped (the oldest positions)
        sinks_held, drop = self.sinks_held - cut, drop - cut
        sinks = {name: self.sinks[name] if not cut else self._moved(xp, self.sinks[name], cut, self.sinks_held)
                 for name in _NAMES}
        stored, residual = {}, {}
        if not drop:
            stored, residual, skip = self.stored, self.residual, self.skip
        elif drop <= quantized:  # the residual stays; whole groups of codes go
            skip = self.skip + drop
            groups = skip // size
            for name in _NAMES:
                codes, scales, zeros = self.stored[name]
                first = groups if name == "key" else groups * size
                stored[name] = (xp.asarray(codes[..., groups * size:, :], copy=True),
                                xp.asarray(scales[..., first:, :], copy=True), xp.asarray(zeros[..., first:, :], copy=True))
                residual[name] = self.residual[name]
            skip -= groups * size
        else:  # every code goes, and the residual's oldest positions
            skip, gone = 0, drop - quantized
            for name in _NAMES:
                stored[name] = tuple(a[..., :0, :] for a in self.stored[name])
                residual[name] = self._moved(xp, self.residual[name], gone, held)
            held -= gone

        def commit() -> None:
            self.stored, self.residual, self.skip, self.sinks, self.sinks_held = stored, residual, skip, sinks, sinks_held
            self.residual_length_held, self.quantized_length = held, max(0, quantized - drop)
            self.length = max_length

        return commit

    def _moved(self, xp, buffer, cut: int, held: int):
        """A new buffer like ``buffer`` holding its positions ``[cut, held)`` from the start."""
        moved = xp.empty(buffer.shape, dtype=self._spec.dtype)
        moved[..., :held - cut, :] = buffer[..., cut:held, :]
        return moved

    def trimmable(self, appended: int = 0) -> int:
        """Positions that drop exactly while the last ``min(length, residual_length)`` stay in
        full precision: every position while none is quantized, else the residual's positions
        past ``residual_length`` (up to ``group_size - 1`` of them). Positions already in codes
        never come back to full precision. ``appended``: the same after one more update of that
        many positions.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4))
        >>> layer.trimmable(), layer.trimmable(appended=1)  # 5 + 1 held: that update quantizes 4
        (5, 0)
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))  # quantizes 4
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))
        >>> layer.quantized_length, layer.trimmable()
        (4, 1)
        """
        held, quantized = (self.residual_length_held, self.quantized_length) if self.written else (0, 0)
        total, keep = held + appended - self._to_sinks(appended), self.residual_length
        if total >= self._capacity:  # the update quantizes: the residual keeps what passes whole groups
            return (total - keep) % self.group_size
        if not quantized:
            return (self.length if self.written else 0) + appended
        return max(0, total - keep)

    def prepare_trim(self, count: int) -> Callable[[], None]:
        """Prepare to drop the last ``count`` positions (at most :meth:`trimmable`, all in full
        precision); return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 4), lucid.randn(1, 1, 3, 4))
        >>> layer.prepare_trim(1)(); layer.length, layer.residual_length_held
        (2, 2)
        """
        if not self.written or not count:
            return nothing
        held, length = max(0, self.residual_length_held - count), self.length - count
        sinks_held = self.sinks_held - max(0, count - self.residual_length_held)  # nothing quantized: into the sinks

        def commit() -> None:
            self.residual_length_held, self.length, self.sinks_held = held, length, sinks_held

        return commit

    def arguments(self) -> dict:
        """``{"bits": ..., "group_size": ..., "residual_length": ...}``, and ``"sink_tokens"``
        when there are any.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.QuantizedLayer(bits=8).arguments()
        {'bits': 8, 'group_size': 64, 'residual_length': 128}
        """
        sinks = {"sink_tokens": self.sink_tokens} if self.sink_tokens else {}
        return {"bits": self.bits, "group_size": self.group_size, "residual_length": self.residual_length, **sinks}

    def _contents(self) -> tuple[dict, dict]:
        # Codes, scales and zeros (the cropped `skip` included) and the residual, for keys and
        # values; "scheme" names the grouping, so that a file of another one is refused.
        arrays = {}
        for name in _NAMES:
            for part, array in zip(("codes", "scales", "zeros"), self.stored[name]):
                arrays[f"{name}.{part}"] = array
            arrays[f"{name}.residual"] = self.residual[name][..., :self.residual_length_held, :]
            if self.sinks_held:
                arrays[f"{name}.sinks"] = self.sinks[name][..., :self.sinks_held, :]
        return {"scheme": "keys-per-channel", "skip": self.skip}, arrays

    def _restore(self, settings: dict, arrays: dict) -> None:
        if settings.get("scheme") != "keys-per-channel":
            raise ValueError(f"{self!r}: the file's quantized layer was saved with per-token key groups (an earlier "
                             "lucid); load it there and recompute the cache, or save it again from this version")
        residual_k, residual_v, skip = arrays["key.residual"], arrays["value.residual"], settings["skip"]
        held = residual_k.shape[-2]
        stored = {name: tuple(arrays.get(f"{name}.{part}") for part in ("codes", "scales", "zeros")) for name in _NAMES}
        quantized = self._check_saved_codes(stored, skip, residual_k, residual_v)
        first = self._check_saved_sinks(arrays.get("key.sinks"), arrays.get("value.sinks"), residual_k, residual_v)
        check_saved(residual_k, residual_v, settings["length"] - quantized - first, repr(self))
        spec = Spec.of(residual_k, residual_v)
        xp = spec.backend.xp
        for name, recent, step in (("key", residual_k, spec.step_k), ("value", residual_v, spec.step_v)):
            self.stored[name] = tuple(xp.asarray(a, copy=True) for a in stored[name])
            buffer = xp.empty(step[:-2] + (self._capacity, step[-1]), dtype=spec.dtype)
            buffer[..., :held, :] = recent
            self.residual[name] = buffer
            if first:
                self.sinks[name] = xp.empty(step[:-2] + (self.sink_tokens, step[-1]), dtype=spec.dtype)
                self.sinks[name][..., :first, :] = arrays[f"{name}.sinks"]
        self.skip, self.quantized_length, self.residual_length_held = skip, quantized, held
        self.sinks_held = first
        self._spec, self.length, self.written = spec, settings["length"], True

    def _check_saved_sinks(self, sinks_k, sinks_v, residual_k, residual_v) -> int:
        """The saved sinks' positions (0 for none), or ``ValueError`` unless they fit the layer
        and the residual."""
        if sinks_k is None and sinks_v is None:
            return 0
        for sinks, residual in ((sinks_k, residual_k), (sinks_v, residual_v)):
            if (sinks is None or sinks.ndim != residual.ndim or sinks.dtype != residual.dtype
                    or tuple(sinks.shape[:-2]) != tuple(residual.shape[:-2]) or sinks.shape[-1] != residual.shape[-1]
                    or not 0 < sinks.shape[-2] <= self.sink_tokens or sinks.shape[-2] != sinks_k.shape[-2]):
                raise ValueError(f"{self!r}: the saved sinks do not fit sink_tokens={self.sink_tokens} and the residual")
        return sinks_k.shape[-2]

    def _check_saved_codes(self, stored: dict, skip, residual_k, residual_v) -> int:
        """The live quantized positions of saved codes, or ``ValueError`` unless codes, scales
        and zeros fit one another, the groups and the residual, and the residual its buffer."""
        size = self.group_size
        if residual_k.shape[-2] >= self._capacity or type(skip) is not int or not 0 <= skip < size:
            raise ValueError(f"{self!r}: a saved residual of {residual_k.shape[-2]} positions or skip={skip!r} "
                             "does not fit")
        count = None
        for name, residual in (("key", residual_k), ("value", residual_v)):
            dim, lead = residual.shape[-1], tuple(residual.shape[:-2])
            if dim % size and name == "value" or (self.bits == 4 and dim % 2):
                raise ValueError(f"{self!r}: a saved {name} head dimension of {dim} does not fit the groups")
            codes, scales, zeros = stored[name]
            if codes is None or scales is None or zeros is None:
                raise ValueError(f"{self!r}: the saved {name} codes, scales or zeros are missing")
            count = codes.shape[-2] if count is None else count
            groups = (count // size, dim) if name == "key" else (count, dim // size)
            if (tuple(codes.shape) != lead + (count, dim // 2 if self.bits == 4 else dim) or count % size
                    or any(tuple(a.shape) != lead + groups or a.dtype != residual.dtype for a in (scales, zeros))):
                raise ValueError(f"{self!r}: saved {name} codes, scales and zeros do not fit one another and "
                                 "the residual")
        if skip and not count:
            raise ValueError(f"{self!r}: skip={skip} with no saved codes")
        return count - skip

    def __repr__(self) -> str:
        sinks = f", sink_tokens={self.sink_tokens}" if self.sink_tokens else ""
        return (f"QuantizedLayer(bits={self.bits}, group_size={self.group_size}, "
                f"residual_length={self.residual_length}{sinks}, length={self.length})")
