"""Which backend is active: the registry, ``LUCID_BACKEND`` and the programmatic switch."""
from __future__ import annotations

import contextlib
import copyreg
import contextvars
import importlib
import os
from typing import Iterator

from .generic import Backend

ENV_VAR = "LUCID_BACKEND"
# name -> module (relative to this package) with a ``load()`` returning a Backend
_REGISTRY = {"numpy": "._numpy", "cupy": "._cupy", "array_api_strict": "._strict"}
_loaded: dict[str, Backend] = {}
# The process-wide default (set_backend, or LUCID_BACKEND on first use) ...
_default: Backend | None = None
# ... and the use_backend blocks open in this thread / async task, innermost last. Each entry is
# (a token object, backend); a block removes its own entry when it exits, so blocks exited in
# any order leave exactly the still-open ones in force.
_blocks: contextvars.ContextVar[tuple] = contextvars.ContextVar("lucid_backend_blocks", default=())


class BackendError(ValueError):
    """The requested backend is unknown or cannot run on this machine.

    Examples
    --------
    >>> import lucid_backends
    >>> try:
    ...     lucid_backends.load_backend("tpu")
    ... except lucid_backends.BackendError as error:
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
    >>> from lucid_backends import load_backend
    >>> load_backend("numpy").device
    'cpu'
    """
    resolved = _resolve(name, source)
    if resolved not in _loaded:
        module = importlib.import_module(_REGISTRY[resolved], __package__)
        backend = module.load()
        copyreg.pickle(type(backend), _by_name)  # pickle and deepcopy a backend as its name
        _loaded[resolved] = backend
    return _loaded[resolved]


def _by_name(backend: Backend) -> tuple:
    """How pickle and ``copy`` rebuild a backend: loaded again by name (the same object)."""
    return load_backend, (backend.name,)


def get_backend() -> Backend:
    """Return the active backend: the innermost open :func:`use_backend` block, else the default.

    The default is what :func:`set_backend` chose, or ``LUCID_BACKEND`` read on first use
    (``numpy`` when unset).

    Examples
    --------
    >>> import lucid_backends
    >>> lucid_backends.get_backend().name in ("numpy", "cupy", "array_api_strict")
    True
    """
    blocks = _blocks.get()
    if blocks:
        return blocks[-1][1]
    global _default
    if _default is None:
        _default = load_backend(os.environ.get(ENV_VAR, "numpy") or "numpy", ENV_VAR)
    return _default


def set_backend(name: str) -> Backend:
    """Make ``name`` the process-wide default backend for arrays created from now on; return it.

    Every thread and async task uses the default unless it is inside a :func:`use_backend`
    block, which takes precedence there.

    Examples
    --------
    >>> import lucid_backends
    >>> lucid_backends.set_backend("numpy").name
    'numpy'
    """
    global _default
    _default = load_backend(name)
    return _default


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Switch the active backend inside a ``with`` block, for this thread or async task only.

    The switch lives in a :mod:`contextvars` variable: other threads and tasks keep theirs, and
    blocks exited out of order (an async generator, an ``ExitStack``) each remove only their
    own switch.

    Examples
    --------
    >>> import lucid_backends
    >>> with lucid_backends.use_backend("numpy") as b:
    ...     print(b.name)
    numpy
    """
    backend = load_backend(name)
    entry = (object(), backend)
    _blocks.set(_blocks.get() + (entry,))
    try:
        yield backend
    finally:
        _blocks.set(tuple(e for e in _blocks.get() if e is not entry))


def host_backend() -> Backend:
    """The NumPy backend, used for small host-side work such as validating positions.

    Examples
    --------
    >>> import lucid_backends
    >>> lucid_backends.host_backend().name
    'numpy'
    """
    return load_backend("numpy")


def backend_of(array) -> Backend | None:
    """The loaded backend whose arrays have ``array``'s exact type, or ``None``.

    Examples
    --------
    >>> import numpy as np, lucid_backends
    >>> lucid_backends.backend_of(np.zeros(2)).name
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


def gpu_problem() -> str | None:
    """Why the CuPy backend cannot run here (CuPy missing, no usable CUDA device), or ``None``.

    Checks without selecting anything; tests and benchmarks use it to skip GPU cases.

    Examples
    --------
    >>> import lucid_backends
    >>> isinstance(lucid_backends.gpu_problem(), (str, type(None)))
    True
    """
    from ._cupy import gpu_problem as problem

    return problem()


def backend_for_device(device: str) -> Backend:
    """The backend that keeps arrays on ``device`` (``"cpu"`` or ``"gpu"``).

    The active backend wins when it lives on that device; otherwise ``"cpu"``
    means NumPy and ``"gpu"`` means CuPy.

    Examples
    --------
    >>> import lucid_backends
    >>> lucid_backends.backend_for_device("cpu").device
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
