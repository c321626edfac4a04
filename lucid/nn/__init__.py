"""Neural-network building blocks; chiefly the KV caches of :mod:`lucid.nn.cache`."""
from ..serialization import load_cache
from .cache import *  # noqa: F401,F403 - the caches and their layers are lucid.nn's public names
from .cache import __all__ as _caches

__all__ = [*_caches, "load_cache"]
