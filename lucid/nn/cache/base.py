"""``Cache``: the interface every lucid cache answers."""
from __future__ import annotations

import abc
from typing import Callable

from ...validation import check_int
from . import persistence


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


_CLASSES: dict[str, type] = {}


class Cache(abc.ABC):
    """The interface of every lucid cache: per-layer state plus the batch utilities of generation.

    Changes that touch several layers (batch operations, ``crop``, ``trim``) come in two
    steps: the protected ``_prepare_*`` methods check the arguments and allocate whatever the
    change needs without changing anything, and return a commit function that cannot fail.
    ``batch_select_indices``, ``reorder_cache``, ``batch_repeat_interleave``, ``crop`` and
    ``trim`` run both steps; a composite cache prepares all its parts before committing any,
    so a call that raises (out of memory included) changes nothing anywhere. (The docs'
    contributors page shows how a new cache kind implements them.)

    Every subclass is registered under its class name, which is how a saved file names the
    class to rebuild.

    Examples
    --------
    >>> import lucid.nn as nn
    >>> isinstance(nn.DynamicKVCache(), nn.Cache)
    True
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    @abc.abstractmethod
    def state(self) -> tuple[dict, dict]:
        """``(settings, arrays)``: what a file needs to rebuild this cache exactly.

        ``settings`` is JSON-able and names the class (``"class"``); ``arrays`` maps names to
        the backend arrays of the contents.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
        >>> settings, arrays = cache.state()
        >>> settings["class"], sorted(arrays)
        ('DynamicKVCache', ['layers.0.keys', 'layers.0.values'])
        """

    @classmethod
    def from_state(cls, settings: dict, arrays: dict) -> "Cache":
        """The cache :meth:`state` described, of the class it names (a subclass of ``cls``).

        ``ValueError`` when ``settings`` names no known cache class or describes one this
        lucid cannot rebuild.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.SlidingWindowKVCache(window=4)
        >>> _ = cache.update(lucid.randn(1, 2, 6, 8), lucid.randn(1, 2, 6, 8), 0)
        >>> copy = nn.Cache.from_state(*cache.state())
        >>> type(copy).__name__, copy.get_seq_length(0), copy.key_positions(0).tolist()
        ('SlidingWindowKVCache', 6, [2, 3, 4, 5])
        """
        name = settings.get("class") if isinstance(settings, dict) else None
        kind = _CLASSES.get(name) if isinstance(name, str) else None
        if kind is None or not issubclass(kind, cls):
            raise ValueError(f"settings describe a cache of class {name!r}, not a {cls.__name__} that lucid knows")
        try:
            return kind._from_state(settings, arrays)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"settings describe a {name} this lucid cannot rebuild "
                             f"({type(exc).__name__}: {exc})") from None

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, settings: dict, arrays: dict) -> "Cache":
        """The cache of this class that ``settings`` and ``arrays`` describe."""

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
    def _prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        """Check ``indices`` (batch rows) and prepare to keep those rows; return the commit.

        ``name`` is the argument name errors use.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> commit = cache._prepare_select([1])
        >>> commit(); cache.get(0)[0].shape[0]
        1
        """

    @abc.abstractmethod
    def _prepare_repeat(self, repeats: int) -> Callable[[], None]:
        """Check ``repeats`` and prepare to repeat each batch row that often; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0)
        >>> commit = cache._prepare_repeat(2)
        >>> commit(); cache.get(0)[0].shape[0]
        4
        """

    @abc.abstractmethod
    def _prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Check ``max_length`` and prepare to keep that many latest positions; return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> commit = cache._prepare_crop(2)
        >>> commit(); cache.get_seq_length(0)
        2
        """

    @abc.abstractmethod
    def _prepare_trim(self, n: int) -> Callable[[], None]:
        """Check ``n`` and prepare to drop the last ``n`` positions of every written layer;
        return the commit.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.DynamicKVCache()
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> commit = cache._prepare_trim(2)
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
        self._prepare_select(indices, "indices")()

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
        self._prepare_select(beam_idx, "beam_idx")()

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
        self._prepare_repeat(repeats)()

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
        self._prepare_crop(max_length)()

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
        self._prepare_trim(n)()
        return n

    def can_trim(self, n: int, appended: int = 0) -> bool:
        """Whether :meth:`trim` ``(n)`` would succeed now, or (``appended``) after one more
        update of that many positions to every layer: what speculative decoding asks before it
        writes its drafts, since a sliding window that starts to slide or a quantized layer
        that quantizes during that update can no longer give them back.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.SlidingWindowKVCache(window=4)
        >>> _ = cache.update(lucid.randn(1, 1, 3, 2), lucid.randn(1, 1, 3, 2), 0)
        >>> cache.can_trim(3), cache.can_trim(4), cache.can_trim(1, appended=1), cache.can_trim(1, appended=2)
        (True, False, True, False)
        """
        if not appended:
            try:
                self._prepare_trim(n)
            except ValueError:
                return False
            return True
        return self._trimmable(check_int(appended, "appended")) >= check_int(n, "n")

    @abc.abstractmethod
    def _trimmable(self, appended: int) -> int:
        """The most positions :meth:`trim` could drop after one more update of ``appended``."""

    def save(self, path) -> None:
        """Write the cache to ``path``: one safetensors file, written atomically (a crash
        mid-save leaves the old file or none, never a truncated one).

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
        persistence.write_atomically(path, persistence.state_to_bytes(*self.state()))

    def get_max_cache_shape(self) -> int | None:
        """The fixed sequence capacity, or ``None`` when the cache grows on demand.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.DynamicKVCache().get_max_cache_shape() is None
        True
        """
        return None


def load_cache(path) -> Cache:
    """The cache saved at ``path``, on the active backend, of the same class and arguments.

    ``get`` and ``get_seq_length`` answer bit-identically, and decoding continues exactly as
    it would have. A missing, truncated, corrupted or foreign file raises ``ValueError``
    naming the path and what is wrong; nothing is half-built.

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
    source = str(path)
    settings, arrays = persistence.state_from_bytes(persistence.read_file(path), source)
    try:
        return Cache.from_state(settings, arrays)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
