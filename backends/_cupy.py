"""The CuPy backend (NVIDIA GPUs). Imported only when selected."""
from ._indexing import prepare_fancy_scatter
from .generic import Backend


class CupyBackend(Backend):
    def __init__(self, cupy):
        import array_api_compat.cupy as xp

        super().__init__("cupy", xp, cupy.ndarray, "gpu")
        self._cupy = cupy

    def total_memory(self) -> int:
        return self._cupy.cuda.runtime.memGetInfo()[1]

    def from_host(self, array):
        return self._cupy.asarray(array)

    def to_host(self, array):
        return array.get()

    def from_dlpack(self, obj):
        return self._cupy.from_dlpack(obj)

    def synchronize(self):
        self._cupy.cuda.get_current_stream().synchronize()

    def copy_rows(self, dst, src, rows):
        # One gather kernel instead of a launch per row.
        dst[...] = self._cupy.take(src, self._cupy.asarray(rows), axis=0)

    def matmul_into(self, a, b, out):
        return self._cupy.matmul(a, b, out=out)

    def exp2_shifted(self, x, shift=None):
        if shift is not None:
            self._cupy.subtract(x, shift, out=x)
        return self._cupy.exp2(x, out=x)

    def prepare_scatter(self, buf, values, positions, lo, hi):
        return prepare_fancy_scatter(self._cupy, buf, values, positions)


def gpu_problem() -> str | None:
    """Why CuPy cannot be used here, or ``None`` if it can."""
    try:
        import cupy
    except ImportError as exc:
        return f"cupy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver/runtime errors have many types
        return f"CUDA is not usable ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA device was found"
    return None


def load() -> Backend:
    import cupy

    return CupyBackend(cupy)
