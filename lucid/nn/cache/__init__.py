"""Key/value caches for Transformer attention: caches are lists of layers (see :class:`KVCache`)."""
from .base import Cache
from .dynamic import DynamicKVCache
from .dynamic_layer import DynamicLayer
from .encoder_decoder import EncoderDecoderCache
from .kv_cache import KVCache
from .layer import KVLayer
from .static import StaticKVCache
from .static_layer import StaticLayer

__all__ = ["Cache", "DynamicKVCache", "DynamicLayer", "EncoderDecoderCache", "KVCache", "KVLayer",
           "StaticKVCache", "StaticLayer"]
