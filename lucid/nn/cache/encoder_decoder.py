"""``EncoderDecoderCache``: a self-attention and a cross-attention cache side by side."""
from __future__ import annotations

from typing import Callable

from .base import Cache, commit_all
from .dynamic import DynamicKVCache
from .kv_cache import KVCache


class EncoderDecoderCache(Cache):
    """Two KV caches for encoder-decoder models: decoder self-attention and cross-attention.

    ``update``, ``get`` and ``get_seq_length`` go to the self-attention cache,
    or to the cross-attention one with ``is_cross_attention=True``. The batch
    utilities, ``crop`` and ``reset`` apply to both: both are prepared (arguments
    checked, memory allocated) before either changes, so whichever would fail,
    neither changes. ``nbytes`` counts both.

    Parameters
    ----------
    self_attention_cache, cross_attention_cache : KVCache, optional
        The two caches; a new ``DynamicKVCache`` for each one not given.

    Notes
    -----
    ``crop`` crops the cross-attention cache too (Hugging Face's
    ``EncoderDecoderCache.crop`` crops self-attention only); crop
    ``self_attention_cache`` directly to keep the encoder states whole.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.EncoderDecoderCache()
    >>> _ = cache.update(lucid.randn(1, 2, 7, 4), lucid.randn(1, 2, 7, 4), 0, is_cross_attention=True)
    >>> _ = cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), 0)
    >>> cache.get_seq_length(0), cache.get_seq_length(0, is_cross_attention=True)
    (1, 7)
    """

    def __init__(self, self_attention_cache: KVCache | None = None, cross_attention_cache: KVCache | None = None):
        for name, cache in (("self_attention_cache", self_attention_cache), ("cross_attention_cache", cross_attention_cache)):
            if cache is not None and not isinstance(cache, KVCache):
                raise TypeError(f"{name} must be a KVCache (e.g. DynamicKVCache), got {type(cache).__name__}")
        if self_attention_cache is not None and self_attention_cache is cross_attention_cache:
            raise ValueError("self_attention_cache and cross_attention_cache must be two different caches")
        self.self_attention_cache = self_attention_cache if self_attention_cache is not None else DynamicKVCache()
        self.cross_attention_cache = cross_attention_cache if cross_attention_cache is not None else DynamicKVCache()

    def _pick(self, is_cross_attention: bool) -> KVCache:
        return self.cross_attention_cache if is_cross_attention else self.self_attention_cache

    def update(self, key, value, layer_idx: int, cache_position=None, is_cross_attention: bool = False):
        """``update`` on the self- (default) or cross-attention cache.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> k, v = cache.update(lucid.randn(2, 1, 1, 2), lucid.randn(2, 1, 1, 2), 0)
        >>> k.shape
        (2, 1, 1, 2)
        """
        return self._pick(is_cross_attention).update(key, value, layer_idx, cache_position)

    def get(self, layer_idx: int, is_cross_attention: bool = False):
        """``get`` on the self- (default) or cross-attention cache.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.get(0) is None, cache.get(0, is_cross_attention=True)[0].shape
        (True, (2, 1, 4, 2))
        """
        return self._pick(is_cross_attention).get(layer_idx)

    def get_seq_length(self, layer_idx: int = 0, is_cross_attention: bool = False) -> int:
        """``get_seq_length`` on the self- (default) or cross-attention cache.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.get_seq_length(0), cache.get_seq_length(0, is_cross_attention=True)
        (0, 4)
        """
        return self._pick(is_cross_attention).get_seq_length(layer_idx)

    def get_max_cache_shape(self) -> int | None:
        """The self-attention cache's capacity (``None`` when it is dynamic).

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.EncoderDecoderCache(nn.StaticKVCache(64, 2)).get_max_cache_shape()
        64
        """
        return self.self_attention_cache.get_max_cache_shape()

    def _both(self):
        return self.self_attention_cache, self.cross_attention_cache

    def nbytes(self) -> int:
        """Bytes both caches hold.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache(nn.StaticKVCache(8, 1), nn.StaticKVCache(4, 1))
        >>> _ = cache.update(lucid.randn(1, 1, 2, 4), lucid.randn(1, 1, 2, 4), 0, is_cross_attention=True)
        >>> cache.nbytes()  # 4 positions x (4 + 4) float32 values
        128
        """
        return sum(cache.nbytes() for cache in self._both())

    def _prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        """Prepare both caches to keep batch rows ``indices``; either failing changes neither.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> commit = cache._prepare_select([1])
        >>> commit(); cache.get(0, is_cross_attention=True)[0].shape[0]
        1
        """
        return commit_all([cache._prepare_select(indices, name) for cache in self._both()])

    def _prepare_repeat(self, repeats: int) -> Callable[[], None]:
        """Prepare both caches to repeat each batch row ``repeats`` times.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> commit = cache._prepare_repeat(2)
        >>> commit(); cache.get(0, is_cross_attention=True)[0].shape[0]
        4
        """
        return commit_all([cache._prepare_repeat(repeats) for cache in self._both()])

    def _prepare_crop(self, max_length: int) -> Callable[[], None]:
        """Prepare both caches to keep their latest ``max_length`` positions.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> commit = cache._prepare_crop(3)
        >>> commit(); cache.get_seq_length(0, is_cross_attention=True)
        3
        """
        return commit_all([cache._prepare_crop(max_length) for cache in self._both()])

    def _prepare_trim(self, n: int) -> Callable[[], None]:
        """Prepare to drop the last ``n`` positions of the self-attention cache (the decoder's
        tokens; the cross-attention cache holds the encoder's output, which a rollback keeps).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(1, 1, 4, 2), lucid.randn(1, 1, 4, 2), 0)
        >>> _ = cache.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2), 0, is_cross_attention=True)
        >>> cache._prepare_trim(1)(); cache.get_seq_length(0), cache.get_seq_length(0, is_cross_attention=True)
        (3, 6)
        """
        return self.self_attention_cache._prepare_trim(n)

    def _trimmable(self, appended: int) -> int:
        return self.self_attention_cache._trimmable(appended)

    def state(self) -> tuple[dict, dict]:
        """``(settings, arrays)`` of both caches, under ``"self"`` and ``"cross"``.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(1, 1, 4, 2), lucid.randn(1, 1, 4, 2), 0, is_cross_attention=True)
        >>> settings, arrays = cache.state()
        >>> settings["cross"]["class"], sorted(arrays)
        ('DynamicKVCache', ['cross.layers.0.keys', 'cross.layers.0.values'])
        """
        settings, arrays = {"class": type(self).__name__}, {}
        for part, cache in (("self", self.self_attention_cache), ("cross", self.cross_attention_cache)):
            settings[part], part_arrays = cache.state()
            arrays.update({f"{part}.{name}": array for name, array in part_arrays.items()})
        return settings, arrays

    @classmethod
    def _from_state(cls, settings: dict, arrays: dict) -> "EncoderDecoderCache":
        parts = []
        for part in ("self", "cross"):
            prefix = f"{part}."
            parts.append(KVCache.from_state(settings[part], {name[len(prefix):]: array for name, array in arrays.items()
                                                             if name.startswith(prefix)}))
        return cls(*parts)

    def reset(self) -> None:
        """Reset both caches.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.reset()
        >>> cache.get(0, is_cross_attention=True) is None
        True
        """
        for cache in self._both():
            cache.reset()

