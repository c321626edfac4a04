"""``lucid.Tensor``: a thin wrapper over one array of the active backend."""
from __future__ import annotations

import numbers
import operator

import numpy as np

import lucid_backends

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
        data = data.array
    backend = lucid_backends.backend_of(data)
    if backend is not None:
        if device is None or device == backend.device:
            return backend, data
        target = lucid_backends.backend_for_device(device)
        return target, target.from_host(backend.to_host(data))
    if hasattr(data, "__dlpack__") and not isinstance(data, (numbers.Number, list, tuple)):
        on_cpu = data.__dlpack_device__()[0] == 1
        target = lucid_backends.backend_for_device(device or ("cpu" if on_cpu else "gpu"))
        return target, target.from_dlpack(data)
    target = lucid_backends.get_backend() if device is None else lucid_backends.backend_for_device(device)
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

    Attributes
    ----------
    array : array
        The backend array behind the tensor (NumPy, CuPy...), shared, not copied.
    backend : lucid_backends.Backend
        The backend that array belongs to; ``backend.xp`` is its array namespace.

    Examples
    --------
    >>> import lucid
    >>> t = lucid.Tensor([[1, 2], [3, 4]], dtype=lucid.Int32)
    >>> t.shape, t.dtype, t.device
    ((2, 2), Int32, 'cpu')
    >>> (t * 2).tolist()
    [[2, 4], [6, 8]]
    """

    __slots__ = ("array", "backend")
    __array_priority__ = 1000  # make NumPy defer to our reflected operators

    def __init__(self, data, dtype: DType | None = None, device: str | None = None):
        backend, array = _backend_and_array(data, device)
        if dtype is not None:
            want = dtypes.to_backend(backend, dtype)
            if array.dtype != want:
                array = backend.xp.astype(array, want)
        self.array = array
        self.backend = backend

    @classmethod
    def wrap(cls, array, backend) -> "Tensor":
        """Wrap ``array``, an array of ``backend``, without a copy and without any checks.

        The fast path for library code that already knows the backend (e.g. a cache
        returning views of its storage); anything else should call ``Tensor(...)``.

        Examples
        --------
        >>> import numpy as np, lucid
        >>> lucid.Tensor.wrap(np.zeros(3), lucid.get_backend()).shape
        (3,)
        """
        t = object.__new__(cls)
        t.array = array
        t.backend = backend
        return t

    # -- properties ------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each axis, as a tuple of ints."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self.array.ndim

    @property
    def dtype(self) -> DType:
        """The lucid dtype, e.g. ``lucid.Float32``."""
        return dtypes.from_backend(self.backend, self.array.dtype)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return self.backend.device

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.array.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes held by the elements."""
        return self.size * self.dtype.itemsize

    @property
    def mT(self) -> "Tensor":
        """The matrix transpose: the last two axes swapped."""
        return self.with_array(self.backend.xp.matrix_transpose(self.array))

    # -- conversion ------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A NumPy array with the contents (copied to the host from a GPU).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([1, 2]).numpy()
        array([1, 2])
        """
        return self.backend.to_host(self.array)

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
        return self.with_array(self.backend.xp.astype(self.array, dtypes.to_backend(self.backend, dtype)))

    def __array__(self, dtype=None, copy=None):
        if self.device != "cpu":
            raise TypeError("this Tensor is on the GPU; call .numpy() to copy it to the host explicitly")
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

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
        return self.with_array(self.backend.xp.reshape(self.array, tuple(shape)))

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
        return self.with_array(self.backend.xp.permute_dims(self.array, axes))

    # -- reductions ------------------------------------------------------
    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Sum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 2], [3, 4]]).sum(axis=0).tolist()
        [4, 6]
        """
        return self.with_array(self.backend.xp.sum(self.array, axis=axis, keepdims=keepdims))

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Arithmetic mean over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([1.0, 2.0]).mean().item()
        1.5
        """
        return self.with_array(self.backend.xp.mean(self.array, axis=axis, keepdims=keepdims))

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Maximum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 5], [3, 2]]).max(axis=1).tolist()
        [5, 3]
        """
        return self.with_array(self.backend.xp.max(self.array, axis=axis, keepdims=keepdims))

    def min(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Minimum over ``axis`` (all axes by default).

        Examples
        --------
        >>> import lucid
        >>> lucid.Tensor([[1, 5], [3, 2]]).min().item()
        1
        """
        return self.with_array(self.backend.xp.min(self.array, axis=axis, keepdims=keepdims))

    # -- helpers ---------------------------------------------------------
    def with_array(self, array) -> "Tensor":
        """A tensor of ``array`` (an array of this tensor's backend) on this tensor's backend.

        Examples
        --------
        >>> import lucid
        >>> t = lucid.ones(2)
        >>> t.with_array(t.backend.xp.zeros(3)).tolist()
        [0.0, 0.0, 0.0]
        """
        return Tensor.wrap(array, self.backend)

    def as_operand(self, other):
        """``other`` as something to combine with this tensor's array: a Python scalar as is,
        anything else as an array of this tensor's backend.

        Raises ``ValueError`` for a tensor on another backend.

        Examples
        --------
        >>> import lucid
        >>> t = lucid.ones(2)
        >>> t.as_operand(3), t.as_operand([1.0, 2.0]).tolist()
        (3, [1.0, 2.0])
        """
        if isinstance(other, Tensor):
            if other.backend is not self.backend:
                raise ValueError(
                    f"cannot combine a tensor on {self.backend.name}/{self.device} with one on "
                    f"{other.backend.name}/{other.device}; move one with .to(device) first"
                )
            return other.array
        if isinstance(other, (bool, int, float)):
            return other
        return Tensor(other, device=self.device).array

    # -- indexing --------------------------------------------------------
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __getitem__(self, key) -> "Tensor":
        return self.with_array(self.array[_unwrap_key(key)])

    def __setitem__(self, key, value) -> None:
        self.array[_unwrap_key(key)] = self.as_operand(value)

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
        return key.array
    if isinstance(key, tuple):
        return tuple(k.array if isinstance(k, Tensor) else k for k in key)
    return key


def _binary(op):
    def forward(self, other):
        return self.with_array(op(self.array, self.as_operand(other)))

    def reflected(self, other):
        return self.with_array(op(self.as_operand(other), self.array))

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

Tensor.__neg__ = lambda self: self.with_array(-self.array)
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: self.with_array(abs(self.array))
Tensor.__invert__ = lambda self: self.with_array(~self.array)
Tensor.__hash__ = None
