"""Checking the arguments of cache calls (positions, layer indices, batch rows) on the host.

Everything here runs before a cache changes, so a bad argument raises with the cache
untouched. Wrong type: ``TypeError``; wrong value: ``ValueError``; both name the argument,
what was expected and what arrived. Python ints, NumPy integer scalars, lists, ranges, host
arrays and integer tensors are accepted wherever the contract says "int" or "positions".
"""
from __future__ import annotations

from typing import NamedTuple

import lucid_backends

from ...tensor import Tensor
from ...validation import check_int

_host = lucid_backends.host_backend()
hxp = _host.xp
_HOST_ARRAY = _host.array_type

# Caches hold at most this many layers: a bound that no model comes near, so that a typo
# such as layer_idx=2**40 is a clear ValueError instead of an attempt to build 2**40 layers.
MAX_LAYERS = 1 << 16


def check_layer_idx(layer_idx, num_layers: int | None = None) -> int:
    """A valid ``layer_idx``: a non-negative int, below ``num_layers`` when the cache has a fixed count.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import check_layer_idx
    >>> check_layer_idx(3)
    3
    """
    if num_layers is not None:
        layer_idx = check_int(layer_idx, "layer_idx")
        if layer_idx >= num_layers:
            raise ValueError(f"layer_idx must be < num_layers={num_layers}, got {layer_idx}")
        return layer_idx
    return check_int(layer_idx, "layer_idx", maximum=MAX_LAYERS - 1)


def host_integers(value, name: str):
    """``value`` (tensor, backend array, int or nested list of ints) as a host int64 array.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import host_integers
    >>> host_integers([[1, 2]], "cache_position").shape
    (1, 2)
    """
    if isinstance(value, Tensor):
        array = value.backend.to_host(value.array)
    elif isinstance(value, (list, tuple, range)):
        try:
            array = hxp.asarray(value)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"{name} must be a rectangular list of ints in the int64 range ({exc})") from None
        if array.dtype == object:  # ints past int64 (NumPy keeps them as Python objects)
            raise ValueError(f"{name} must hold ints in the int64 range, got values past it")
        if array.size == 0:
            array = hxp.astype(array, hxp.int64)
    elif lucid_backends.backend_of(value) is not None:
        array = lucid_backends.backend_of(value).to_host(value)
    else:
        array = hxp.asarray(check_int(value, name, minimum=-(2**63), maximum=2**63 - 1), dtype=hxp.int64)
    if not hxp.isdtype(array.dtype, "integral"):
        raise TypeError(f"{name} must hold integers (any int dtype), got {array.dtype}")
    return hxp.astype(array, hxp.int64, copy=False)


def is_next(cache_position, start: int, n_tokens: int) -> bool:
    """Whether ``cache_position`` is exactly ``[start, start + n_tokens)`` in a host form.

    The fast test for the append path: an int, list, range, host array or host tensor of
    those positions answers ``True`` without sorting, copying to the host or building error
    messages. ``False`` means only "take the checked path", which validates everything.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import is_next
    >>> is_next([7], 7, 1), is_next(range(3, 5), 3, 2), is_next([8], 7, 1)
    (True, True, False)
    """
    kind = type(cache_position)
    if kind is list:
        if n_tokens == 1:
            return len(cache_position) == 1 and type(cache_position[0]) is int and cache_position[0] == start
        return (len(cache_position) == n_tokens and all(type(p) is int for p in cache_position)
                and cache_position == list(range(start, start + n_tokens)))
    if kind is int:
        return n_tokens == 1 and cache_position == start
    if kind is range:
        return cache_position == range(start, start + n_tokens)
    if kind is Tensor:
        if cache_position.backend is not _host:
            return False
        cache_position = cache_position.array
        kind = type(cache_position)
    if kind is _HOST_ARRAY and cache_position.ndim <= 1 and cache_position.size == n_tokens \
            and hxp.isdtype(cache_position.dtype, "integral"):
        if n_tokens == 1:
            return int(hxp.reshape(cache_position, (1,))[0]) == start
        return bool(hxp.all(cache_position == hxp.arange(start, start + n_tokens)))
    return False


def classify_positions(cache_position, length: int, n_tokens: int, batch: int) -> "Positions | None":
    """The one decision every layer makes about ``cache_position``: ``None`` when the update
    of ``n_tokens`` tokens goes to exactly the next positions ``[length, length + n_tokens)``
    (an append, in any accepted form), else the validated :class:`Positions` to scatter to.
    Malformed positions raise as :func:`parse_positions` says.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import classify_positions
    >>> classify_positions(None, 4, 2, batch=1) is None, classify_positions([4, 5], 4, 2, batch=1) is None
    (True, True)
    >>> classify_positions([9], 4, 1, batch=1).lo
    9
    """
    if cache_position is None or is_next(cache_position, length, n_tokens):
        return None
    pos = parse_positions(cache_position, n_tokens, batch)
    return None if pos.contiguous and pos.lo == length else pos


def check_append(cache_position, start: int, n_tokens: int, batch: int, layer_kind: str) -> None:
    """For layers that only append: ``cache_position`` must be ``None`` or exactly the next
    positions ``[start, start + n_tokens)`` in any accepted form; raises otherwise.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import check_append
    >>> check_append([4, 5], 4, 2, batch=1, layer_kind="a sliding-window layer")
    """
    pos = classify_positions(cache_position, start, n_tokens, batch)
    if pos is not None:
        raise ValueError(
            f"{layer_kind} only appends: cache_position must be the next positions "
            f"[{start}, {start + n_tokens}), got positions from {pos.lo} to {pos.hi - 1}"
        )


class Positions(NamedTuple):
    """Validated cache positions of one update (see :func:`parse_positions`)."""

    host: object  # int64, shape (T,) or (B, T)
    lo: int  # smallest position
    hi: int  # largest position + 1
    contiguous: bool  # equal to range(lo, hi) for every row: a plain slice write

    def covers(self, start: int) -> bool:
        """Whether every row writes every slot of ``[start, hi)`` (so no gap needs zeroing)."""
        written = hxp.sum(self.host >= start, axis=-1)
        return bool(hxp.all(written == self.hi - start))


def parse_positions(cache_position, n_tokens: int, batch: int) -> Positions:
    """Check ``cache_position`` against an update of ``n_tokens`` tokens and ``batch`` rows.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import parse_positions
    >>> p = parse_positions([[4, 2], [4, 2]], n_tokens=2, batch=2)
    >>> p.host.tolist(), p.lo, p.hi
    ([4, 2], 2, 5)
    """
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
        if bool(hxp.all(pos == pos[:1, :])):
            pos = pos[0, :]  # every row the same: one shared row, which may be a plain slice
    else:
        raise ValueError(f"cache_position must have 0, 1 or 2 dimensions, got {pos.ndim}")
    lo = int(hxp.min(pos))
    if lo < 0:
        raise ValueError(f"cache_position must be non-negative, got {lo}")
    ordered = hxp.sort(pos, axis=-1)
    if bool(hxp.any(ordered[..., 1:] == ordered[..., :-1])):
        raise ValueError("cache_position repeats a position within one row; each slot may be written once per update")
    hi = int(hxp.max(pos)) + 1
    contiguous = pos.ndim == 1 and hi - lo == n_tokens and bool(hxp.all(pos[1:] > pos[:-1]))
    return Positions(pos, lo, hi, contiguous)


def parse_batch_indices(indices, name: str, batch: int | None):
    """Check a non-empty 1-D list of batch rows in ``[0, batch)``; ``batch`` is ``None`` for an empty cache.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import parse_batch_indices
    >>> parse_batch_indices([1, 0, 1], "beam_idx", batch=2).tolist()
    [1, 0, 1]
    """
    idx = host_integers(indices, name)
    if idx.ndim != 1 or idx.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of batch rows, got shape {tuple(idx.shape)}")
    low, high = int(hxp.min(idx)), int(hxp.max(idx))
    if low < 0 or (batch is not None and high >= batch):
        bound = f"[0, {batch})" if batch is not None else "non-negative"
        raise ValueError(f"{name} must lie in {bound} (the cache's batch rows), got values from {low} to {high}")
    return idx


def repeat_indices(repeats: int, batch: int):
    """The rows that repeat each of ``batch`` rows ``repeats`` times: ``[a, b] -> [a, a, b, b]``.

    Examples
    --------
    >>> from lucid.nn.cache.arguments import repeat_indices
    >>> repeat_indices(2, 2).tolist()
    [0, 0, 1, 1]
    """
    return hxp.repeat(hxp.arange(batch, dtype=hxp.int64), repeats)
