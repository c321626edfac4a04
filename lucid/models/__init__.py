"""Llama-family decoders: loaded from Hugging Face checkpoints, or built in memory with seeded weights."""
from .llama import LlamaConfig, LlamaModel, load_pretrained

__all__ = ["LlamaConfig", "LlamaModel", "load_pretrained"]
