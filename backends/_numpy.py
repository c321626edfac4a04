"""The NumPy backend (CPU, always available)."""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import array_api_compat.numpy as xp
import numpy as np

from ._indexing import fancy_scatter
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

    def to_host(self, array):
        return array

    def from_dlpack(self, obj):
        return np.from_dlpack(obj)

    def map_blocks(self, fn, blocks):
        # NumPy runs one operation on one core, but releases the GIL inside it: threads give
        # each core its own block. BLAS runs one thread per call meanwhile, so that the cores
        # are not oversubscribed (a BLAS call spreading over every core from every thread).
        blocks = list(blocks)
        pool = _pool() if len(blocks) > 1 else None
        if pool is None:
            return [fn(block) for block in blocks]
        with _blas_threads().limit(limits=1, user_api="blas"):
            return list(pool.map(fn, blocks))

    def parallel_region(self):
        if _pool() is None:
            return super().parallel_region()
        return _blas_threads().limit(limits=1, user_api="blas")

    def take_rows(self, src, rows):
        # Fancy indexing reads a strided source in place; np.take copies it contiguous first.
        return src[np.asarray(rows)]

    def exp_shifted(self, x, shift):
        np.subtract(x, shift, out=x)
        return np.exp(x, out=x)

    def scatter(self, buf, values, positions, lo, hi):
        fancy_scatter(np, buf, values, positions)


_lazy = {}
_lazy_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: it makes its own pool when it needs one."""
    global _lazy_lock
    _lazy.clear()
    _lazy_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _pool():
    """One thread per core, shared and made on first use; ``None`` on a single core."""
    with _lazy_lock:
        if "pool" not in _lazy:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            _lazy["pool"] = ThreadPoolExecutor(cores, thread_name_prefix="lucid-blocks") if cores > 1 else None
        return _lazy["pool"]


def _blas_threads():
    """threadpoolctl's view of the BLAS libraries loaded in this process (found once)."""
    with _lazy_lock:
        if "blas" not in _lazy:
            from threadpoolctl import ThreadpoolController

            _lazy["blas"] = ThreadpoolController()
        return _lazy["blas"]


def load() -> Backend:
    return NumpyBackend()
