"""Neural-network building blocks; chiefly the KV caches of :mod:`lucid.nn.cache`."""
from .cache import *  # noqa: F401,F403 - the caches and their layers are lucid.nn's public names
from .cache import __all__
