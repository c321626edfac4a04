"""Small models that exercise the caches end to end."""
from .decoder import DecoderConfig, TinyDecoder

__all__ = ["DecoderConfig", "TinyDecoder"]
