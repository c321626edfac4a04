"""The codes a quantized layer keeps, and the tensors that read them back only when asked.

Keys are quantized per channel over groups of ``group_size`` consecutive tokens (each
head-dimension channel of a group has its own scale and zero); values per token over groups of
``group_size`` consecutive head-dimension values. Keys of trained models have a few channels
whose range is many times the others' (KIVI, Liu et al. 2024): a group along a channel never
mixes them with the quiet ones, while a group along a token's head does.

A :class:`Codes` is one immutable snapshot of keys or values (codes, scales, zeros, and the
recent positions still in full precision); a :class:`QuantizedTensor` wraps one as a
:class:`~lucid.Tensor` whose array is built the first time it is read, so that attention
(:func:`~lucid.nn.functional.scaled_dot_product_attention`) can read the codes instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from .lazy_tensor import LazyTensor

#: The largest finite value and the epsilon of each floating dtype a quantized layer stores.
FLOATS = {"float16": (65504.0, 2.0**-10), "bfloat16": (3.3895313892515355e38, 2.0**-7),
          "float32": (3.4028234663852886e38, 2.0**-23), "float64": (1.7976931348623157e308, 2.0**-52)}


def work_dtype(xp, dtype_name: str):
    """The dtype codes are computed and read in: float32 (16-bit arithmetic is slow on CPUs),
    float64 for float64 inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.nn.cache.quantized_codes import work_dtype
    >>> work_dtype(np, "float16")
    <class 'numpy.float32'>
    """
    return xp.float64 if dtype_name == "float64" else xp.float32


# The arithmetic works on halves (x / 2 - min / 2, code * scale / 2 + min / 2, then doubled):
# halving is exact, and it keeps a group that spans a dtype's whole range (-3e38 to 3e38 in
# float32 or bfloat16) from overflowing in max - min or in code * scale.
def quantize(xp, groups, axis: int, bits: int, dtype, dtype_name: str) -> tuple:
    """``(codes, scales, zeros)`` of ``groups``, each group running along ``axis``: uint8
    codes of the groups' shape, and scales and zeros in ``dtype`` with ``axis`` kept (size 1).
    The scale is rounded up to ``dtype``, so that every value stays within half a step of its
    code; the zero is the group's minimum, exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.nn.cache.quantized_codes import quantize
    >>> codes, scales, zeros = quantize(np, np.array([[0.0, 0.75, 3.0]], np.float32), -1, 8, np.float32, "float32")
    >>> codes.tolist(), round(float(scales[0, 0]) * 255, 5), float(zeros[0, 0])
    ([[0, 64, 255]], 3.0, 0.0)
    """
    levels = 2**bits - 1
    work, eps = work_dtype(xp, dtype_name), FLOATS[dtype_name][1]
    halves = xp.astype(groups, work) * 0.5
    low = xp.min(halves, axis=axis, keepdims=True)
    exact = (xp.max(halves, axis=axis, keepdims=True) - low) * (2 / levels)
    scale = xp.astype(xp.astype(exact, dtype), work)
    bumped = xp.astype(xp.astype(exact * (1 + 2 * eps), dtype), work)
    scale = xp.where(scale < exact, bumped, scale)
    safe = xp.where(scale > 0, scale, xp.ones_like(scale)) * 0.5
    codes = xp.astype(xp.clip(xp.round((halves - low) / safe), 0, levels), xp.uint8)
    return codes, xp.astype(scale, dtype), xp.astype(low * 2, dtype)


def pack(xp, codes, bits: int):
    """4-bit codes two to a byte along the last axis: byte ``j`` holds value ``j`` in its low
    half and value ``j + D/2`` in its high half (so that unpacking is one join, not an
    interleave); 8-bit codes as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.nn.cache.quantized_codes import pack, unpack
    >>> packed = pack(np, np.array([1, 2, 3, 4], np.uint8), 4)
    >>> packed.tolist(), unpack(np, packed, 4).tolist()
    ([49, 66], [1, 2, 3, 4])
    """
    if bits == 8:
        return codes
    half = codes.shape[-1] // 2
    return xp.bitwise_or(codes[..., :half], xp.bitwise_left_shift(codes[..., half:], 4))


def unpack(xp, codes, bits: int):
    """The codes :func:`pack` packed, one value per byte."""
    if bits == 8:
        return codes
    return xp.concat([xp.bitwise_and(codes, 15), xp.bitwise_right_shift(codes, 4)], axis=-1)


@dataclass(frozen=True)
class Codes:
    """Keys or values of a quantized layer at one moment, never changed after.

    ``first`` ``(B, H, F, D)`` holds the first positions in full precision (the layer's attention
    sinks); ``codes`` ``(B, H, N, D')`` the ``N`` quantized positions after them (``D' = D / 2``
    for 4 bits), of which the first ``skip`` were cropped away (a crop drops whole key groups
    only); ``recent`` ``(B, H, R, D)`` the positions after those, in full precision. ``per_channel``:
    scales and zeros ``(B, H, N / group_size, D)``, one per channel of each group of tokens
    (keys); otherwise ``(B, H, N, D / group_size)``, one per group of each token's values.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.QuantizedLayer(bits=4, group_size=4, residual_length=2)
    >>> keys, _ = layer.update(lucid.randn(1, 1, 9, 8), lucid.randn(1, 1, 9, 8))
    >>> keys.codes.codes.shape, keys.codes.scales.shape, keys.codes.recent.shape, keys.codes.length
    ((1, 1, 4, 4), (1, 1, 1, 8), (1, 1, 5, 8), 9)
    """

    bits: int
    group_size: int
    per_channel: bool
    codes: object
    scales: object
    zeros: object
    skip: int
    recent: object
    dtype_name: str
    first: object

    @property
    def quantized(self) -> int:
        """Live positions held as codes."""
        return self.codes.shape[-2] - self.skip

    @property
    def length(self) -> int:
        """Every position: the first ones, the codes, then the recent ones."""
        return self.first.shape[-2] + self.quantized + self.recent.shape[-2]

    @property
    def shape(self) -> tuple:
        """The shape of what :meth:`dequantize` returns."""
        return tuple(self.recent.shape[:-2]) + (self.length, self.recent.shape[-1])

    def _stored(self, xp):
        """Every stored position (the cropped ``skip`` included) dequantized, in the work dtype."""
        work = work_dtype(xp, self.dtype_name)
        lead, dim, size, count = tuple(self.recent.shape[:-2]), self.recent.shape[-1], self.group_size, self.codes.shape[-2]
        codes = xp.astype(unpack(xp, self.codes, self.bits), work)
        scales, zeros = (xp.astype(a, work) for a in (self.scales, self.zeros))
        if self.per_channel:  # (B, H, groups, D): a scale per channel of each group of positions
            groups, scales, zeros = xp.reshape(codes, lead + (count // size, size, dim)), scales[..., None, :], zeros[..., None, :]
        else:  # (B, H, positions, D / size): a scale per group of each position's values
            groups, scales, zeros = xp.reshape(codes, lead + (count, dim // size, size)), scales[..., None], zeros[..., None]
        largest = FLOATS[self.dtype_name][0]
        reach = float(xp.max(xp.abs(zeros))) + (2**self.bits - 1) * float(xp.max(scales))
        if reach < largest / 2:  # the usual case: nothing comes near the dtype's largest value
            return xp.reshape(groups * scales + zeros, lead + (count, dim))
        values = (groups * (scales * 0.5) + zeros * 0.5) * 2
        # A rounded-up scale may step just past the dtype's range: clip before the cast.
        return xp.clip(xp.reshape(values, lead + (count, dim)), -largest, largest)

    def dequantize(self, xp):
        """Every position in full precision, in the stored dtype: a new array.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
        >>> keys, _ = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
        >>> keys.codes.dequantize(lucid.get_backend().xp).shape
        (1, 1, 9, 4)
        """
        parts = [self.first] if self.first.shape[-2] else []
        if self.codes.shape[-2]:
            parts.append(xp.astype(self._stored(xp)[..., self.skip:, :], self.recent.dtype))
        if self.recent.shape[-2] or not parts:
            parts.append(self.recent)
        return xp.concat(parts, axis=-2) if len(parts) > 1 else xp.asarray(parts[0], copy=True)


class QuantizedTensor(LazyTensor):
    """A :class:`~lucid.Tensor` of keys or values held as :class:`Codes`: its array (a new one,
    in full precision) is built the first time something reads it, and kept.
    :func:`~lucid.nn.functional.scaled_dot_product_attention` reads the codes instead.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)
    >>> keys, _ = layer.update(lucid.randn(1, 1, 9, 4), lucid.randn(1, 1, 9, 4))
    >>> type(keys).__name__, keys.shape, keys.dtype, keys.numpy().shape
    ('QuantizedTensor', (1, 1, 9, 4), Float32, (1, 1, 9, 4))
    """

    __slots__ = ("codes",)

    def __init__(self, codes: Codes, backend):
        self.codes = codes
        self.backend = backend

    def _build(self):
        return self.codes.dequantize(self.backend.xp)

    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each axis (read without building the array)."""
        return self.codes.shape

    @property
    def _stored_dtype(self):
        return self.codes.recent.dtype
