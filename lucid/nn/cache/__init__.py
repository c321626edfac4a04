"""Key/value caches for Transformer attention: caches are lists of layers (see :class:`KVCache`)."""
from .base import Cache, load_cache
from .cache_layer import CacheLayer
from .dynamic import DynamicKVCache
from .dynamic_layer import DynamicLayer
from .encoder_decoder import EncoderDecoderCache
from .hybrid import HybridKVCache
from .kv_cache import KVCache
from .kv_layer import KVLayer
from .paged import PagedKVCache
from .quantized import QuantizedKVCache
from .quantized_layer import QuantizedLayer
from .sliding_window import SlidingWindowKVCache
from .sliding_window_layer import SlidingWindowLayer
from .static import StaticKVCache
from .static_layer import StaticLayer

__all__ = ["Cache", "CacheLayer", "DynamicKVCache", "DynamicLayer", "EncoderDecoderCache", "HybridKVCache",
           "KVCache", "KVLayer", "PagedKVCache", "QuantizedKVCache", "QuantizedLayer", "SlidingWindowKVCache",
           "SlidingWindowLayer", "StaticKVCache", "StaticLayer", "load_cache"]
