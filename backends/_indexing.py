"""Integer-array scatter for libraries with NumPy-style advanced indexing (NumPy, CuPy)."""


def fancy_scatter(xp, buf, values, positions) -> None:
    """Write ``values`` into ``buf`` at ``positions`` along axis -2, in place.

    ``positions`` is ``(T,)`` (shared by all batch rows) or ``(B, T)``.
    """
    if positions.ndim == 1:
        buf[..., positions, :] = values
        return
    rows = xp.reshape(xp.arange(positions.shape[0]), (-1, 1))
    # Two advanced indices split by slices put their broadcast shape (B, T)
    # first, so the tokens are laid out as (B, T, ..., D) for the assignment.
    buf[rows, ..., positions, :] = xp.moveaxis(values, -2, 1)
