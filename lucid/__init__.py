"""lucid: Transformer KV caches over NumPy (CPU) or CuPy (GPU), chosen at run time.

Pick the backend with ``LUCID_BACKEND`` (``numpy`` default, ``cupy``, ``auto``)
or :func:`set_backend` / :func:`use_backend`.
"""
from lucid_backends import BackendError, get_backend, set_backend, use_backend

from .creation import arange, concatenate, empty, full, max, min, ones, stack, where, zeros, zeros_like
from .dtypes import BFloat16, Bool, DType, Float16, Float32, Float64, Int8, Int16, Int32, Int64, UInt8
from .random import manual_seed, rand, randn
from .tensor import Tensor

__version__ = "0.1.0"

__all__ = [
    "BFloat16", "BackendError", "Bool", "DType", "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64",
    "Tensor", "UInt8", "arange", "concatenate", "empty", "full", "get_backend", "manual_seed", "max", "min",
    "ones", "rand", "randn", "set_backend", "stack", "use_backend", "where", "zeros", "zeros_like",
]
