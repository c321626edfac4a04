"""``lucid.Tensor``: a thin wrapper over one array of the active backend."""
from __future__ import annotations

import numbers
import operator

import numpy as np

import backends

from . import dtypes
from .dtypes import DType

_PY_DEFAULTS = {"f": dtypes.Float32, "i": dtypes.Int64, "u": dtypes.Int64, "b": dtypes.Bool}


def _host_from_python(data) -> np.ndarray:
    """Python scalars / nested lists -> a NumPy array, with clear errors for bad input."""
    try:
        host = np.asarray(data)
    except ValueError as exc:
        raise ValueError(f"Tensor data must be a rectangular nested list of numbers; got a ragged one ({exc})") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"Tensor data must hold numbers or bools, got {type(data).__name__} of {host.dtype}")
    if host.size == 0 and host.dtype.kind == "f" and not isinstance(data, np.ndarray):
        return host.astype(np.float32)
    default = _PY_DEFAULTS[host.dtype.kind]
    return host.astype(default.xp_name, copy=False)


def _backend_and_array(data, device):
    """Find the backend array behind ``data`` (no copy when it already lives on ``device``)."""
    if isinstance(data, Tensor):
        data = data._data
    backend = backends.backend_of(data)
    if backend is not None:
        if device is None or device == backend.device:
            return backend, data
        target = backends.backend_for_device(device)
        return target, target.from_host(backend.to_host(data))
    if hasattr(data, "__dlpack__") and not isinstance(data, (numbers.Number, list, tuple)):
        on_cpu = data.__dlpack_device__()[0] == 1
        target = backends.backend_for_device(device or ("cpu" if on_cpu else "gpu"))
        return target, target.from_dlpack(data)
    target = backends.get_backend() if device is None else backends.backend_for_device(device)
    return target, target.from_host(_host_from_python(data))


class Tensor:
    """An n-dimensional array on the CPU (NumPy) or a GPU (CuPy).

    Parameters
    ----------
    data : scalar, nested list, Tensor, NumPy/CuPy array or DLPack producer
        The contents. Arrays are wrapped without a copy when ``dtype`` and
        ``device`` already match. Python floats become ``Float32``, ints ``Int64``.
    dtype : DType, optional
        Convert to this lucid dtype (e.g. ``lucid.Int32``).
    device : {"cpu", "gpu"}, optional
        Where to keep the data; default: where it is, or the active backend.

    Examples
    --------
    >>> import lucid
    >>> t = lucid.Tensor([[1, 2], [3, 4]], dtype=lucid.Int32)
    >>> t.shape, t.dtype, t.device
    ((2, 2), Int32, 'cpu')
    >>> (t * 2).tolist()
    [[2, 4], [6, 8]]
    """

    __slots__ = ("_data", "_backend")
    __array_priority__ = 1000  # make NumPy defer to our reflected operators

    def __init__(self, data, dtype: DType | None = None, device: str | None = None):
        backend, array = _backend_and_array(data, device)
        if dtype is not None:
            want = dtypes.to_backend(backend.xp, dtype)
            if array.dtype != want:
                array = backend.xp.astype(array, want)
        self._data = array
        self._backend = backend

    @classmethod
    def _wrap(cls, array, backend) -> "Tensor":
        """Wrap a backend array without any checks (internal fast path)."""
        t = object.__new__(cls)
        t._data = array
        t._backend = backend
        return t

    # -- properties ------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each axis, as a tuple of ints."""
        return tuple(self._data.shape)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self._data.ndim

    @property
    def dtype(self) -> DType:
        """The lucid dtype, e.g. ``lucid.Float32``."""
        return dtypes.from_backend(self._backend.xp, self._data.dtype)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return self._backend.device

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self._data.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes held by the elements."""
        return self.size * np.dtype(self.dtype.xp_name).itemsize

    @property
    def mT(self) -> "Tensor":
        """The matrix transpose: the last two axes swapped."""
        return self._new(self._backend.xp.matrix_transpose(self._data))

    # -- conversion ------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A NumPy array with the contents (copied to the host from a GPU).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([1, 2]).numpy()
        array([1, 2])
        """
        return self._backend.to_host(self._data)

    def item(self):
        """The single element as a Python scalar.

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[7]]).item()
        7
        """
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        """The contents as (nested) Python lists.

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 2]]).tolist()
        [[1, 2]]
        """
        return self.numpy().tolist()

    def to(self, device: str) -> "Tensor":
        """Return the tensor on ``device`` (``"cpu"`` or ``"gpu"``); no copy if already there.

        Examples
        --------
        >>> import lucid
        >>> lucid.ones(2).to("cpu").device
        'cpu'
        """
        return Tensor(self, device=device)

    def astype(self, dtype: DType) -> "Tensor":
        """Return a copy converted to ``dtype``.

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([1.7]).astype(lucid.Int32).tolist()
        [1]
        """
        return self._new(self._backend.xp.astype(self._data, dtypes.to_backend(self._backend.xp, dtype)))

    def __array__(self, dtype=None, copy=None):
        if self.device != "cpu":
            raise TypeError("this Tensor is on the GPU; call .numpy() to copy it to the host explicitly")
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    # -- shape manipulation ----------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        """Return the same data with a new shape (a tuple or separate ints).

        Examples
        --------
        >>> import lucid
        >>> lucid.arange(6).reshape(2, 3).shape
        (2, 3)
        """
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return self._new(self._backend.xp.reshape(self._data, tuple(shape)))

    def transpose(self, *axes) -> "Tensor":
        """Permute the axes (all reversed when none are given).

        Examples
        --------
        >>> import lucid
        >>> lucid.zeros(2, 3, 4).transpose(0, 2, 1).shape
        (2, 4, 3)
        """
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        axes = tuple(axes) or tuple(reversed(range(self.ndim)))
        return self._new(self._backend.xp.permute_dims(self._data, axes))

    # -- reductions ------------------------------------------------------
    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Sum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 2], [3, 4]]).sum(axis=0).tolist()
        [4, 6]
        """
        return self._new(self._backend.xp.sum(self._data, axis=axis, keepdims=keepdims))

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Arithmetic mean over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([1.0, 2.0]).mean().item()
        1.5
        """
        return self._new(self._backend.xp.mean(self._data, axis=axis, keepdims=keepdims))

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Maximum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 5], [3, 2]]).max(axis=1).tolist()
        [5, 3]
        """
        return self._new(self._backend.xp.max(self._data, axis=axis, keepdims=keepdims))

    def min(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Minimum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 5], [3, 2]]).min().item()
        1
        """
        return self._new(self._backend.xp.min(self._data, axis=axis, keepdims=keepdims))

    # -- helpers ---------------------------------------------------------
    def _new(self, array) -> "Tensor":
        return Tensor._wrap(array, self._backend)

    def _operand(self, other):
        """The backend array (or Python scalar) to combine with this tensor."""
        if isinstance(other, Tensor):
            if other._backend is not self._backend:
                raise ValueError(
                    f"cannot combine a tensor on {self._backend.name}/{self.device} with one on "
                    f"{other._backend.name}/{other.device}; move one with .to(device) first"
                )
            return other._data
        if isinstance(other, (bool, int, float)):
            return other
        return Tensor(other, device=self.device)._data

    # -- indexing --------------------------------------------------------
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __getitem__(self, key) -> "Tensor":
        return self._new(self._data[_unwrap_key(key)])

    def __setitem__(self, key, value) -> None:
        self._data[_unwrap_key(key)] = self._operand(value)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}, device={self.device!r})"

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        return operator.index(self.item())


def _unwrap_key(key):
    if isinstance(key, Tensor):
        return key._data
    if isinstance(key, tuple):
        return tuple(k._data if isinstance(k, Tensor) else k for k in key)
    return key


def _binary(op):
    def forward(self, other):
        return self._new(op(self._data, self._operand(other)))

    def reflected(self, other):
        return self._new(op(self._operand(other), self._data))

    return forward, reflected


for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor,
}.items():
    _fwd, _ref = _binary(_op)
    setattr(Tensor, f"__{_name}__", _fwd)
    setattr(Tensor, f"__r{_name}__", _ref)

for _name, _op in {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}.items():
    setattr(Tensor, f"__{_name}__", _binary(_op)[0])

Tensor.__neg__ = lambda self: self._new(-self._data)
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: self._new(abs(self._data))
Tensor.__invert__ = lambda self: self._new(~self._data)
Tensor.__hash__ = None
