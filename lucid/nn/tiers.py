"""Where a :class:`~lucid.nn.PrefixStore` keeps its chunks: memory, a directory, a Redis server.

A tier stores opaque byte strings under string keys: ``get(key)`` (``None`` on a miss),
``put(key, data)``, ``delete(key)``. Tiers never raise for an unavailable backing store: a
Redis that is down or slow is a miss (with one warning per outage), so generation goes on.
"""
from __future__ import annotations

import collections
import os
import pathlib
import tempfile
import threading
import time
import typing
import warnings

from .validation import check_int


@typing.runtime_checkable
class Tier(typing.Protocol):
    """What a :class:`~lucid.nn.PrefixStore` needs of a place to keep chunks: opaque bytes
    under string keys. ``get`` answers ``None`` on a miss; none of the three raises for a
    backing store that is unavailable (that is a miss, or a write that did not happen).

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.MemoryTier(), nn.Tier), isinstance(object(), nn.Tier)
    (True, False)
    """

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None``."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (a tier may drop it, e.g. past its size limit)."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""


class MemoryTier:
    """Chunks in this process's memory, least recently used dropped past ``max_bytes``.

    Examples
    --------
    >>> from lucid.nn import MemoryTier
    >>> tier = MemoryTier(max_bytes=10)
    >>> tier.put("a", b"12345"); tier.put("b", b"67890"); _ = tier.get("a"); tier.put("c", b"x")
    >>> tier.get("b") is None, tier.get("a"), tier.nbytes
    (True, b'12345', 6)
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = check_int(max_bytes, "max_bytes", minimum=1)
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes -= len(old) if old is not None else 0
            self._items[key] = data
            self.nbytes += len(data)
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= len(dropped)

    def delete(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes -= len(old) if old is not None else 0

    def __repr__(self) -> str:
        return f"MemoryTier(max_bytes={self.max_bytes}, holding={self.nbytes})"


class DiskTier:
    """Chunks as files in ``directory``, least recently used dropped past ``max_bytes``.

    Each chunk is written to a temporary file and renamed into place, so readers (in this or
    any other process) see whole chunks only, and two writers of the same chunk both succeed.
    A write or a read marks the file used (its modification time, strictly increasing within
    a process), which is what eviction goes by.

    Examples
    --------
    >>> import tempfile
    >>> from lucid.nn import DiskTier
    >>> tier = DiskTier(tempfile.mkdtemp(), max_bytes=1 << 20)
    >>> tier.put("abc", b"data"); tier.get("abc")
    b'data'
    """

    SUFFIX = ".chunk"

    def __init__(self, directory, max_bytes: int = 10 << 30):
        self.directory = pathlib.Path(directory)
        self.max_bytes = check_int(max_bytes, "max_bytes", minimum=1)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._last_use = 0

    def _path(self, key: str) -> pathlib.Path:
        return self.directory / f"{key}{self.SUFFIX}"

    def _mark_used(self, path: pathlib.Path) -> None:
        """Stamp ``path`` as used now: strictly after every stamp this tier gave before, so
        that two uses within the clock's resolution still keep their order."""
        self._last_use = max(time.time_ns(), self._last_use + 1)
        os.utime(path, ns=(self._last_use, self._last_use))

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
            self._mark_used(path)  # the last to be evicted
        except FileNotFoundError:
            return None
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, self._path(key))
            self._mark_used(self._path(key))
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise
        self._evict()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _evict(self) -> None:
        files = []
        for path in self.directory.glob(f"*{self.SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another process evicted it
                continue
            files.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    @property
    def nbytes(self) -> int:
        """Bytes of the chunk files in the directory now.

        Examples
        --------
        >>> import tempfile
        >>> from lucid.nn import DiskTier
        >>> DiskTier(tempfile.mkdtemp()).nbytes
        0
        """
        return sum(p.stat().st_size for p in self.directory.glob(f"*{self.SUFFIX}"))

    def __repr__(self) -> str:
        return f"DiskTier({str(self.directory)!r}, max_bytes={self.max_bytes})"


def redis_client():
    """The ``redis`` client package, or an ``ImportError`` that names the extra to install.

    Examples
    --------
    >>> from lucid.tiers import redis_client
    >>> redis_client().__name__
    'redis'
    """
    try:
        import redis
    except ImportError:
        raise ImportError("RedisTier needs the redis client, an optional dependency: "
                          "pip install 'lucid-kv[redis]'") from None
    return redis


class RedisTier:
    """Chunks in a Redis server, shared by every process and machine that points at it.

    Every command has a bounded ``timeout`` (seconds). A server that is down, too slow, or goes
    away mid-run makes reads misses and writes no-ops, with one warning per outage; the client
    reconnects on its own when the server is back. Redis' own ``maxmemory`` policy bounds what
    it keeps (``allkeys-lru`` makes it an LRU); Redis Cluster is the way past one server.

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    timeout : float
        Seconds to wait for a connection or a reply.
    prefix : str
        Prepended to every key, to share a server with other data.

    Examples
    --------
    >>> from lucid.nn import RedisTier
    >>> RedisTier("redis://127.0.0.1:6379/0")
    RedisTier('redis://127.0.0.1:6379/0')
    """

    def __init__(self, url: str, timeout: float = 0.5, prefix: str = "lucid:prefix:"):
        if not isinstance(url, str):
            raise TypeError(f"url must be a str such as 'redis://127.0.0.1:6379/0', got {type(url).__name__}")
        redis = redis_client()
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self._errors = (redis.exceptions.RedisError, OSError)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._down = False

    def _call(self, method: str, *args):
        try:
            result = getattr(self._client, method)(*args)
        except self._errors as exc:
            if not self._down:
                warnings.warn(f"Redis at {self.url} is unavailable ({type(exc).__name__}: {exc}); the prefix store "
                              "treats it as a miss until it is back", RuntimeWarning, stacklevel=3)
            self._down = True
            return None
        self._down = False
        return result

    def get(self, key: str) -> bytes | None:
        return self._call("get", self.prefix + key)

    def put(self, key: str, data: bytes) -> None:
        self._call("set", self.prefix + key, data)

    def delete(self, key: str) -> None:
        self._call("delete", self.prefix + key)

    def __repr__(self) -> str:
        return f"RedisTier({self.url!r})"


def tier_from_spec(spec: str):
    """A tier from a command-line word: ``memory``, ``redis://HOST:PORT`` or a directory.

    Examples
    --------
    >>> from lucid.tiers import tier_from_spec
    >>> tier_from_spec("memory")
    MemoryTier(max_bytes=1073741824, holding=0)
    """
    if spec == "memory":
        return MemoryTier()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisTier(spec)
    return DiskTier(spec)


