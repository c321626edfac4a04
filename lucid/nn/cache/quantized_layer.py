"""``QuantizedLayer``: old positions as 4- or 8-bit codes, recent ones in full precision."""
from __future__ import annotations

from typing import Callable

from ...tensor import Tensor
from ...validation import check_int
from .arguments import check_append
from .cache_layer import CacheLayer, Spec, as_arrays, check_saved, nothing


#: The largest finite value and the epsilon of each floating dtype a quantized layer stores.
_FLOATS = {"float16": (65504.0, 2.0**-10), "bfloat16": (3.3895313892515355e38, 2.0**-7),
           "float32": (3.4028234663852886e38, 2.0**-23), "float64": (1.7976931348623157e308, 2.0**-52)}


class QuantizedLayer(CacheLayer):
    """A layer that stores old positions as group-wise affine codes.

    Each group of ``group_size`` consecutive head-dimension values of one token is stored
    as codes ``c`` with ``x ~ c * scale + zero``, ``scale = (max - min) / (2**bits - 1)``,
    ``zero = min``; scale and zero are kept in the input dtype, 4-bit codes two to a byte.
    Every value read back is within ``scale / 2`` of what was written (plus the rounding of
    the input dtype).

    The most recent positions stay in full precision: the last ``min(n, residual_length)``
    always read back exactly, and at most ``2 * residual_length`` are held unquantized; when
    the residual reaches that, all but the newest ``residual_length`` are quantized (with
    ``residual_length=0``, every position is quantized at once). Quantized positions are
    kept in chunks, one per quantization, so memory grows by exactly what is added.

    Writes are appends. ``update`` returns full-precision keys and values of every position,
    in the input dtype: a new array, not a view. ``crop`` keeps the most recent positions.

    Parameters
    ----------
    bits : {4, 8}
    group_size : int
        Must divide the key and value head dimensions (checked at the first write).
    residual_length : int
        Recent positions kept in full precision (>= 0).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.QuantizedLayer(bits=4, group_size=32, residual_length=16)
    >>> k, v = layer.update(lucid.randn(1, 2, 100, 64), lucid.randn(1, 2, 100, 64))
    >>> k.shape, layer.quantized_length, layer.residual_length_held
    ((1, 2, 100, 64), 84, 16)
    """

    kind = "quantized"

    def __init__(self, bits: int = 4, group_size: int = 64, residual_length: int = 128):
        bits = check_int(bits, "bits")
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.bits = bits
        self.group_size = check_int(group_size, "group_size", minimum=1)
        self.residual_length = check_int(residual_length, "residual_length")
        self._release()

    def _release(self) -> None:
        # Per key/value: chunks of (codes, scales, zeros), oldest first, and the residual buffer.
        self.chunks: dict[str, list] = {"key": [], "value": []}
        self.residual: dict[str, object] = {"key": None, "value": None}
        self.quantized_length = 0
        self.residual_length_held = 0
        self.length = 0
        self.written = False
        self._spec = None

    # -- codes -----------------------------------------------------------
    @staticmethod
    def _arithmetic(xp, spec: Spec):
        """``(work dtype, largest finite value, epsilon)`` for the layer's dtype: float32 work
        (16-bit arithmetic is slow on CPUs), float64 for float64 inputs."""
        largest, eps = _FLOATS[spec.lucid_dtype.xp_name]
        return (xp.float64 if spec.lucid_dtype.xp_name == "float64" else xp.float32), largest, eps

    # The arithmetic works on halves (x / 2 - min / 2, code * scale / 2 + min / 2, then doubled):
    # halving is exact, and it keeps a group that spans a dtype's whole range (-3e38 to 3e38 in
    # float32 or bfloat16) from overflowing in max - min or in code * scale.
    def _quantize(self, xp, x, spec: Spec):
        """``(codes, scales, zeros)`` of ``x`` (``(B, ..., T, D)``): the scale rounded up to the
        stored dtype, so that every value stays within half a step of its code."""
        levels = 2**self.bits - 1
        dtype = spec.dtype
        work, _, eps = self._arithmetic(xp, spec)
        lead, dim = tuple(x.shape[:-1]), x.shape[-1]
        halves = xp.reshape(xp.astype(x, work), lead + (dim // self.group_size, self.group_size)) * 0.5
        low = xp.min(halves, axis=-1, keepdims=True)
        exact = (xp.max(halves, axis=-1, keepdims=True) - low) * (2 / levels)
        scale = xp.astype(xp.astype(exact, dtype), work)
        bumped = xp.astype(xp.astype(exact * (1 + 2 * eps), dtype), work)
        scale = xp.where(scale < exact, bumped, scale)
        safe = xp.where(scale > 0, scale, xp.ones_like(scale)) * 0.5
        codes = xp.clip(xp.round((halves - low) / safe), 0, levels)
        codes = xp.astype(xp.reshape(codes, lead + (dim,)), xp.uint8)
        if self.bits == 4:
            pairs = xp.reshape(codes, lead + (dim // 2, 2))
            codes = xp.bitwise_or(pairs[..., 0], xp.bitwise_left_shift(pairs[..., 1], 4))
        # low * 2 is the group's minimum, exactly: one of the values, so the dtype holds it.
        return codes, xp.astype(scale[..., 0], dtype), xp.astype(low[..., 0] * 2, dtype)

    def _dequantize(self, xp, codes, scales, zeros, dim: int, spec: Spec):
        lead = tuple(codes.shape[:-1])
        if self.bits == 4:
            codes = xp.stack([xp.bitwise_and(codes, 15), xp.bitwise_right_shift(codes, 4)], axis=-1)
        work, largest, _ = self._arithmetic(xp, spec)
        groups = xp.reshape(xp.astype(codes, work), lead + (dim // self.group_size, self.group_size))
        scales, zeros = xp.astype(scales, work)[..., None], xp.astype(zeros, work)[..., None]
        reach = float(xp.max(xp.abs(zeros))) + (2**self.bits - 1) * float(xp.max(scales))
        if reach < largest / 2:  # the usual case: nothing comes near the dtype's largest value
            return xp.astype(xp.reshape(groups * scales + zeros, lead + (dim,)), spec.dtype)
        values = (groups * (scales * 0.5) + zeros * 0.5) * 2
        # A rounded-up scale may step just past the dtype's range: clip before the cast.
        return xp.astype(xp.clip(xp.reshape(values, lead + (dim,)), -largest, largest), spec.dtype)

    # -- reading ---------------------------------------------------------
    def get(self):
        """Full-precision ``(keys, values)`` of every position (new arrays), or ``None``.

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
        spec, held = self._spec, self.residual_length_held
        out = [self._assemble(spec.backend.xp, self.chunks[name], [self.residual[name][..., :held, :]], step[-1], spec)
               for name, step in (("key", spec.step_k), ("value", spec.step_v))]
        return Tensor.wrap(out[0], spec.backend), Tensor.wrap(out[1], spec.backend)

    def nbytes(self) -> int:
        """Bytes of codes, scales, zeros and the residual buffers.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=4, group_size=64, residual_length=0)
        >>> _ = layer.update(lucid.randn(1, 1, 10, 64).astype(lucid.Float16), lucid.randn(1, 1, 10, 64).astype(lucid.Float16))
        >>> layer.nbytes()  # 2 x 10 tokens x (32 code bytes + one float16 scale and zero)
        720
        """
        if not self.written:
            return 0
        itemsize = self._spec.lucid_dtype.itemsize
        total = 0
        for name in ("key", "value"):
            for codes, scales, zeros in self.chunks[name]:
                total += codes.size + (scales.size + zeros.size) * itemsize
            total += self.residual[name].size * itemsize
        return total

    # -- writing ---------------------------------------------------------
    def update(self, key, value, cache_position=None):
        """Append ``key``/``value`` and return full-precision keys and values of every position.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> k, v = layer.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4))
        >>> k.shape, layer.quantized_length, layer.residual_length_held
        ((1, 1, 5, 4), 3, 2)
        """
        k, v = as_arrays(key, value)
        spec = self.spec_for(k, v)
        n, count = self.length, k.shape[-2]
        check_append(cache_position, n, count, k.shape[0], "a quantized layer")
        if not self.written:
            self._check_layout(spec)
            spec.check_fits(2 * self.residual_length, f"residual_length={self.residual_length}")
        xp, keep = spec.backend.xp, self.residual_length
        if not (bool(xp.all(xp.isfinite(k))) and bool(xp.all(xp.isfinite(v)))):
            raise ValueError("key and value must be finite to be quantized (a NaN or inf would spread over its "
                             "whole group); the update holds a NaN or an inf")
        held = self.residual_length_held
        pending = {}
        for name, x, step in (("key", k, spec.step_k), ("value", v, spec.step_v)):
            residual = self.residual[name]
            if residual is None:
                residual = xp.empty(step[:-2] + (2 * keep, step[-1]), dtype=spec.dtype)
            chunks = list(self.chunks[name])
            if held + count < 2 * keep:
                tail = None  # the tokens fit: written at the commit
            else:
                combined = xp.concat([residual[..., :held, :], x], axis=-2)
                split = combined.shape[-2] - keep
                chunks.append(self._quantize(xp, combined[..., :split, :], spec))
                tail = combined[..., split:, :]
            pending[name] = (chunks, residual, tail, x)
        new_held = held + count if pending["key"][2] is None else keep
        outputs = {}
        for name, step in (("key", spec.step_k), ("value", spec.step_v)):
            chunks, residual, tail, x = pending[name]
            recent = [residual[..., :held, :], x] if tail is None else [tail]
            outputs[name] = self._assemble(xp, chunks, recent, step[-1], spec)

        for name in ("key", "value"):
            chunks, residual, tail, x = pending[name]
            if tail is None:
                residual[..., held:held + count, :] = x
            elif keep:
                residual[..., :keep, :] = tail
            self.chunks[name], self.residual[name] = chunks, residual
        self.quantized_length = sum(c[0].shape[-2] for c in self.chunks["key"])
        self.residual_length_held = new_held
        self._spec, self.length, self.written = spec, n + count, True
        return Tensor.wrap(outputs["key"], spec.backend), Tensor.wrap(outputs["value"], spec.backend)

    def _assemble(self, xp, chunks, recent: list, dim: int, spec: Spec):
        """A new array of every position in full precision: the dequantized chunks, then the
        ``recent`` arrays, in one concatenation."""
        parts = list(recent)
        if chunks:
            codes, scales, zeros = (xp.concat([c[i] for c in chunks], axis=-2) for i in range(3))
            parts.insert(0, self._dequantize(xp, codes, scales, zeros, dim, spec))
        return xp.concat(parts, axis=-2) if len(parts) > 1 else xp.asarray(parts[0], copy=True)

    def _check_layout(self, spec: Spec) -> None:
        if spec.lucid_dtype.xp_name not in _FLOATS:
            raise TypeError(f"a quantized layer stores floating-point keys and values; the update is {spec.lucid_dtype}")
        for name, step in (("key", spec.step_k), ("value", spec.step_v)):
            dim = step[-1]
            if dim % self.group_size:
                raise ValueError(f"group_size={self.group_size} must divide the {name} head dimension, got {dim}")
            if self.bits == 4 and dim % 2:
                raise ValueError(f"4-bit codes pack two values a byte: the {name} head dimension must be even, got {dim}")

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
        chunks = {name: [tuple(backend.take_rows(a, rows) for a in chunk) for chunk in self.chunks[name]]
                  for name in ("key", "value")}
        residual = {name: backend.take_rows(self.residual[name], rows) for name in ("key", "value")}
        spec = self._spec.with_batch(len(rows))

        def commit() -> None:
            self.chunks, self.residual, self._spec = chunks, residual, spec

        return commit

    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Prepare to keep the most recent ``max_length`` positions; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
        >>> layer.prepare_crop(3)(); layer.length, layer.quantized_length
        (3, 1)
        """
        if not self.written or self.length <= max_length:
            return nothing
        xp = self._spec.backend.xp
        drop, held, quantized = self.length - max_length, self.residual_length_held, self.quantized_length
        cut = max(0, drop - quantized)  # residual positions that go too (its oldest)
        chunks, kept = {}, {}
        for name in ("key", "value"):
            chunks[name], skip = [], drop
            for chunk in self.chunks[name]:
                size = chunk[0].shape[-2]
                if skip < size:
                    chunks[name].append(tuple(xp.asarray(a[..., skip:, :], copy=True) for a in chunk) if skip else chunk)
                skip = max(0, skip - size)
            if cut:  # copied now: it moves to the front of the buffer it is read from
                kept[name] = xp.asarray(self.residual[name][..., cut:held, :], copy=True)

        def commit() -> None:
            for name, recent in kept.items():
                self.residual[name][..., :held - cut, :] = recent
            self.chunks = chunks
            self.residual_length_held = held - cut
            self.quantized_length = max(0, quantized - drop)
            self.length = max_length

        return commit

    def trimmable(self, appended: int = 0) -> int:
        """Positions that drop exactly while the last ``min(length, residual_length)`` stay in
        full precision: every position while none is quantized, else the residual's positions
        past ``residual_length`` (up to ``residual_length - 1`` of them; none right after a
        quantization). Positions already in codes never come back to full precision.
        ``appended``: the same after one more update of that many positions (none if that
        update quantizes).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> _ = layer.update(lucid.randn(1, 1, 3, 4), lucid.randn(1, 1, 3, 4))
        >>> layer.trimmable(), layer.trimmable(appended=1)  # 3 + 1 held: that update quantizes
        (3, 0)
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))  # quantizes 2
        >>> _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))
        >>> layer.quantized_length, layer.trimmable()
        (2, 1)
        """
        held, quantized = (self.residual_length_held, self.quantized_length) if self.written else (0, 0)
        if appended and held + appended >= 2 * self.residual_length:
            return 0
        if not quantized:
            return (self.length if self.written else 0) + appended
        return max(0, held + appended - self.residual_length)

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
        held, length = self.residual_length_held - count, self.length - count

        def commit() -> None:
            self.residual_length_held, self.length = held, length

        return commit

    def arguments(self) -> dict:
        """``{"bits": ..., "group_size": ..., "residual_length": ...}``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.QuantizedLayer(bits=8).arguments()
        {'bits': 8, 'group_size': 64, 'residual_length': 128}
        """
        return {"bits": self.bits, "group_size": self.group_size, "residual_length": self.residual_length}

    def _contents(self) -> tuple[dict, dict]:
        # The chunks' codes, scales and zeros (each concatenated, with the chunk sizes) and the
        # residual, for keys and values.
        xp, held = self._spec.backend.xp, self.residual_length_held
        arrays = {}
        for name in ("key", "value"):
            if self.chunks[name]:
                for i, part in enumerate(("codes", "scales", "zeros")):
                    arrays[f"{name}.{part}"] = xp.concat([c[i] for c in self.chunks[name]], axis=-2)
            arrays[f"{name}.residual"] = self.residual[name][..., :held, :]
        return {"chunks": [chunk[0].shape[-2] for chunk in self.chunks["key"]]}, arrays

    def _restore(self, settings: dict, arrays: dict) -> None:
        residual_k, residual_v = arrays["key.residual"], arrays["value.residual"]
        held, chunks = residual_k.shape[-2], settings["chunks"]
        check_saved(residual_k, residual_v, settings["length"] - sum(chunks), repr(self))
        self._check_saved_codes(arrays, chunks, residual_k, residual_v)
        spec = Spec.of(residual_k, residual_v)
        xp, keep = spec.backend.xp, self.residual_length
        for name, recent, step in (("key", residual_k, spec.step_k), ("value", residual_v, spec.step_v)):
            start = 0
            for size in settings["chunks"]:
                self.chunks[name].append(tuple(
                    xp.asarray(arrays[f"{name}.{part}"][..., start:start + size, :], copy=True)
                    for part in ("codes", "scales", "zeros")))
                start += size
            buffer = xp.empty(step[:-2] + (2 * keep, step[-1]), dtype=spec.dtype)
            buffer[..., :held, :] = recent
            self.residual[name] = buffer
        self.quantized_length = sum(settings["chunks"])
        self.residual_length_held = held
        self._spec, self.length, self.written = spec, settings["length"], True

    def _check_saved_codes(self, arrays: dict, chunks: list, residual_k, residual_v) -> None:
        """``ValueError`` unless the saved codes, scales and zeros fit the chunk sizes and the
        residual's layout, and the residual fits its buffer."""
        if not all(type(size) is int and size > 0 for size in chunks) or residual_k.shape[-2] > 2 * self.residual_length:
            raise ValueError(f"{self!r}: saved chunk sizes {chunks} or residual of {residual_k.shape[-2]} do not fit")
        for name, residual in (("key", residual_k), ("value", residual_v)):
            dim, lead = residual.shape[-1], tuple(residual.shape[:-2])
            if dim % self.group_size or (self.bits == 4 and dim % 2):
                raise ValueError(f"{self!r}: a saved {name} head dimension of {dim} does not fit the groups")
            expected = {"codes": (dim // 2 if self.bits == 4 else dim, None),
                        "scales": (dim // self.group_size, residual.dtype), "zeros": (dim // self.group_size, residual.dtype)}
            for part, (width, dtype) in expected.items():
                array = arrays.get(f"{name}.{part}")
                if not chunks and array is None:
                    continue
                if (array is None or tuple(array.shape) != lead + (sum(chunks), width)
                        or (dtype is not None and array.dtype != dtype)):
                    raise ValueError(f"{self!r}: saved {name} {part} do not match the chunks and the residual")

    def __repr__(self) -> str:
        return (f"QuantizedLayer(bits={self.bits}, group_size={self.group_size}, "
                f"residual_length={self.residual_length}, length={self.length})")
