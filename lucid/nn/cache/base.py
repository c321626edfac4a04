"""``Cache``: the interface every lucid cache answers."""
from __future__ import annotations

import abc
from typing import Callable


def commit_all(commits: list) -> Callable[[], None]:
    """One commit that runs prepared commits in order (each was prepared, so none can fail).

    Examples
    --------
    >>> from lucid.nn.cache.base import commit_all
    >>> done = []
    >>> commit_all([lambda: done.append(1), lambda: done.append(2)])(); done
    [1, 2]
    """
    def commit() -> None:
        for step in commits:
            step()

    return commit


class Cache(abc.ABC):
    """The interface of every lucid cache: per-layer state plus the batch utilities of generation.

    Changes that touch several layers (batch operations, ``crop``) come in two steps:
    ``prepare_*`` checks the arguments and allocates whatever the change needs without
    changing anything, and returns a commit function that cannot fail.
    ``batch_select_indices``, ``reorder_cache``, ``batch_repeat_interleave`` and ``crop`` run
    both steps; a composite cache prepares all its parts before committing any, so a call
    that raises (out of memory included) changes nothing anywhere.

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.DynamicKVCache(), nn.Cache)
    True
    """

    @abc.abstractmethod
    def update(self, key, value, layer_idx: int, cache_position=None):
        """Store new state for ``layer_idx`` and return what the layer holds.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> k, v = cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), layer_idx=0)
        >>> k.shape
        (1, 2, 4, 4)
        """

    @abc.abstractmethod
    def get(self, layer_idx: int):
        """``(key, value)`` of ``layer_idx``, or ``None`` for a layer never written.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get(0) is None
        True
        """

    @abc.abstractmethod
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions ``layer_idx`` holds (0 for a layer never written).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get_seq_length(0)
        0
        """

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the cache really holds: allocated buffers, including any kept for reuse.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().nbytes()
        0
        """

    @abc.abstractmethod
    def prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        """Check ``indices`` (batch rows) and prepare to keep those rows; return the commit.

        ``name`` is the argument name errors use.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> commit = cache.prepare_select([1])
        >>> commit(); cache.get(0)[0].shape[0]
        1
        """

    @abc.abstractmethod
    def prepare_repeat(self, repeats: int) -> Callable[[], None]:
        """Check ``repeats`` and prepare to repeat each batch row that often; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> commit = cache.prepare_repeat(2)
        >>> commit(); cache.get(0)[0].shape[0]
        4
        """

    @abc.abstractmethod
    def prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Check ``max_length`` and prepare to keep that many latest positions; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> commit = cache.prepare_crop(2)
        >>> commit(); cache.get_seq_length(0)
        2
        """

    @abc.abstractmethod
    def prepare_trim(self, n: int) -> Callable[[], None]:
        """Check ``n`` and prepare to drop the last ``n`` positions of every written layer;
        return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> commit = cache.prepare_trim(2)
        >>> commit(); cache.get_seq_length(0)
        3
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Make every layer never-written.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache: nn.Cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), layer_idx=0)
        >>> cache.reset()
        >>> cache.get_seq_length(0)
        0
        """

    def batch_select_indices(self, indices) -> None:
        """Keep batch rows ``indices`` of every layer (1-D ints in ``[0, B)``, repeats allowed).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.batch_select_indices([1, 1, 0])
        >>> cache.get(0)[0].shape
        (3, 1, 1, 4)
        """
        self.prepare_select(indices, "indices")()

    def reorder_cache(self, beam_idx) -> None:
        """Reorder the batch for beam search: row ``i`` becomes old row ``beam_idx[i]``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.reorder_cache(lucid.Tensor([1, 0], dtype=lucid.Int32))
        >>> cache.get(0)[0].shape[0]
        2
        """
        self.prepare_select(beam_idx, "beam_idx")()

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every batch row ``repeats`` times in place: ``[a, b] -> [a, a, b, b]``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> cache.batch_repeat_interleave(3)
        >>> cache.get(0)[0].shape[0]
        6
        """
        self.prepare_repeat(repeats)()

    def crop(self, max_length: int) -> None:
        """Keep the latest ``max_length`` positions of every longer layer, renumbered from 0.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2), 0)
        >>> cache.crop(2); cache.get_seq_length(0)
        2
        """
        self.prepare_crop(max_length)()

    def trim(self, n: int) -> int:
        """Drop the last ``n`` positions of every written layer and return ``n``: a rollback
        (speculative decoding's rejected drafts, a regenerated answer). The positions kept keep
        their numbers, unlike :meth:`crop`, which keeps the latest positions and renumbers them
        (transformers' ``crop(max_length)`` is ``trim(length - max_length)`` here).

        ``n`` past what a layer can drop (its length; a sliding window that has dropped
        positions, which a trim would need back; a quantized layer's positions already in
        codes) is a ``ValueError`` naming ``n``, and nothing changes: check with
        :meth:`can_trim`.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 2), lucid.randn(1, 1, 5, 2), 0)
        >>> cache.trim(2), cache.get_seq_length(0), cache.key_positions(0, 3).tolist()
        (2, 3, [0, 1, 2])
        """
        self.prepare_trim(n)()
        return n

    def can_trim(self, n: int) -> bool:
        """Whether :meth:`trim` ``(n)`` would succeed.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.SlidingWindowKVCache(window=4)
        >>> _ = cache.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2), 0)
        >>> cache.can_trim(3), cache.can_trim(4)
        (True, False)
        """
        try:
            self.prepare_trim(n)
        except ValueError:
            return False
        return True

    def save(self, path) -> None:
        """Write the cache to ``path``: one safetensors file, written atomically.

        ``lucid.nn.load_cache(path)`` gives it back, on whichever backend is active then.

        Examples
        --------
        >>> import os, tempfile, lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 5, 4), lucid.randn(1, 2, 5, 4), 0)
        >>> path = os.path.join(tempfile.mkdtemp(), "cache.safetensors")
        >>> cache.save(path)
        >>> nn.load_cache(path).get_seq_length(0)
        5
        """
        from ...serialization import save_cache

        save_cache(self, path)

    def get_max_cache_shape(self) -> int | None:
        """The fixed sequence capacity, or ``None`` when the cache grows on demand.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get_max_cache_shape() is None
        True
        """
        return None
