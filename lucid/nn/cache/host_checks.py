"""Validation of small integer arguments (positions, batch indices) on a host copy.

Everything here runs before a cache changes, so a bad argument raises with the
cache untouched.  Work is vectorized over the host array namespace.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import backends

from ...tensor import Tensor

_host = backends.host_backend()
hxp = _host.xp


def host_integers(value, name: str):
    """``value`` (Tensor, backend array, int or list of ints) as a host int64 array.

    Raises ``TypeError`` naming ``name`` for floats, bools and anything else.
    """
    if isinstance(value, Tensor):
        array = value._backend.to_host(value._data)
    elif isinstance(value, bool):
        raise TypeError(f"{name} must hold integers, got the bool {value!r}")
    elif isinstance(value, int):
        array = hxp.asarray(value, dtype=hxp.int64)
    elif isinstance(value, (list, tuple)):
        try:
            array = hxp.asarray(value)
        except ValueError as exc:
            raise ValueError(f"{name} must be a rectangular list of ints ({exc})") from None
        if array.size == 0:
            array = hxp.astype(array, hxp.int64)
    else:
        backend = backends.backend_of(value)
        if backend is None:
            raise TypeError(
                f"{name} must be a lucid.Tensor, a backend array, an int or a list of ints; "
                f"got {type(value).__name__}"
            )
        array = backend.to_host(value)
    if not hxp.isdtype(array.dtype, "integral"):
        raise TypeError(f"{name} must have an integer dtype (e.g. lucid.Int64), got {array.dtype}")
    return hxp.astype(array, hxp.int64, copy=False)


class Positions(NamedTuple):
    """Validated cache positions for one update."""

    host: object  # int64, shape (T,) or (B, T)
    lo: int  # smallest position
    hi: int  # largest position + 1
    contiguous: bool  # 1-D and equal to range(lo, hi): a plain slice write

    def covers(self, start: int) -> bool:
        """Whether every row writes every slot of ``[start, hi)`` (so no gap needs zeroing)."""
        written = hxp.sum(self.host >= start, axis=-1)
        return bool(hxp.all(written == self.hi - start))


def parse_positions(cache_position, n_tokens: int, batch: int) -> Positions:
    """Check ``cache_position`` against an update of ``n_tokens`` tokens and ``batch`` rows."""
    pos = host_integers(cache_position, "cache_position")
    if pos.ndim == 0:
        if n_tokens != 1:
            raise ValueError(
                f"a 0-D cache_position writes one token, but key/value hold {n_tokens} along the "
                "sequence axis; pass a 1-D cache_position of that length"
            )
        pos = hxp.reshape(pos, (1,))
    elif pos.ndim == 1:
        if pos.shape[0] != n_tokens:
            raise ValueError(f"cache_position has shape {tuple(pos.shape)}; expected ({n_tokens},), one per token")
    elif pos.ndim == 2:
        if tuple(pos.shape) != (batch, n_tokens):
            raise ValueError(
                f"2-D cache_position has shape {tuple(pos.shape)}; expected (batch, seq_len) = ({batch}, {n_tokens})"
            )
    else:
        raise ValueError(f"cache_position must have 0, 1 or 2 dimensions, got {pos.ndim}")
    lo = int(hxp.min(pos))
    if lo < 0:
        raise ValueError(f"cache_position must be non-negative, got {lo}")
    ordered = hxp.sort(pos, axis=-1)
    if hxp.any(ordered[..., 1:] == ordered[..., :-1]):
        raise ValueError("cache_position repeats a position within one row; each slot may be written once per update")
    hi = int(hxp.max(pos)) + 1
    contiguous = pos.ndim == 1 and hi - lo == n_tokens and bool(hxp.all(pos[1:] > pos[:-1]))
    return Positions(pos, lo, hi, contiguous)


def parse_batch_indices(indices, name: str, batch: int | None):
    """Check a 1-D list of batch rows; ``batch`` is ``None`` for an empty cache."""
    idx = host_integers(indices, name)
    if idx.ndim != 1 or idx.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of batch rows, got shape {tuple(idx.shape)}")
    low, high = int(hxp.min(idx)), int(hxp.max(idx))
    if low < 0 or (batch is not None and high >= batch):
        bound = f"[0, {batch})" if batch is not None else "non-negative"
        raise ValueError(f"{name} must lie in {bound} (the cache's batch rows), got values from {low} to {high}")
    return idx


def repeat_indices(repeats, batch: int | None):
    """The row indices that repeat each of ``batch`` rows ``repeats`` times (``[a, b] -> [a, a, b, b]``)."""
    count = check_int(repeats, "repeats", minimum=1)
    if batch is None:
        return None
    return hxp.repeat(hxp.arange(batch, dtype=hxp.int64), count)


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum``; bools and floats are rejected."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int >= {minimum}, got the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {number}")
    return number
