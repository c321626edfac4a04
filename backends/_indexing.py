"""Integer-array scatter for libraries with NumPy-style advanced indexing (NumPy, CuPy)."""
from typing import Callable


def prepare_fancy_scatter(xp, buf, values, positions) -> Callable[[], None]:
    """The write of ``values`` into ``buf`` at ``positions`` along axis -2, in place, ready to run.

    ``positions`` is ``(T,)`` (shared by all batch rows) or ``(B, T)``. The index arrays are
    built here; the returned call only assigns (advanced-index assignment works in place, with
    buffers of a few kilobytes).
    """
    if positions.ndim == 1:
        def write() -> None:
            buf[..., positions, :] = values
        return write
    rows = xp.reshape(xp.arange(positions.shape[0]), (-1, 1))
    # Two advanced indices split by slices put their broadcast shape (B, T)
    # first, so the tokens are laid out as (B, T, ..., D) for the assignment.
    tokens = xp.moveaxis(values, -2, 1)

    def write() -> None:
        buf[rows, ..., positions, :] = tokens
    return write
