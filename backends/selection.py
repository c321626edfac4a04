"""Which backend is active: the registry, ``LUCID_BACKEND`` and the programmatic switch."""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Iterator

from .generic import Backend

ENV_VAR = "LUCID_BACKEND"
# name -> module (relative to this package) with a ``load()`` returning a Backend
_REGISTRY = {"numpy": "._numpy", "cupy": "._cupy", "array_api_strict": "._strict"}
_loaded: dict[str, Backend] = {}
_active: Backend | None = None


class BackendError(ValueError):
    """The requested backend is unknown or cannot run on this machine.

    Examples
    --------
    >>> import backends
    >>> try:
    ...     backends.load_backend("tpu")
    ... except backends.BackendError as error:
    ...     print("not a known backend" in str(error))
    True
    """


def _resolve(name: str, source: str) -> str:
    name = name.strip().lower().replace("-", "_")
    if name == "auto":
        from ._cupy import gpu_problem

        return "cupy" if gpu_problem() is None else "numpy"
    if name not in _REGISTRY:
        choices = ", ".join(["auto", *_REGISTRY])
        raise BackendError(f"{source}={name!r} is not a known backend; use one of: {choices}.")
    if name == "cupy":
        from ._cupy import gpu_problem

        problem = gpu_problem()
        if problem is not None:
            raise BackendError(
                f"{source}='cupy' was asked for, but {problem}. Install CuPy for your CUDA "
                "version (pip install 'lucid-kv[cuda12]' or 'lucid-kv[cuda13]') on a machine "
                f"with an NVIDIA GPU, or use {ENV_VAR}=numpy / {ENV_VAR}=auto."
            )
    return name


def load_backend(name: str, source: str = "backend") -> Backend:
    """Return the backend called ``name`` (``numpy``, ``cupy``, ``array_api_strict`` or ``auto``).

    Examples
    --------
    >>> from backends import load_backend
    >>> load_backend("numpy").device
    'cpu'
    """
    resolved = _resolve(name, source)
    if resolved not in _loaded:
        module = importlib.import_module(_REGISTRY[resolved], __package__)
        _loaded[resolved] = module.load()
    return _loaded[resolved]


def get_backend() -> Backend:
    """Return the active backend, reading ``LUCID_BACKEND`` on first use (default ``numpy``).

    Examples
    --------
    >>> import backends
    >>> backends.get_backend().name in ("numpy", "cupy", "array_api_strict")
    True
    """
    global _active
    if _active is None:
        _active = load_backend(os.environ.get(ENV_VAR, "numpy") or "numpy", ENV_VAR)
    return _active


def set_backend(name: str) -> Backend:
    """Make ``name`` the active backend for arrays created from now on; return it.

    Examples
    --------
    >>> import backends
    >>> backends.set_backend("numpy").name
    'numpy'
    """
    global _active
    _active = load_backend(name)
    return _active


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Temporarily switch the active backend inside a ``with`` block.

    Examples
    --------
    >>> import backends
    >>> with backends.use_backend("numpy") as b:
    ...     print(b.name)
    numpy
    """
    global _active
    previous = _active
    _active = load_backend(name)
    try:
        yield _active
    finally:
        _active = previous


def host_backend() -> Backend:
    """The NumPy backend, used for small host-side work such as validating positions.

    Examples
    --------
    >>> import backends
    >>> backends.host_backend().name
    'numpy'
    """
    return load_backend("numpy")


def backend_of(array) -> Backend | None:
    """The loaded backend whose arrays have ``array``'s exact type, or ``None``.

    Examples
    --------
    >>> import numpy as np, backends
    >>> backends.backend_of(np.zeros(2)).name
    'numpy'
    """
    kind = type(array)
    for backend in _loaded.values():
        if backend.array_type is kind:
            return backend
    if kind.__module__.split(".")[0] == "numpy":
        backend = load_backend("numpy")
        return backend if backend.array_type is kind else None
    return None


def backend_for_device(device: str) -> Backend:
    """The backend that keeps arrays on ``device`` (``"cpu"`` or ``"gpu"``).

    The active backend wins when it lives on that device; otherwise ``"cpu"``
    means NumPy and ``"gpu"`` means CuPy.

    Examples
    --------
    >>> import backends
    >>> backends.backend_for_device("cpu").device
    'cpu'
    """
    active = get_backend()
    if device == active.device:
        return active
    if device == "cpu":
        return load_backend("numpy")
    if device == "gpu":
        return load_backend("cupy", "device")
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
