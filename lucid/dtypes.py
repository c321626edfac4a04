"""lucid's dtype objects, mapped onto each backend's own dtypes by name."""
from __future__ import annotations


class DType:
    """A data type, independent of the backend (``lucid.Float32`` and friends).

    Parameters
    ----------
    name : str
        lucid's name, e.g. ``"Float32"``.
    xp_name : str
        The array libraries' name, e.g. ``"float32"``.
    itemsize : int
        Bytes per element.

    Examples
    --------
    >>> import lucid
    >>> print(lucid.Float32, lucid.BFloat16.itemsize)
    Float32 2
    >>> lucid.Float32 == lucid.Float32, lucid.Float32 == lucid.Float16
    (True, False)
    """

    __slots__ = ("name", "xp_name", "itemsize")

    def __init__(self, name: str, xp_name: str, itemsize: int):
        self.name = name
        self.xp_name = xp_name
        self.itemsize = itemsize

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):
        return self.name


Bool = DType("Bool", "bool", 1)
Int8 = DType("Int8", "int8", 1)
Int16 = DType("Int16", "int16", 2)
Int32 = DType("Int32", "int32", 4)
Int64 = DType("Int64", "int64", 8)
UInt8 = DType("UInt8", "uint8", 1)
Float16 = DType("Float16", "float16", 2)
BFloat16 = DType("BFloat16", "bfloat16", 2)
Float32 = DType("Float32", "float32", 4)
Float64 = DType("Float64", "float64", 8)

ALL = (Bool, Int8, Int16, Int32, Int64, UInt8, Float16, BFloat16, Float32, Float64)
_BY_XP_NAME = {d.xp_name: d for d in ALL}
_tables: dict[int, dict] = {}


def _table(backend) -> dict:
    """Backend dtype object -> lucid DType for the dtypes ``backend`` has, built once per backend."""
    table = _tables.get(id(backend))
    if table is None:
        table = {}
        for d in ALL:
            native = backend.dtype(d.xp_name)
            if native is not None:
                table[backend.xp.empty(0, dtype=native).dtype] = d
        _tables[id(backend)] = table
    return table


def _supported(backend) -> str:
    return ", ".join(d.name for d in _table(backend).values())


def from_backend(backend, dtype) -> DType:
    """The lucid dtype of a backend dtype object; ``TypeError`` for one lucid cannot represent.

    Examples
    --------
    >>> import numpy as np, lucid_backends
    >>> from lucid import dtypes
    >>> dtypes.from_backend(lucid_backends.load_backend("numpy"), np.dtype("float16"))
    Float16
    """
    try:
        return _table(backend)[dtype]
    except (KeyError, TypeError):
        raise TypeError(
            f"lucid has no dtype for {dtype!r} on the {backend.name} backend; supported: {_supported(backend)}"
        ) from None


def to_backend(backend, dtype):
    """The backend dtype for a lucid dtype (or a name such as ``"float32"``); ``None`` passes through.

    Examples
    --------
    >>> import lucid_backends
    >>> from lucid import dtypes
    >>> str(dtypes.to_backend(lucid_backends.load_backend("numpy"), dtypes.BFloat16))
    'bfloat16'
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = _BY_XP_NAME.get(dtype.lower()) or next((d for d in ALL if d.name == dtype), dtype)
    if not isinstance(dtype, DType):
        for native, candidate in _table(backend).items():  # a backend dtype object or scalar type
            if dtype is getattr(backend.xp, candidate.xp_name, None) or (type(dtype) is type(native)
                                                                       and dtype == native):
                return native
        raise TypeError(f"dtype must be a lucid dtype such as lucid.Float32, got {dtype!r}; supported: "
                        f"{_supported(backend)}")
    native = backend.dtype(dtype.xp_name)
    if native is None:
        raise TypeError(f"dtype {dtype} is not supported by the {backend.name} backend; supported: "
                        f"{_supported(backend)}")
    return native
