"""``EncoderDecoderCache``: a self-attention and a cross-attention cache side by side."""
from __future__ import annotations

from .base import Cache, KVCache
from .dynamic import DynamicKVCache
from .host_checks import check_int


class EncoderDecoderCache(Cache):
    """Two KV caches for encoder-decoder models: decoder self-attention and cross-attention.

    ``update``, ``get`` and ``get_seq_length`` go to the self-attention cache,
    or to the cross-attention one with ``is_cross_attention=True``. The batch
    utilities, ``crop`` and ``reset`` apply to both, and are checked against
    both before either changes.

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

    def _select_rows_in_both(self, prepare) -> None:
        """Validate against both caches first, then change both."""
        rows = [prepare(cache) for cache in self._both()]
        for cache, cache_rows in zip(self._both(), rows):
            cache._select_rows(cache_rows)

    def batch_select_indices(self, indices) -> None:
        """Keep batch rows ``indices`` in both caches.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.batch_select_indices([1])
        >>> cache.get(0, is_cross_attention=True)[0].shape[0]
        1
        """
        self._select_rows_in_both(lambda cache: cache._prepare_select(indices, "indices"))

    def reorder_cache(self, beam_idx) -> None:
        """Reorder the batch of both caches for beam search.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.reorder_cache([1, 0, 0])
        >>> cache.get(0, is_cross_attention=True)[0].shape[0]
        3
        """
        self._select_rows_in_both(lambda cache: cache._prepare_select(beam_idx, "beam_idx"))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row ``repeats`` times in both caches.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.batch_repeat_interleave(2)
        >>> cache.get(0, is_cross_attention=True)[0].shape[0]
        4
        """
        self._select_rows_in_both(lambda cache: cache._prepare_repeat(repeats))

    def crop(self, max_length: int) -> None:
        """Crop both caches to their latest ``max_length`` positions.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.EncoderDecoderCache()
        >>> _ = cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0, is_cross_attention=True)
        >>> cache.crop(3)
        >>> cache.get_seq_length(0, is_cross_attention=True)
        3
        """
        check_int(max_length, "max_length", minimum=0)
        for cache in self._both():
            cache.crop(max_length)

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
