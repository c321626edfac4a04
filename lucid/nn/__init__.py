"""Neural-network building blocks; chiefly the KV caches of :mod:`lucid.nn.cache`."""
from .cache import (Cache, DynamicKVCache, DynamicLayer, EncoderDecoderCache, KVCache, KVLayer, StaticKVCache,
                    StaticLayer)

__all__ = ["Cache", "DynamicKVCache", "DynamicLayer", "EncoderDecoderCache", "KVCache", "KVLayer",
           "StaticKVCache", "StaticLayer"]
