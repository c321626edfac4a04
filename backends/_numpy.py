"""The NumPy backend (CPU, always available)."""
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

    def take_rows(self, src, rows):
        # Fancy indexing reads a strided source in place; np.take copies it contiguous first.
        return src[np.asarray(rows)]

    def exp_shifted(self, x, shift):
        np.subtract(x, shift, out=x)
        return np.exp(x, out=x)

    def scatter(self, buf, values, positions, lo, hi):
        fancy_scatter(np, buf, values, positions)


def load() -> Backend:
    return NumpyBackend()
