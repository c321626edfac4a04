"""Host arrays as the bytes of one safetensors file, and back: the framing every stored file uses.

``pack`` writes named host arrays and a JSON-able ``meta`` dict; bfloat16 arrays (which
safetensors' NumPy API cannot write) are stored as their uint16 bits and named in the
metadata; a CRC-32 of every name and byte is stored beside them. ``unpack`` undoes all of it
and raises ``ValueError`` for bytes that are truncated, corrupted or not such a file.
"""
from __future__ import annotations

import json
import zlib

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

#: The safetensors metadata entry that holds ``meta`` (JSON), as the project's files always had.
METADATA_KEY = "lucid"
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def checksum(arrays: dict) -> str:
    """A CRC-32 over the names and bytes of host arrays, in name order, as hex.

    It detects truncation and corruption (flipped bits, torn writes), not tampering, at
    gigabytes per second; it reads the arrays in place.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid_backends.framing import checksum
    >>> checksum({"a": np.zeros(2)}) == checksum({"a": np.zeros(2)}), checksum({"a": np.ones(2)}) == checksum({})
    (True, False)
    """
    value = 0
    for name in sorted(arrays):
        value = zlib.crc32(name.encode(), value)
        value = zlib.crc32(np.ascontiguousarray(arrays[name]).reshape(-1).view(np.uint8), value)
    return f"{value:08x}"


def pack(arrays: dict, meta: dict) -> bytes:
    """The bytes of a safetensors file holding host ``arrays`` and ``meta`` (JSON-able).

    Examples
    --------
    >>> import numpy as np, ml_dtypes
    >>> from lucid_backends.framing import pack, unpack
    >>> arrays, meta = unpack(pack({"x": np.ones(3, dtype=ml_dtypes.bfloat16)}, {"what": "demo"}))
    >>> arrays["x"].dtype.name, meta["what"]
    ('bfloat16', 'demo')
    """
    stored, bfloat16 = {}, []
    for name, array in arrays.items():
        if array.dtype == _BFLOAT16:
            array, bfloat16 = array.view(np.uint16), bfloat16 + [name]
        stored[name] = np.ascontiguousarray(array)
    framed = {**meta, "bfloat16": bfloat16, "crc32": checksum(stored)}
    return safetensors.numpy.save(stored, metadata={METADATA_KEY: json.dumps(framed)})


def unpack(data: bytes, source: str = "the data", expected: str = "one lucid wrote") -> tuple[dict, dict]:
    """``(arrays, meta)`` of bytes :func:`pack` wrote.

    ``ValueError`` naming ``source`` when the bytes are not a readable safetensors file, carry
    no metadata of ours (the message says the file is not ``expected``), or do not match
    their checksum.

    Examples
    --------
    >>> from lucid_backends.framing import unpack
    >>> try:
    ...     unpack(b"not a file", "chunk 3")
    ... except ValueError as error:
    ...     print(str(error).startswith("chunk 3 is not a readable safetensors file"))
    True
    """
    try:
        arrays = safetensors.numpy.load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    except (safetensors.SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ValueError(f"{source} is not a readable safetensors file (truncated or corrupted?): {exc}") from None
    try:
        meta = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "null"))
    except (json.JSONDecodeError, AttributeError):
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{source} is a safetensors file but not {expected} (no lucid metadata)")
    if checksum(arrays) != meta.pop("crc32", None):
        raise ValueError(f"{source} is corrupted: its tensors do not match the checksum saved with them")
    for name in meta.pop("bfloat16", []):
        if name not in arrays:
            raise ValueError(f"{source} names a bfloat16 tensor {name!r} it does not hold")
        arrays[name] = arrays[name].view(_BFLOAT16)
    return arrays, meta
