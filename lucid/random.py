"""Seeded random tensors, identical on every backend.

Numbers are drawn on the host by one NumPy generator and then moved to the
target device, so ``manual_seed(s)`` gives the same values on CPU and GPU.
"""
from __future__ import annotations

import numpy as np

from . import dtypes
from .creation import _shape, _target
from .tensor import Tensor

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed lucid's random number generator.

    Examples
    --------
    >>> import lucid
    >>> lucid.manual_seed(7); a = lucid.randn(3)
    >>> lucid.manual_seed(7); b = lucid.randn(3)
    >>> bool((a == b).sum() == 3)
    True
    """
    global _generator
    _generator = np.random.default_rng(seed)


def _random(draw, shape, dtype, device) -> Tensor:
    dtype = dtypes.Float32 if dtype is None else dtype
    if dtype not in (dtypes.Float16, dtypes.Float32, dtypes.Float64):
        raise TypeError(f"random tensors need a floating dtype, got {dtype}")
    host = draw(_shape(shape), np.float64 if dtype is dtypes.Float64 else np.float32)
    backend = _target(device)
    array = backend.from_host(host.astype(dtype.xp_name, copy=False))
    return Tensor.wrap(array, backend)


def randn(*shape, dtype=None, device=None) -> Tensor:
    """Standard-normal samples of the given shape (ints or one tuple).

    Examples
    --------
    >>> import lucid
    >>> lucid.randn(2, 3).shape
    (2, 3)
    """
    return _random(lambda s, d: _generator.standard_normal(s, dtype=d), shape, dtype, device)


def rand(*shape, dtype=None, device=None) -> Tensor:
    """Uniform samples in ``[0, 1)`` of the given shape.

    Examples
    --------
    >>> import lucid
    >>> bool((lucid.rand(100) < 1).sum() == 100)
    True
    """
    return _random(lambda s, d: _generator.random(s, dtype=d), shape, dtype, device)
