"""The cache file format: a cache's state as one safetensors file, written atomically.

A cache's :meth:`~lucid.nn.Cache.state` is ``(settings, arrays)``: JSON-able settings (its
class, each layer's kind, arguments and lengths) and named backend arrays. The file holds the
arrays (moved to the host) and, in its metadata, the format name and version and the settings,
framed by :mod:`lucid_backends.framing` (bfloat16, a CRC-32 of every byte). This module knows
no cache class: :class:`~lucid.nn.Cache` rebuilds the cache from what it reads.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

import lucid_backends
from lucid_backends import framing

from ...validation import check_regular_file

FORMAT = "lucid-kv-cache"
VERSION = 2


def state_to_bytes(settings: dict, arrays: dict) -> bytes:
    """The bytes of a file holding a cache's ``settings`` and ``arrays`` (backend arrays).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> from lucid.nn.cache.persistence import state_from_bytes, state_to_bytes
    >>> cache = nn.DynamicKVCache()
    >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
    >>> settings, arrays = state_from_bytes(state_to_bytes(*cache.state()))
    >>> settings["class"], arrays["layers.0.keys"].shape
    ('DynamicKVCache', (1, 2, 3, 4))
    """
    host = {name: lucid_backends.backend_of(array).to_host(array) for name, array in arrays.items()}
    return framing.pack(host, {"format": FORMAT, "version": VERSION, "cache": settings})


def state_from_bytes(data: bytes, source: str = "the data") -> tuple[dict, dict]:
    """``(settings, arrays)`` of a saved cache, the arrays on the active backend.

    ``ValueError`` naming ``source`` when the bytes are truncated, corrupted, not a lucid
    cache, or of another format version.
    """
    arrays, meta = framing.unpack(data, source, expected="a saved lucid cache")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{source} is a safetensors file but not a saved lucid cache")
    if meta.get("version") != VERSION:
        raise ValueError(f"{source} was saved in lucid cache format version {meta.get('version')}; "
                         f"this lucid reads version {VERSION}")
    if not isinstance(meta.get("cache"), dict):
        raise ValueError(f"{source} is a lucid cache file without a cache description")
    backend = lucid_backends.get_backend()
    return meta["cache"], {name: backend.from_host(array) for name, array in arrays.items()}


def write_atomically(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed over it: a crash
    mid-write leaves the old file (or none), never a truncated one.

    Examples
    --------
    >>> import os, tempfile
    >>> from lucid.nn.cache.persistence import read_file, write_atomically
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> write_atomically(path, b"abc"); read_file(path)
    b'abc'
    """
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def read_file(path) -> bytes:
    """The bytes at ``path``; ``ValueError`` naming it when there is no regular file there
    (nothing is read from a FIFO or a device).

    Examples
    --------
    >>> from lucid.nn.cache.persistence import read_file
    >>> try:
    ...     read_file("/no/such/cache.safetensors")
    ... except ValueError as error:
    ...     print("no file" in str(error))
    True
    """
    path = check_regular_file(path, "a saved cache")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
