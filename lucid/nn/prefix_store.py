"""``PrefixStore``: the keys and values of token prefixes, kept in chunks across requests.

Requests that share a prefix (a system prompt, few-shot examples, earlier chat turns) fetch its
keys and values instead of recomputing them. A token sequence is cut into chunks of
``chunk_size``; chunk ``i`` is keyed by a hash of the model's fingerprint and of every token
up to the chunk's end (prefix-chained, as vLLM and LMCache do), so a chunk is only ever found
for the same model and the same preceding text.
"""
from __future__ import annotations

import hashlib

import numpy as np

import lucid_backends
from lucid_backends import framing

from .tensor import Tensor
from .tiers import Tier
from .validation import check_int

FORMAT = "lucid-prefix-chunk"
VERSION = 2


class PrefixStore:
    """Stores and fetches the keys and values of token prefixes, in whole chunks.

    Tiers are tried fastest first. Reads go through them (a chunk found in a slower tier is
    copied into the faster ones); writes go to all of them. Every chunk carries the format
    version, the fingerprint, its key, the shapes and dtype, and a checksum; a chunk that fails
    any check is a miss, and is deleted from the tier that held it: never wrong data.

    Parameters
    ----------
    tiers : list of MemoryTier, DiskTier, RedisTier
        Fastest first.
    chunk_size : int
        Tokens per chunk; only whole chunks are stored and fetched.
    fingerprint : str
        Names the model (weights and configuration): chunks of another fingerprint are never
        returned.

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

    def __init__(self, tiers, chunk_size: int = 256, fingerprint: str | None = None):
        tiers = list(tiers)
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
        self.tiers, self.chunk_size, self.fingerprint = tiers, chunk_size, fingerprint

    # -- keys ------------------------------------------------------------
    def _tokens(self, tokens) -> np.ndarray:
        host = tokens.numpy() if isinstance(tokens, Tensor) else np.asarray(tokens)
        if host.ndim != 1 or host.dtype.kind not in "iu":
            raise ValueError(f"tokens must be a 1-D sequence of ints (one request), got shape {host.shape} "
                             f"of {host.dtype}")
        return host.astype(np.int64)

    def chunk_keys(self, tokens) -> list[str]:
        """The key of every whole chunk of ``tokens``: each hashes the fingerprint and all tokens
        up to the chunk's end.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=2, fingerprint="m")
        >>> a, b = store.chunk_keys([1, 2, 3, 4, 5]), store.chunk_keys([9, 2, 3, 4])
        >>> len(a), a[1] == b[1]
        (2, False)
        """
        host = self._tokens(tokens)
        digest = hashlib.sha256(f"{FORMAT}/{VERSION}/{self.fingerprint}".encode())
        keys = []
        for start in range(0, len(host) - self.chunk_size + 1, self.chunk_size):
            digest.update(host[start:start + self.chunk_size].tobytes())
            keys.append(digest.copy().hexdigest())
        return keys

    # -- chunks ----------------------------------------------------------
    def _encode(self, key: str, index: int, cache) -> bytes:
        start, stop = index * self.chunk_size, (index + 1) * self.chunk_size
        arrays = {}
        for layer in range(len(cache.layers)):
            keys, values = cache.get(layer)
            for name, array in (("keys", keys), ("values", values)):
                arrays[f"{layer}.{name}"] = array.numpy()[..., start:stop, :]
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "key": key, "index": index,
                "chunk_size": self.chunk_size, "shapes": {name: list(array.shape) for name, array in arrays.items()}}
        return framing.pack(arrays, meta)

    def _decode(self, data: bytes, key: str, index: int) -> dict | None:
        """The chunk's host arrays, or ``None`` if it fails any check."""
        try:
            arrays, meta = framing.unpack(data)
        except ValueError:
            return None
        expected = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "key": key,
                    "index": index, "chunk_size": self.chunk_size,
                    "shapes": {name: list(array.shape) for name, array in arrays.items()}}
        if any(meta.get(name) != value for name, value in expected.items()):
            return None
        if any(array.shape[-2] != self.chunk_size for array in arrays.values()):
            return None
        return arrays

    def _read(self, key: str, index: int) -> dict | None:
        for level, tier in enumerate(self.tiers):
            data = tier.get(key)
            if data is None:
                continue
            chunk = self._decode(data, key, index)
            if chunk is None:
                tier.delete(key)  # corrupt or foreign: never served again
                continue
            for faster in self.tiers[:level]:  # read-through: promote
                faster.put(key, data)
            return chunk
        return None

    # -- the two operations ----------------------------------------------
    def put(self, tokens, cache) -> int:
        """Store every whole chunk of ``tokens`` (one request) from ``cache``, which must hold at
        least those positions, in every tier that lacks it. Returns the tokens now stored.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 6, 8), lucid.randn(1, 2, 6, 8), 0)
        >>> store.put(list(range(6)), cache)
        4
        """
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
        for index, key in enumerate(keys):
            data = None
            for tier in self.tiers:
                if tier.get(key) is None:
                    data = data or self._encode(key, index, cache)
                    tier.put(key, data)
        return needed

    def fetch(self, tokens, cache) -> int:
        """Write the longest stored prefix of ``tokens`` (whole chunks) into ``cache`` (empty, of
        any class) and return its length; the caller prefills the rest. A miss returns 0 and
        leaves ``cache`` empty.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
        >>> store.fetch([1, 2, 3, 4, 5], nn.DynamicKVCache())
        0
        """
        if any(cache.get_seq_length(layer) for layer in range(len(cache.layers))):
            raise ValueError("fetch writes into an empty cache; reset() it first")
        chunks = []
        for index, key in enumerate(self.chunk_keys(tokens)):
            chunk = self._read(key, index)
            if chunk is None or (chunks and set(chunk) != set(chunks[0])):
                break
            chunks.append(chunk)
        if not chunks:
            return 0
        backend = lucid_backends.get_backend()
        try:
            for layer in range(len(chunks[0]) // 2):
                keys, values = (np.concatenate([c[f"{layer}.{name}"] for c in chunks], axis=-2)
                                for name in ("keys", "values"))
                cache.update(Tensor.wrap(backend.from_host(keys), backend),
                             Tensor.wrap(backend.from_host(values), backend), layer)
        except BaseException:
            cache.reset()  # it was empty: leave it so
            raise
        return len(chunks) * self.chunk_size

    def __repr__(self) -> str:
        return f"PrefixStore({self.tiers!r}, chunk_size={self.chunk_size}, fingerprint={self.fingerprint!r})"

