"""Saving a cache to one safetensors file and loading it back, on any backend.

The file holds every layer's live contents as tensors, and in its metadata (key ``"lucid"``,
JSON) the format name and version, the cache's class and arguments, each layer's kind,
arguments and lengths, and a CRC-32 of all tensor bytes. Host-side work (NumPy, safetensors)
lives here, outside :mod:`lucid.nn`, whose caches only hand over and take back backend arrays.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
import zlib

import numpy as np
import safetensors
import safetensors.numpy

import backends

FORMAT = "lucid-kv-cache"
VERSION = 1


def _cache_classes():
    from .nn import (DynamicKVCache, DynamicLayer, EncoderDecoderCache, HybridKVCache, QuantizedKVCache,
                     QuantizedLayer, SlidingWindowKVCache, SlidingWindowLayer, StaticKVCache, StaticLayer)

    caches = {cls.__name__: cls for cls in (DynamicKVCache, StaticKVCache, SlidingWindowKVCache, QuantizedKVCache,
                                            HybridKVCache)}
    layers = {cls.kind: cls for cls in (DynamicLayer, StaticLayer, SlidingWindowLayer, QuantizedLayer)}
    return caches, layers, EncoderDecoderCache


def _describe(cache, prefix: str, tensors: dict) -> dict:
    """The cache's JSON description; its arrays go to ``tensors`` (host, under ``prefix``)."""
    caches, _, encoder_decoder = _cache_classes()
    if isinstance(cache, encoder_decoder):
        return {"class": "EncoderDecoderCache",
                "self": _describe(cache.self_attention_cache, prefix + "self.", tensors),
                "cross": _describe(cache.cross_attention_cache, prefix + "cross.", tensors)}
    if type(cache).__name__ not in caches:
        raise TypeError(f"cache must be one of lucid.nn's caches to be saved, got {type(cache).__name__}")
    layers = []
    for i, layer in enumerate(cache.layers):
        settings, arrays = layer.state()
        for name, array in arrays.items():
            tensors[f"{prefix}layers.{i}.{name}"] = backends.backend_of(array).to_host(array)
        layers.append(settings)
    return {"class": type(cache).__name__, "args": cache.arguments(), "layers": layers}


def _rebuild(description: dict, prefix: str, tensors: dict, backend):
    caches, layer_kinds, encoder_decoder = _cache_classes()
    if description["class"] == "EncoderDecoderCache":
        return encoder_decoder(_rebuild(description["self"], prefix + "self.", tensors, backend),
                               _rebuild(description["cross"], prefix + "cross.", tensors, backend))
    layers = []
    for i, settings in enumerate(description["layers"]):
        names = f"{prefix}layers.{i}."
        arrays = {key[len(names):]: backend.from_host(value) for key, value in tensors.items() if key.startswith(names)}
        layers.append(layer_kinds[settings["kind"]].from_state(settings, arrays))
    return caches[description["class"]].from_layers(description["args"], layers)


def checksum(tensors: dict) -> str:
    """A CRC-32 over the names and bytes of host arrays, in name order, as hex.

    It detects truncation and corruption (flipped bits, torn writes), not tampering, at
    gigabytes per second; it reads the arrays in place.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.serialization import checksum
    >>> checksum({"a": np.zeros(2)}) == checksum({"a": np.zeros(2)}), checksum({"a": np.ones(2)}) == checksum({})
    (True, False)
    """
    value = 0
    for name in sorted(tensors):
        value = zlib.crc32(name.encode(), value)
        value = zlib.crc32(np.ascontiguousarray(tensors[name]).reshape(-1).view(np.uint8), value)
    return f"{value:08x}"


def cache_bytes(cache) -> bytes:
    """The cache as the bytes of a safetensors file (what :func:`save_cache` writes).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> from lucid.serialization import cache_bytes, cache_from_bytes
    >>> cache = nn.DynamicKVCache()
    >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
    >>> cache_from_bytes(cache_bytes(cache)).get_seq_length(0)
    3
    """
    tensors = {}
    description = _describe(cache, "", tensors)
    stored, bfloat16 = {}, []
    for name, array in tensors.items():
        if array.dtype.name == "bfloat16":  # safetensors' NumPy API has no bfloat16: store the bits
            array, bfloat16 = array.view(np.uint16), bfloat16 + [name]
        stored[name] = np.ascontiguousarray(array)
    meta = {"format": FORMAT, "version": VERSION, "cache": description, "bfloat16": bfloat16,
            "crc32": checksum(stored)}
    return safetensors.numpy.save(stored, metadata={"lucid": json.dumps(meta)})


def cache_from_bytes(data: bytes, source: str = "the data"):
    """The cache in ``data`` (the bytes of a saved cache) on the active backend.

    Raises ``ValueError`` naming ``source`` and what is wrong when the bytes are truncated,
    corrupted or not a lucid cache; nothing is half-built.
    """
    try:
        tensors = safetensors.numpy.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except (safetensors.SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ValueError(f"{source} is not a readable safetensors file (truncated or corrupted?): {exc}") from None
    try:
        meta = json.loads(header.get("__metadata__", {}).get("lucid", "null"))
    except (json.JSONDecodeError, AttributeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{source} is a safetensors file but not a saved lucid cache (no lucid metadata)")
    if meta.get("version") != VERSION:
        raise ValueError(f"{source} was saved in lucid cache format version {meta.get('version')}; "
                         f"this lucid reads version {VERSION}")
    if checksum(tensors) != meta.get("crc32"):
        raise ValueError(f"{source} is corrupted: its tensors do not match the checksum saved with them")
    for name in meta.get("bfloat16", []):
        tensors[name] = tensors[name].view(np.dtype(backends.load_backend("numpy").dtype("bfloat16")))
    try:
        return _rebuild(meta["cache"], "", tensors, backends.get_backend())
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{source} describes a cache this lucid cannot rebuild ({type(exc).__name__}: {exc})") from None


def save_cache(cache, path) -> None:
    """Write ``cache`` to ``path`` as one safetensors file, atomically.

    The bytes go to a temporary file beside ``path``, which is then renamed over it: a crash
    mid-save leaves the old file (or none), never a truncated one.

    Examples
    --------
    >>> import os, tempfile, lucid, lucid.nn as nn
    >>> cache = nn.StaticKVCache(max_cache_len=8, num_layers=2)
    >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 1)
    >>> path = os.path.join(tempfile.mkdtemp(), "prompt.safetensors")
    >>> cache.save(path)
    >>> nn.load_cache(path).get_seq_length(1)
    3
    """
    path = pathlib.Path(path)
    data = cache_bytes(cache)
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


def load_cache(path):
    """The cache saved at ``path``, on the active backend, of the same class and arguments.

    ``get`` and ``get_seq_length`` answer bit-identically, and decoding continues exactly as
    it would have. A missing, truncated, corrupted or foreign file raises ``ValueError``
    naming the path and what is wrong.

    Examples
    --------
    >>> import lucid.nn as nn
    >>> try:
    ...     nn.load_cache("/no/such/cache.safetensors")
    ... except ValueError as error:
    ...     print("no file" in str(error))
    True
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no file there to load a cache from") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a saved cache") from None
    return cache_from_bytes(data, str(path))
