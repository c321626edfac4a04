"""Key/value caches for Transformer attention (see :class:`KVCache`)."""
from .base import Cache, KVCache
from .dynamic import DynamicKVCache
from .encoder_decoder import EncoderDecoderCache
from .static import StaticKVCache

__all__ = ["Cache", "DynamicKVCache", "EncoderDecoderCache", "KVCache", "StaticKVCache"]
