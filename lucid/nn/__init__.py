"""Neural-network building blocks; chiefly the KV caches of :mod:`lucid.nn.cache`."""
from .cache import Cache, DynamicKVCache, EncoderDecoderCache, KVCache, StaticKVCache

__all__ = ["Cache", "DynamicKVCache", "EncoderDecoderCache", "KVCache", "StaticKVCache"]
