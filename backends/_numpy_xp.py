"""The array namespace the NumPy backend hands out: array-api-compat's NumPy namespace, with
the functions a model calls many times per decode step (layout, ``max`` and ``sum``,
``empty``) bound to NumPy's own methods and constructor.

array-api-compat's wrappers for these check and forward their arguments in Python, several
times the cost of NumPy's method for a small array; a decode step of a small model makes
about a hundred such calls. Each override keeps the array API's meaning and hands anything
it does not cover to array-api-compat.
"""
import array_api_compat.numpy as _compat
from numpy import empty as _np_empty
from array_api_compat.numpy import *  # noqa: F401,F403 - everything else as array-api-compat has it


def reshape(x, /, shape, *, copy=None):
    """``x`` in ``shape``: a view where the layout allows, a copy otherwise (``copy=None``).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.reshape(xp.arange(6), (2, 3)).shape
    (2, 3)
    """
    if copy is None:
        return x.reshape(shape)
    return _compat.reshape(x, shape, copy=copy)


def permute_dims(x, /, axes):
    """``x`` with its axes in the order ``axes`` (a view).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.permute_dims(xp.zeros((2, 3, 4)), (2, 0, 1)).shape
    (4, 2, 3)
    """
    return x.transpose(axes)


def matrix_transpose(x, /):
    """``x`` with its last two axes swapped (a view).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.matrix_transpose(xp.zeros((5, 2, 3))).shape
    (5, 3, 2)
    """
    if x.ndim < 2:
        return _compat.matrix_transpose(x)  # raises the standard's error
    return x.swapaxes(-1, -2)


def flip(x, /, *, axis=None):
    """``x`` reversed along ``axis`` (a view).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.flip(xp.reshape(xp.arange(4), (2, 2)), axis=-1).tolist()
    [[1, 0], [3, 2]]
    """
    if type(axis) is int and -x.ndim <= axis < x.ndim:
        return x[(slice(None),) * (axis % x.ndim) + (slice(None, None, -1),)]
    return _compat.flip(x, axis=axis)


def max(x, /, *, axis=None, keepdims=False):
    """The largest values of ``x`` along ``axis`` (NumPy's method: ``numpy.max`` is the same
    reduction behind a Python layer that costs more than a small array's work).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.max(xp.reshape(xp.arange(6), (2, 3)), axis=-1, keepdims=True).tolist()
    [[2], [5]]
    """
    return x.max(axis=axis, keepdims=keepdims)


def sum(x, /, *, axis=None, dtype=None, keepdims=False):
    """The sums of ``x`` along ``axis`` (NumPy's method; see :func:`max`).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.sum(xp.reshape(xp.arange(6), (2, 3)), axis=0).tolist()
    [3, 5, 7]
    """
    return x.sum(axis=axis, dtype=dtype, keepdims=keepdims)


def empty(shape, *, dtype=None, device=None):
    """A new uninitialised array on the CPU (NumPy's own, without array-api-compat's checks of
    its arguments; another ``device`` goes to array-api-compat, which names the error).

    Examples
    --------
    >>> from lucid_backends import _numpy_xp as xp
    >>> xp.empty((2, 3), dtype=xp.float32).shape
    (2, 3)
    """
    if device is None or device == "cpu":
        return _np_empty(shape, dtype=dtype)
    return _compat.empty(shape, dtype=dtype, device=device)
