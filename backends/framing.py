"""Host arrays as the bytes of one safetensors file, and back: the framing every stored file uses.

``pack`` writes named host arrays and a JSON-able ``meta`` dict; bfloat16 arrays (which
safetensors' NumPy API cannot write) are stored as their uint16 bits and named in the
metadata. One HMAC-SHA256 covers the **whole** object: every header field (names, dtypes,
shapes, offsets), the metadata and every data byte. Its key is ``secret`` when one is given,
else empty, which makes it a plain integrity digest: it catches any change (a flipped bit, a
torn write, a header edited by hand), while only a secret also stops a writer that means harm.

``unpack`` checks the digest before it reads anything else, and raises ``ValueError`` for
bytes that are truncated, corrupted, unsigned or signed with another secret, or not such a file.
"""
from __future__ import annotations

import hashlib
import hmac
import json

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

#: The safetensors metadata entry that holds ``meta`` (JSON), as the project's files always had.
METADATA_KEY = "lucid"
#: The longest header ``unpack`` parses: a longer length field is corruption, not a header.
MAX_HEADER = 64 << 20
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _digest(header: dict, meta: dict, data, secret: bytes) -> str:
    """HMAC-SHA256 of the header's tensor entries and other metadata, ``meta`` (without its
    digest) and the data bytes, in one canonical form."""
    fields = {name: entry for name, entry in header.items() if name != "__metadata__"}
    other = {name: value for name, value in header.get("__metadata__", {}).items() if name != METADATA_KEY}
    canonical = json.dumps([fields, other, meta], sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(len(canonical).to_bytes(8, "little"))
    mac.update(canonical)
    mac.update(data)
    return mac.hexdigest()


def _split(data) -> tuple[dict, memoryview]:
    """The parsed header and a view of the data bytes; ``ValueError`` if the frame is broken."""
    view = memoryview(data)
    if len(view) < 8:
        raise ValueError("shorter than a safetensors header")
    length = int.from_bytes(view[:8], "little")
    if length > min(MAX_HEADER, len(view) - 8):
        raise ValueError(f"a header of {length} bytes does not fit in {len(view)} bytes")
    header = json.loads(bytes(view[8:8 + length]))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, view[8 + length:]


def pack(arrays: dict, meta: dict, secret: bytes = b"") -> bytes:
    """The bytes of a safetensors file holding host ``arrays`` and ``meta`` (JSON-able), with
    a digest of all of it (an HMAC keyed by ``secret`` when one is given).

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
    meta = {**meta, "bfloat16": bfloat16}
    plain = safetensors.numpy.save(stored, metadata={METADATA_KEY: "{}"})
    header, data = _split(plain)
    header["__metadata__"] = {METADATA_KEY: json.dumps({**meta, "digest": _digest(header, meta, data, secret)})}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return b"".join([len(text).to_bytes(8, "little"), text, data])


def unpack(data: bytes, source: str = "the data", expected: str = "one lucid wrote",
           secret: bytes = b"") -> tuple[dict, dict]:
    """``(arrays, meta)`` of bytes :func:`pack` wrote with the same ``secret``.

    ``ValueError`` naming ``source`` when the bytes are not a readable safetensors file, carry
    no metadata of ours (the message says the file is not ``expected``), or fail the checksum
    (any byte changed, or another secret). Nothing but the header is read before the digest
    has matched.

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
        header, body = _split(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source} is not a readable safetensors file (truncated or corrupted?): {exc}") from None
    try:
        meta = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "null"))
    except (json.JSONDecodeError, AttributeError, TypeError):
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{source} is a safetensors file but not {expected} (no lucid metadata)")
    digest = meta.pop("digest", None)
    if not isinstance(digest, str) or not hmac.compare_digest(digest, _digest(header, meta, body, secret)):
        raise ValueError(f"{source} fails its checksum: it changed since it was written (truncated, "
                         "corrupted or edited), or it was signed with another secret")
    names = meta.pop("bfloat16", None)
    try:
        arrays = safetensors.numpy.load(bytes(data))
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:  # signed, yet malformed
        raise ValueError(f"{source} is not a readable safetensors file: {exc}") from None
    if not isinstance(names, list) or not all(name in arrays and arrays[name].dtype == np.uint16 for name in names):
        raise ValueError(f"{source} names bfloat16 tensors it does not hold as 16-bit words: {names!r}")
    for name in names:
        arrays[name] = arrays[name].view(_BFLOAT16)
    return arrays, meta
