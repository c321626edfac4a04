"""Functions that create or combine tensors on the active backend."""
from __future__ import annotations

import lucid_backends

from . import dtypes
from .tensor import Tensor


def _shape(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"shape must be non-negative ints, got {shape!r}")
    return tuple(shape)


def _target(device):
    return lucid_backends.get_backend() if device is None else lucid_backends.backend_for_device(device)


def _make(fn_name, shape, dtype, device, default=dtypes.Float32, **kw) -> Tensor:
    backend = _target(device)
    xp = backend.xp
    array = getattr(xp, fn_name)(_shape(shape), dtype=dtypes.to_backend(backend, dtype or default), **kw)
    return Tensor.wrap(array, backend)


def zeros(*shape, dtype=None, device=None) -> Tensor:
    """A tensor of zeros.

    Examples
    --------
    >>> import lucid
    >>> lucid.zeros(2, 2).tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """
    return _make("zeros", shape, dtype, device)


def ones(*shape, dtype=None, device=None) -> Tensor:
    """A tensor of ones.

    Examples
    --------
    >>> import lucid
    >>> lucid.ones(3, dtype=lucid.Int32).tolist()
    [1, 1, 1]
    """
    return _make("ones", shape, dtype, device)


def empty(*shape, dtype=None, device=None) -> Tensor:
    """An uninitialised tensor (contents are arbitrary).

    Examples
    --------
    >>> import lucid
    >>> lucid.empty(4, 2).shape
    (4, 2)
    """
    return _make("empty", shape, dtype, device)


def full(shape, fill_value, dtype=None, device=None) -> Tensor:
    """A tensor filled with ``fill_value``; the dtype follows the value unless given.

    Examples
    --------
    >>> import lucid
    >>> lucid.full((2,), 7).tolist()
    [7, 7]
    """
    if dtype is None:
        dtype = dtypes.Bool if isinstance(fill_value, bool) else dtypes.Int64 if isinstance(fill_value, int) else dtypes.Float32
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _make("full", (shape,), dtype, device, fill_value=fill_value)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Evenly spaced values in ``[start, stop)``.

    Examples
    --------
    >>> import lucid
    >>> lucid.arange(4).tolist()
    [0, 1, 2, 3]
    """
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        all_int = all(isinstance(v, int) for v in (start, stop, step))
        dtype = dtypes.Int64 if all_int else dtypes.Float32
    backend = _target(device)
    xp = backend.xp
    return Tensor.wrap(xp.arange(start, stop, step, dtype=dtypes.to_backend(backend, dtype)), backend)


def zeros_like(x: Tensor, dtype=None) -> Tensor:
    """Zeros with the shape, device and (unless given) dtype of ``x``.

    Examples
    --------
    >>> import lucid
    >>> lucid.zeros_like(lucid.ones(2, dtype=lucid.Int8)).dtype
    Int8
    """
    return zeros(x.shape, dtype=dtype or x.dtype, device=x.device)


def _arrays(tensors, what):
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{what} needs at least one tensor")
    first = tensors[0]
    return first, [first.as_operand(t) for t in tensors]


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis.

    Examples
    --------
    >>> import lucid
    >>> lucid.concatenate([lucid.ones(2), lucid.zeros(1)]).tolist()
    [1.0, 1.0, 0.0]
    """
    first, arrays = _arrays(tensors, "concatenate")
    return first.with_array(first.backend.xp.concat(arrays, axis=axis))


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis.

    Examples
    --------
    >>> import lucid
    >>> lucid.stack([lucid.ones(2), lucid.zeros(2)]).shape
    (2, 2)
    """
    first, arrays = _arrays(tensors, "stack")
    return first.with_array(first.backend.xp.stack(arrays, axis=axis))


def where(condition, x, y) -> Tensor:
    """Elements of ``x`` where ``condition`` holds, else of ``y``.

    Examples
    --------
    >>> import lucid
    >>> lucid.where(lucid.Tensor([True, False]), 1.0, 0.0).tolist()
    [1.0, 0.0]
    """
    cond = condition if isinstance(condition, Tensor) else Tensor(condition)
    return cond.with_array(cond.backend.xp.where(cond.array, cond.as_operand(x), cond.as_operand(y)))


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors the array API
    """Maximum of ``x`` over ``axis``.

    Examples
    --------
    >>> import lucid
    >>> lucid.max(lucid.Tensor([1, 5, 2])).item()
    5
    """
    return Tensor(x).max(axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors the array API
    """Minimum of ``x`` over ``axis``.

    Examples
    --------
    >>> import lucid
    >>> lucid.min(lucid.Tensor([1, 5, 2])).item()
    1
    """
    return Tensor(x).min(axis=axis, keepdims=keepdims)
