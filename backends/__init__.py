"""The array-namespace layer under lucid: picks NumPy or CuPy and fills the array API's gaps.

Select with the environment variable ``LUCID_BACKEND`` (``numpy``, the default;
``cupy``; or ``auto``, CuPy when a CUDA device is usable) or in code with
:func:`set_backend` / :func:`use_backend`.  CuPy is imported only when selected.
This package knows nothing of :mod:`lucid`.
"""
from .generic import Backend
from .selection import (
    ENV_VAR,
    BackendError,
    backend_for_device,
    backend_of,
    get_backend,
    gpu_problem,
    host_backend,
    load_backend,
    set_backend,
    use_backend,
)

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendError",
    "backend_for_device",
    "backend_of",
    "get_backend",
    "gpu_problem",
    "host_backend",
    "load_backend",
    "set_backend",
    "use_backend",
]
