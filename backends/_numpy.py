"""The NumPy backend (CPU, always available)."""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _numpy_xp as xp
from ._indexing import prepare_fancy_scatter
from .generic import Backend


class NumpyBackend(Backend):
    def __init__(self):
        super().__init__("numpy", xp, np.ndarray, "cpu")

    def dtype(self, name: str):
        if name == "bfloat16":  # NumPy has none of its own; ml_dtypes provides it
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return super().dtype(name)

    def from_host(self, array):
        return array

    def matmul_dtype(self, dtype):
        # float16 products run in C loops, about 15x slower than float32's BLAS here
        return np.dtype(np.float32) if dtype == np.float16 else dtype

    def to_host(self, array):
        return array

    def from_dlpack(self, obj):
        return np.from_dlpack(obj)

    def threads(self):
        return _threads_wanted()

    def map_blocks(self, fn, blocks):
        # NumPy runs one operation on one core, but releases the GIL inside it: threads give
        # each core its own block. BLAS runs one thread per call meanwhile, so that the cores
        # are not oversubscribed (a BLAS call spreading over every core from every thread).
        # A block that maps blocks of its own runs them itself: waiting on the pool from
        # inside it could leave every worker waiting.
        blocks = list(blocks)
        pool = _pool() if len(blocks) > 1 and not getattr(_worker, "in_pool", False) else None
        if pool is None:
            return [fn(block) for block in blocks]
        with _one_blas_thread():
            return list(pool.map(fn, blocks))

    def parallel_region(self):
        if _pool() is None:
            return super().parallel_region()
        return _one_blas_thread()

    def take_rows(self, src, rows):
        # Fancy indexing reads a strided source in place; np.take copies it contiguous first.
        return src[np.asarray(rows)]

    def matmul_into(self, a, b, out):
        return np.matmul(a, b, out=out)

    def exp2_shifted(self, x, shift=None):
        if shift is not None:
            np.subtract(x, shift, out=x)
        if _EXP2_VIA_EXP and x.dtype == np.float32:  # AVX-512 CPUs stop at the flag
            return np.exp(np.multiply(x, _LN2, out=x), out=x)
        return np.exp2(x, out=x)

    def exp_negated(self, x):
        if x.dtype == np.float32 and not _EXP2_VIA_EXP:  # exp2 is the vectorised one (AVX-512)
            scaled = np.multiply(x, -_LOG2_E)
            return np.exp2(scaled, out=scaled)
        negated = np.negative(x)
        return np.exp(negated, out=negated)

    def prepare_scatter(self, buf, values, positions, lo, hi):
        return prepare_fancy_scatter(np, buf, values, positions)


def _exp2_via_exp() -> bool:
    """Whether float32 ``2 ** x`` is faster as ``exp(x * ln 2)`` on this CPU: NumPy vectorises
    ``exp2`` for AVX-512 only and ``exp`` for AVX2 as well, so on an AVX2 machine ``exp2`` runs
    scalar code (about twice ``exp``'s time: 17% of a SmolLM2 prefill there). NumPy's own
    report of the code each function runs decides (``numpy.lib.introspect``, NumPy 2.0 on)."""
    try:
        from numpy.lib.introspect import opt_func_info
    except ImportError:
        return False
    chosen = opt_func_info(func_name="^exp2?$", signature="float32")
    targets = {name: next(iter(loops.values()))["current"] for name, loops in chosen.items() if loops}
    return "baseline" in targets.get("exp2", "") and "baseline" not in targets.get("exp", "baseline")


_EXP2_VIA_EXP = _exp2_via_exp()
_LN2 = np.float32(np.log(2.0))
_LOG2_E = np.float32(1.0 / np.log(2.0))
_lazy = {}
_lazy_lock = threading.Lock()
_worker = threading.local()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: it makes its own pool when it needs one."""
    global _lazy_lock
    _lazy.clear()
    _lazy_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _mark_worker() -> None:
    _worker.in_pool = True


def _pool():
    """One thread per core (or ``LUCID_NUM_THREADS``), shared and made on first use; ``None``
    for a single thread."""
    with _lazy_lock:
        if "pool" not in _lazy:
            threads = _threads_wanted()
            _lazy["pool"] = (ThreadPoolExecutor(threads, thread_name_prefix="lucid-blocks", initializer=_mark_worker)
                             if threads > 1 else None)
        return _lazy["pool"]


def _threads_wanted() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    setting = os.environ.get("LUCID_NUM_THREADS", "").strip()
    if not setting:
        return cores
    if not setting.isdigit() or int(setting) < 1:
        raise ValueError(f"LUCID_NUM_THREADS must be a whole number of threads >= 1 (1: no worker threads), "
                         f"got {setting!r}")
    return int(setting)


def _one_blas_thread():
    """The process's one-BLAS-thread context (made on first use)."""
    with _lazy_lock:
        if "blas" not in _lazy:
            _lazy["blas"] = _OneBlasThread()
        return _lazy["blas"]


class _OneBlasThread:
    """BLAS at one thread per call while anyone is inside; counted, so that callers in several
    threads whose stays overlap restore the setting once, when the last one leaves (nested
    threadpoolctl limits would each restore what they found, the first to leave too early)."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController()
        self._lock = threading.Lock()
        self._inside = 0
        self._limit = None

    def __enter__(self):
        with self._lock:
            if self._inside == 0:
                self._limit = self._controller.limit(limits=1, user_api="blas")
            self._inside += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._limit.restore_original_limits()


def load() -> Backend:
    return NumpyBackend()
