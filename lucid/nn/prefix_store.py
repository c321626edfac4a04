"""``PrefixStore``: the keys and values of token prefixes, kept in chunks across requests.

Requests that share a prefix (a system prompt, few-shot examples, earlier chat turns) fetch its
keys and values instead of recomputing them. A token sequence is cut into chunks of
``chunk_size``; chunk ``i`` is keyed by a hash of the layout version, the chunk size, the
model's fingerprint and every token up to the chunk's end (prefix-chained, as vLLM and LMCache
do), so a chunk is only ever found for the same model, the same chunking and the same
preceding text.
"""
from __future__ import annotations

import array
import hashlib
import os

import lucid_backends
from lucid_backends import framing

from ..tensor import Tensor
from ..validation import check_int
from .cache.arguments import host_integers
from .cache.kv_cache import KVCache
from .tiers import Tier

FORMAT = "lucid-prefix-chunk"
VERSION = 2
#: The environment variable a secret is read from when ``secret`` is not given.
SECRET_VAR = "LUCID_PREFIX_SECRET"


class PrefixStore:
    """Stores and fetches the keys and values of token prefixes, in whole chunks.

    Tiers are tried fastest first. Reads go through them (a chunk found in a slower tier is
    copied into the faster ones); writes go to all of them. Every chunk carries the format
    version, the fingerprint, its key, the shapes, and a digest of all its bytes (header and
    data); a chunk that fails any check is a miss, is deleted from the tier that held it, and
    is counted in ``rejected``: never wrong data.

    Without a secret the digest catches corruption but anyone who can write to a tier can
    store keys and values that readers will use: the store trusts every writer to its tiers.
    With a ``secret`` (or ``LUCID_PREFIX_SECRET``) chunks are signed with HMAC-SHA256, and a
    reader uses only chunks signed with the same secret.

    Parameters
    ----------
    tiers : list of MemoryTier, DiskTier, RedisTier (any :class:`~lucid.nn.Tier`)
        Fastest first.
    chunk_size : int
        Tokens per chunk; only whole chunks are stored and fetched.
    fingerprint : str
        Names the model (weights and configuration): chunks of another fingerprint are never
        returned.
    secret : bytes or str, optional
        The key that signs and verifies chunks; default ``LUCID_PREFIX_SECRET`` if set.

    Examples
    --------
    >>> import numpy as np, lucid.nn as nn
    >>> from lucid.models import LlamaModel
    >>> model = LlamaModel.random()
    >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="tiny-llama-seed-0")
    >>> prompt = np.arange(10)
    >>> cache = nn.DynamicKVCache()
    >>> _ = model.forward(prompt[None, :], cache=cache)
    >>> store.put(prompt, cache)
    8
    >>> fresh = nn.DynamicKVCache()
    >>> store.fetch(prompt, fresh), fresh.get_seq_length(0)
    (8, 8)
    """

    def __init__(self, tiers, chunk_size: int = 256, fingerprint: str | None = None,
                 secret: bytes | str | None = None):
        try:
            tiers = list(tiers)
        except TypeError:
            raise TypeError(f"tiers must be a list of tiers, e.g. [nn.MemoryTier()], got {type(tiers).__name__}") from None
        if not tiers:
            raise ValueError("tiers must name at least one tier, e.g. [nn.MemoryTier()]")
        for i, tier in enumerate(tiers):
            if not isinstance(tier, Tier):
                raise TypeError(f"tiers[{i}] must be a tier (MemoryTier, DiskTier, RedisTier, or any nn.Tier), "
                                f"got {type(tier).__name__}")
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise TypeError("fingerprint must be a non-empty str naming the model (weights and configuration), "
                            f"got {fingerprint!r}")
        if secret is None:
            secret = os.environ.get(SECRET_VAR, "")
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes):
            raise TypeError(f"secret must be bytes or str, got {type(secret).__name__}")
        self.tiers, self.chunk_size, self.fingerprint = tiers, chunk_size, fingerprint
        self._secret = secret
        #: Chunks found but refused (failed digest or signature, another layout): each deleted.
        self.rejected = 0

    @property
    def signed(self) -> bool:
        """Whether chunks are signed and checked with a secret.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.PrefixStore([nn.MemoryTier()], fingerprint="m", secret=b"k").signed
        True
        """
        return bool(self._secret)

    # -- keys ------------------------------------------------------------
    def chunk_keys(self, tokens) -> list[str]:
        """The key of every whole chunk of ``tokens``: each hashes the layout version, the chunk
        size, the fingerprint and all tokens up to the chunk's end.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=2, fingerprint="m")
        >>> a, b = store.chunk_keys([1, 2, 3, 4, 5]), store.chunk_keys([9, 2, 3, 4])
        >>> len(a), a[1] == b[1]
        (2, False)
        """
        host = host_integers(tokens, "tokens")
        if host.ndim != 1:
            raise ValueError(f"tokens must be a 1-D sequence of ints (one request), got shape {tuple(host.shape)}")
        values = array.array("q", [int(t) for t in host])
        digest = hashlib.sha256(f"{FORMAT}/{VERSION}/{self.chunk_size}/{self.fingerprint}".encode())
        keys = []
        for start in range(0, len(values) - self.chunk_size + 1, self.chunk_size):
            digest.update(values[start:start + self.chunk_size].tobytes())
            keys.append(digest.copy().hexdigest())
        return keys

    # -- chunks ----------------------------------------------------------
    def _encode(self, key: str, index: int, cache: KVCache) -> bytes:
        start, stop = index * self.chunk_size, (index + 1) * self.chunk_size
        arrays = {}
        for layer in range(len(cache.layers)):
            keys, values = cache.get(layer)
            for name, tensor in (("keys", keys), ("values", values)):
                arrays[f"{layer}.{name}"] = tensor.backend.to_host(tensor.array[..., start:stop, :])
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "key": key, "index": index,
                "chunk_size": self.chunk_size}
        return framing.pack(arrays, meta, self._secret)

    def _decode(self, data: bytes, key: str, index: int) -> dict | None:
        """The chunk's host arrays, or ``None`` if it fails any check."""
        try:
            arrays, meta = framing.unpack(data, secret=self._secret)
        except ValueError:
            return None
        expected = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "key": key,
                    "index": index, "chunk_size": self.chunk_size}
        if any(meta.get(name) != value for name, value in expected.items()):
            return None
        layers = len(arrays) // 2
        if not layers or set(arrays) != {f"{i}.{name}" for i in range(layers) for name in ("keys", "values")}:
            return None
        for i in range(layers):
            k, v = arrays[f"{i}.keys"], arrays[f"{i}.values"]
            if (k.ndim < 3 or k.shape[:-1] != v.shape[:-1] or k.dtype != v.dtype
                    or k.shape[0] != 1 or k.shape[-2] != self.chunk_size):
                return None
        return arrays

    def _read(self, key: str, index: int) -> dict | None:
        for level, tier in enumerate(self.tiers):
            data = tier.get(key)
            if data is None:
                continue
            chunk = self._decode(data, key, index)
            if chunk is None:
                tier.delete(key)  # corrupt, unsigned or foreign: never served again
                self.rejected += 1
                continue
            for faster in self.tiers[:level]:  # read-through: promote
                faster.put(key, data)
            return chunk
        return None

    # -- the two operations ----------------------------------------------
    def put(self, tokens, cache: KVCache) -> int:
        """Store every whole chunk of ``tokens`` (one request) from ``cache``, which must hold at
        least those positions, in every tier that lacks it. Returns the tokens really stored:
        the whole chunks, from the first, that at least one tier holds now.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 6, 8), lucid.randn(1, 2, 6, 8), 0)
        >>> store.put(list(range(6)), cache)
        4
        """
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (DynamicKVCache, StaticKVCache...), got {type(cache).__name__}")
        keys = self.chunk_keys(tokens)
        needed = len(keys) * self.chunk_size
        if not keys:
            return 0
        for layer in range(len(cache.layers)):
            got = cache.get(layer)
            if got is None or got[0].shape[-2] < needed or got[0].shape[-2] != cache.get_seq_length(layer):
                raise ValueError(f"cache layer {layer} must hold positions 0 to {needed - 1} to store them "
                                 f"(a cache that keeps every position, with batch 1)")
            if got[0].shape[0] != 1:
                raise ValueError(f"a prefix store keeps one request at a time: the cache has batch {got[0].shape[0]}")
        stored = 0
        for index, key in enumerate(keys):
            data, held = None, False
            for tier in self.tiers:
                if tier.get(key) is not None:
                    held = True
                    continue
                data = data or self._encode(key, index, cache)
                held = tier.put(key, data) or held
            if not held:
                break
            stored += self.chunk_size
        return stored

    def fetch(self, tokens, cache: KVCache) -> int:
        """Write the longest stored prefix of ``tokens`` (whole chunks, leaving at least one token
        to prefill, as the next forward needs one) into ``cache`` (empty: never written, reset,
        or cropped to nothing) and return its length; the caller prefills the rest. A miss
        returns 0; a fetch that fails changes nothing.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
        >>> store.fetch([1, 2, 3, 4, 5], nn.DynamicKVCache())
        0
        """
        if not isinstance(cache, KVCache):
            raise TypeError(f"fetch writes into a KVCache (DynamicKVCache, StaticKVCache, SlidingWindowKVCache...), "
                            f"got {type(cache).__name__}")
        if any(cache.get_seq_length(layer) for layer in range(len(cache.layers))):
            raise ValueError("fetch writes into an empty cache; reset() it first")
        keys = self.chunk_keys(tokens)  # checks tokens
        keys = keys[:max(0, len(host_integers(tokens, "tokens")) - 1) // self.chunk_size]
        chunks = []
        for index, key in enumerate(keys):
            chunk = self._read(key, index)
            if chunk is None or (chunks and set(chunk) != set(chunks[0])):
                break
            chunks.append(chunk)
        if not chunks:
            return 0
        backend = lucid_backends.get_backend()
        xp = lucid_backends.host_backend().xp
        target = KVCache.from_state(*cache.state())  # written into, then swapped in: all or nothing
        for layer in range(len(chunks[0]) // 2):
            keys_, values = (xp.concat([c[f"{layer}.{name}"] for c in chunks], axis=-2) for name in ("keys", "values"))
            target.update(Tensor.wrap(backend.from_host(keys_), backend), Tensor.wrap(backend.from_host(values), backend),
                          layer)
        cache.layers[:] = target.layers
        return len(chunks) * self.chunk_size

    def __repr__(self) -> str:
        return f"PrefixStore({self.tiers!r}, chunk_size={self.chunk_size}, fingerprint={self.fingerprint!r})"
