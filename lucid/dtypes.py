"""lucid's dtype objects, mapped onto each backend's own dtypes by name."""
from __future__ import annotations


class DType:
    """A data type, independent of the backend (``lucid.Float32`` and friends).

    Examples
    --------
    >>> import lucid
    >>> print(lucid.Float32)
    Float32
    >>> lucid.Float32 == lucid.Float32, lucid.Float32 == lucid.Float16
    (True, False)
    """

    __slots__ = ("name", "xp_name")

    def __init__(self, name: str, xp_name: str):
        self.name = name
        self.xp_name = xp_name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):
        return self.name


Bool = DType("Bool", "bool")
Int8 = DType("Int8", "int8")
Int16 = DType("Int16", "int16")
Int32 = DType("Int32", "int32")
Int64 = DType("Int64", "int64")
UInt8 = DType("UInt8", "uint8")
Float16 = DType("Float16", "float16")
Float32 = DType("Float32", "float32")
Float64 = DType("Float64", "float64")

ALL = (Bool, Int8, Int16, Int32, Int64, UInt8, Float16, Float32, Float64)
_BY_XP_NAME = {d.xp_name: d for d in ALL}
_tables: dict[int, dict] = {}


def _table(xp) -> dict:
    """Backend dtype object -> lucid DType, built once per namespace."""
    table = _tables.get(id(xp))
    if table is None:
        table = {xp.empty(0, dtype=getattr(xp, d.xp_name)).dtype: d for d in ALL if hasattr(xp, d.xp_name)}
        _tables[id(xp)] = table
    return table


def from_backend(xp, dtype) -> DType:
    """The lucid dtype of a backend dtype object."""
    try:
        return _table(xp)[dtype]
    except KeyError:
        raise TypeError(f"lucid has no dtype for {dtype!r}; supported: {', '.join(d.name for d in ALL)}") from None


def to_backend(xp, dtype):
    """The backend dtype for a lucid dtype (or a name such as ``"float32"``); ``None`` passes through."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = _BY_XP_NAME.get(dtype.lower()) or next((d for d in ALL if d.name == dtype), dtype)
    if not isinstance(dtype, DType):
        for candidate in ALL:
            if getattr(xp, candidate.xp_name) == dtype:
                return getattr(xp, candidate.xp_name)
        raise TypeError(
            f"dtype must be a lucid dtype such as lucid.Float32, got {dtype!r}; "
            f"supported: {', '.join(d.name for d in ALL)}"
        )
    if not hasattr(xp, dtype.xp_name):
        raise TypeError(f"dtype {dtype} is not supported by the array namespace {xp.__name__}")
    return getattr(xp, dtype.xp_name)
