"""Where a :class:`~lucid.nn.PrefixStore` keeps its chunks: memory, a directory, a Redis server.

A tier stores opaque byte strings under the store's keys (SHA-256 hex digests; anything else
is a ``ValueError``, so no key can name a path outside a directory): ``get(key)`` (``None`` on
a miss), ``put(key, data)`` (``True`` when stored), ``delete(key)``. Tiers never raise for a
backing store that fails (a full or unwritable disk, a Redis that is down, slow or full): that
is a miss or a write that did not happen, with one warning per outage, so generation goes on.
"""
from __future__ import annotations

import collections
import math
import os
import pathlib
import re
import tempfile
import threading
import time
import typing
import warnings

from ..validation import check_int

_KEY = re.compile(r"[0-9a-f]{64}")


def check_key(key) -> str:
    """``key`` if it is a key the store makes (64 lowercase hex digits), else the error.

    Examples
    --------
    >>> from lucid.nn.tiers import check_key
    >>> check_key("0" * 64) == "0" * 64
    True
    >>> try:
    ...     check_key("../escaped")
    ... except ValueError as error:
    ...     print("64 lowercase hex digits" in str(error))
    True
    """
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"key must be a prefix-store key (64 lowercase hex digits, a SHA-256), got {key!r}")
    return key


@typing.runtime_checkable
class Tier(typing.Protocol):
    """What a :class:`~lucid.nn.PrefixStore` needs of a place to keep chunks: opaque bytes
    under its keys. ``get`` answers ``None`` on a miss, ``put`` whether it stored; none of the
    three raises for a backing store that fails.

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.MemoryTier(), nn.Tier), isinstance(object(), nn.Tier)
    (True, False)
    """

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None``."""

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key``; whether it was stored (a tier may drop it, e.g. past its
        size limit, or fail to write it)."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""


class _Outage:
    """One warning per outage of a backing store, and (with ``backoff``) a circuit breaker:
    after a failure the store is skipped, then probed after 1 s, 2 s, 4 s... up to ``backoff``."""

    def __init__(self, what: str, backoff: float = 0.0):
        self.what, self.backoff = what, backoff
        self.down, self.retry_at, self.delay = False, 0.0, 0.0

    def skipping(self) -> bool:
        return self.down and self.backoff > 0 and time.monotonic() < self.retry_at

    def failed(self, exc: BaseException, unreachable: bool = True) -> None:
        """Note a failure; one that answered (``unreachable=False``: a full server) warns but
        is not skipped, since asking again costs no wait."""
        if not self.down:
            warnings.warn(f"{self.what} is unavailable ({type(exc).__name__}: {exc}); the prefix store treats "
                          "it as a miss until it is back", RuntimeWarning, stacklevel=4)
        self.delay = min(self.backoff, max(1.0, 2 * self.delay)) if self.down else 1.0
        self.down = True
        self.retry_at = time.monotonic() + min(self.delay, self.backoff) if unreachable else 0.0

    def worked(self) -> None:
        self.down, self.delay = False, 0.0


class MemoryTier:
    """Chunks in this process's memory, least recently used dropped past ``max_bytes``.

    Examples
    --------
    >>> from lucid.nn import MemoryTier
    >>> a, b, c = "a" * 64, "b" * 64, "c" * 64
    >>> tier = MemoryTier(max_bytes=10)
    >>> tier.put(a, b"12345"), tier.put(b, b"67890"), tier.get(a), tier.put(c, b"x")
    (True, True, b'12345', True)
    >>> tier.get(b) is None, tier.nbytes
    (True, 6)
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = check_int(max_bytes, "max_bytes", minimum=1)
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def get(self, key: str) -> bytes | None:
        check_key(key)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        if len(data) > self.max_bytes:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes -= len(old) if old is not None else 0
            self._items[key] = data
            self.nbytes += len(data)
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= len(dropped)
        return True

    def delete(self, key: str) -> None:
        check_key(key)
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
    a process), which is what eviction goes by. Temporaries older than ``STALE_SECONDS`` (left
    by a writer that was killed) are removed when the tier evicts. A full disk, an unwritable
    directory or a file another process removed is a miss or an unstored write, with one warning.

    Examples
    --------
    >>> import tempfile
    >>> from lucid.nn import DiskTier
    >>> tier = DiskTier(tempfile.mkdtemp(), max_bytes=1 << 20)
    >>> tier.put("ab" * 32, b"data"), tier.get("ab" * 32)
    (True, b'data')
    """

    SUFFIX = ".chunk"
    #: A temporary file this old belongs to a writer that died.
    STALE_SECONDS = 600

    def __init__(self, directory, max_bytes: int = 10 << 30):
        self.max_bytes = check_int(max_bytes, "max_bytes", minimum=1)
        self.directory = pathlib.Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"directory {str(directory)!r} cannot be used for a disk tier: {exc}") from None
        self._last_use = 0
        self._outage = _Outage(f"the disk tier in {str(self.directory)!r}")

    def _path(self, key: str) -> pathlib.Path:
        return self.directory / f"{check_key(key)}{self.SUFFIX}"

    def _mark_used(self, path: pathlib.Path) -> None:
        """Stamp ``path`` as used now: strictly after every stamp this tier gave before, so
        that two uses within the clock's resolution still keep their order."""
        self._last_use = max(time.time_ns(), self._last_use + 1)
        try:
            os.utime(path, ns=(self._last_use, self._last_use))
        except OSError:  # removed meanwhile, or a directory we may read but not write
            pass

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._outage.failed(exc)
            return None
        self._outage.worked()
        self._mark_used(path)  # the last to be evicted
        return data

    def put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if len(data) > self.max_bytes:
            return False
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except OSError as exc:  # a full disk, an unwritable directory
            if temporary is not None:
                pathlib.Path(temporary).unlink(missing_ok=True)
            self._outage.failed(exc)
            return False
        self._outage.worked()
        self._mark_used(path)
        self._evict()
        return True

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            self._outage.failed(exc)

    def _files(self, pattern: str) -> list:
        """``(mtime_ns, size, path)`` of the files matching ``pattern``, skipping any that vanish."""
        found = []
        for path in self.directory.glob(pattern):
            try:
                stat = path.stat()
            except OSError:  # another process removed it
                continue
            found.append((stat.st_mtime_ns, stat.st_size, path))
        return found

    def _evict(self) -> None:
        stale = time.time_ns() - self.STALE_SECONDS * 10**9
        for mtime, _, path in self._files(".*.tmp"):
            if mtime < stale:
                path.unlink(missing_ok=True)
        files = self._files(f"*{self.SUFFIX}")
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
        return sum(size for _, size, _ in self._files(f"*{self.SUFFIX}"))

    def __repr__(self) -> str:
        return f"DiskTier({str(self.directory)!r}, max_bytes={self.max_bytes})"


def redis_client():
    """The ``redis`` client package, or an ``ImportError`` that names the extra to install.

    Examples
    --------
    >>> from lucid.nn.tiers import redis_client
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

    Every command has a bounded ``timeout`` (seconds). A server that is down, too slow, full
    (``maxmemory`` with ``noeviction``) or goes away mid-run makes reads misses and writes
    unstored, with one warning per outage; after a server fails to answer, the tier is skipped
    (no waiting) and probed again after 1 s, then 2, 4... up to ``backoff`` seconds, so a
    paused server costs one timeout, not one per chunk. Redis' own ``maxmemory`` policy bounds what it keeps
    (``allkeys-lru`` makes it an LRU); Redis Cluster is the way past one server.

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    timeout : float
        Seconds to wait for a connection or a reply (> 0).
    prefix : str
        Prepended to every key, to share a server with other data.
    backoff : float
        The longest pause between probes of a server that failed (>= 1 s).

    Examples
    --------
    >>> from lucid.nn import RedisTier
    >>> RedisTier("redis://127.0.0.1:6379/0")
    RedisTier('redis://127.0.0.1:6379/0')
    """

    def __init__(self, url: str, timeout: float = 0.5, prefix: str = "lucid:prefix:", backoff: float = 30.0):
        if not isinstance(url, str):
            raise TypeError(f"url must be a str such as 'redis://127.0.0.1:6379/0', got {type(url).__name__}")
        for name, value in (("timeout", timeout), ("backoff", backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout}")
        if not (math.isfinite(backoff) and backoff >= 1):
            raise ValueError(f"backoff must be a finite number of seconds >= 1, got {backoff}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        redis = redis_client()
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as exc:
            raise ValueError(f"url {url!r} is not a Redis URL such as 'redis://127.0.0.1:6379/0': {exc}") from None
        self.url, self.prefix, self.timeout, self.backoff = url, prefix, float(timeout), float(backoff)
        self._errors = (redis.exceptions.RedisError, OSError)
        self._answered = redis.exceptions.ResponseError
        self._outage = _Outage(f"Redis at {url}", backoff=self.backoff)

    def _call(self, method: str, *args):
        """The command's reply, or ``None`` when the server failed (or is being skipped)."""
        if self._outage.skipping():
            return None
        try:
            result = getattr(self._client, method)(*args)
        except self._answered as exc:  # the server replied with an error (full, read-only...)
            self._outage.failed(exc, unreachable=False)
            return None
        except self._errors as exc:  # down, too slow, gone away
            self._outage.failed(exc)
            return None
        self._outage.worked()
        return result

    def get(self, key: str) -> bytes | None:
        return self._call("get", self.prefix + check_key(key))

    def put(self, key: str, data: bytes) -> bool:
        return bool(self._call("set", self.prefix + check_key(key), data))

    def delete(self, key: str) -> None:
        self._call("delete", self.prefix + check_key(key))

    def __repr__(self) -> str:
        return f"RedisTier({self.url!r})"


def tier_from_spec(spec: str):
    """A tier from a command-line word: ``memory``, ``redis://HOST:PORT`` or a directory.

    Examples
    --------
    >>> from lucid.nn.tiers import tier_from_spec
    >>> tier_from_spec("memory")
    MemoryTier(max_bytes=1073741824, holding=0)
    """
    if spec == "memory":
        return MemoryTier()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisTier(spec)
    return DiskTier(spec)
