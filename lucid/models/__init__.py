"""Models that exercise the caches end to end: the demo's tiny decoder and Llama-family checkpoints."""
from .decoder import DecoderConfig, TinyDecoder
from .llama import LlamaConfig, LlamaModel, load_pretrained

__all__ = ["DecoderConfig", "LlamaConfig", "LlamaModel", "TinyDecoder", "load_pretrained"]
