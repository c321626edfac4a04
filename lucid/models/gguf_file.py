"""Llama-family weights and configuration from a GGUF file (llama.cpp's format), read with ``gguf``.

GGUF names tensors its own way (``blk.3.attn_q.weight``) and stores some of them quantized
(Q8_0, Q4_0, Q4_1, ...). :class:`GGUFWeights` answers the names transformers uses and
dequantizes one tensor at a time, when it is asked for, so loading never holds more than the
final weights and one tensor in flight. llama.cpp's converter reorders the rows of the query
and key projections of ``llama`` models (its rotary embedding pairs neighbouring values, the
Hugging Face one pairs the two halves of a head); :meth:`GGUFWeights.get` undoes that exactly
as transformers' GGUF loader does.
"""
from __future__ import annotations

import functools
import os
import pathlib
from typing import NamedTuple

import numpy as np

from .config import LlamaConfig

#: GGUF ``general.architecture`` -> the transformers architecture it is loaded as.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}

#: Tensor types dequantized at load (the ``gguf`` package's ``GGMLQuantizationType`` names).
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

#: transformers' name -> GGUF's, per layer (``{}`` is the layer index).
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_MODEL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}


def is_gguf(path) -> bool:
    """Whether ``path`` is a regular file that starts with GGUF's magic bytes.

    Examples
    --------
    >>> import tempfile
    >>> from lucid.models.gguf_file import is_gguf
    >>> with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
    ...     _ = f.write(b"GGUF\\x03\\x00\\x00\\x00"); f.flush()
    ...     is_gguf(f.name)
    True
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


class GGUFContents(NamedTuple):
    """What lucid keeps of a parsed GGUF file: its metadata as plain Python values and its
    tensors (``gguf.ReaderTensor``, whose ``data`` are views of the memory-mapped file)."""

    metadata: dict
    tensors: dict


def read_gguf(path) -> GGUFContents:
    """The metadata and tensors of ``path``, parsed once while the file is unchanged: the model
    and its tokenizer read the same metadata (the vocabulary and its merges take seconds to
    parse). ``gguf.GGUFReader`` holds each vocabulary entry as a few small arrays (about 150 MiB
    for a 49,152-token vocabulary); it is dropped once the values are read out, before any
    weight is dequantized, so loading never holds both.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from lucid.models import LlamaConfig
    >>> from lucid.models.gguf_file import read_gguf, write_gguf
    >>> from lucid.models.llama import random_weights
    >>> path = write_gguf(pathlib.Path(tempfile.mkdtemp()) / "m.gguf", LlamaConfig(), random_weights(LlamaConfig()))
    >>> contents = read_gguf(path)
    >>> contents is read_gguf(path), contents.metadata["general.architecture"]
    (True, 'llama')
    """
    path = pathlib.Path(path).resolve()
    stat = os.stat(path)
    return _contents(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _contents(path: pathlib.Path, mtime_ns: int, size: int) -> GGUFContents:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    metadata = {key: field.contents() for key, field in reader.fields.items()}
    return GGUFContents(metadata, {tensor.name: tensor._replace(field=None) for tensor in reader.tensors})


def gguf_name(name: str) -> str:
    """The GGUF name of the tensor transformers calls ``name``.

    Examples
    --------
    >>> from lucid.models.gguf_file import gguf_name
    >>> gguf_name("model.layers.3.self_attn.q_proj.weight"), gguf_name("model.norm.weight")
    ('blk.3.attn_q.weight', 'output_norm.weight')
    """
    if name in _MODEL_NAMES:
        return _MODEL_NAMES[name]
    parts = name.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"]:
        inner = ".".join(parts[3:-1])
        if inner in _LAYER_NAMES:
            return f"blk.{parts[2]}.{_LAYER_NAMES[inner]}.{parts[-1]}"
    return name


class GGUFWeights:
    """A GGUF file's tensors under transformers' names, dequantized to float32 on request.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.gguf`` file.

    Examples
    --------
    >>> from lucid.models.gguf_file import GGUFWeights, write_gguf
    >>> from lucid.models import LlamaConfig
    >>> from lucid.models.llama import random_weights
    >>> import tempfile, pathlib
    >>> path = write_gguf(pathlib.Path(tempfile.mkdtemp()) / "tiny.gguf", LlamaConfig(), random_weights(LlamaConfig()))
    >>> weights = GGUFWeights(path)
    >>> weights.config().num_layers, weights.get("model.layers.0.self_attn.k_proj.weight").shape
    (2, (32, 64))
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        try:
            contents = read_gguf(self.path)
        except (ValueError, OSError) as error:
            raise ValueError(f"{self.path}: not a GGUF file lucid can read ({error})") from None
        self.tensors = contents.tensors
        self._metadata = contents.metadata
        self.architecture = str(self.metadata("general.architecture", "?"))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"{self.path}: architecture {self.architecture!r} is not supported; lucid loads "
                             f"the GGUF architectures {', '.join(ARCHITECTURES)}")
        for tensor in self.tensors.values():
            if tensor.tensor_type.name not in TENSOR_TYPES:
                raise ValueError(f"{self.path}: tensor {tensor.name!r} has type {tensor.tensor_type.name}; lucid "
                                 f"reads {', '.join(TENSOR_TYPES)}")

    def metadata(self, key: str, default=None):
        """The value of metadata ``key`` (a string, number or list), or ``default``."""
        return self._metadata.get(key, default)

    def _required(self, key: str):
        value = self.metadata(f"{self.architecture}.{key}")
        if value is None:
            raise ValueError(f"{self.path}: metadata {self.architecture}.{key} is missing")
        return value

    def config(self):
        """The :class:`~lucid.models.LlamaConfig` the metadata describes."""
        heads = int(self._required("attention.head_count"))
        hidden = int(self._required("embedding_length"))
        embed = self.tensors.get("token_embd.weight")
        if embed is None:
            raise ValueError(f"{self.path}: no tensor token_embd.weight")
        window = int(self.metadata(f"{self.architecture}.attention.sliding_window", 0) or 0)
        return LlamaConfig(
            architecture=ARCHITECTURES[self.architecture],
            vocab_size=int(self.metadata(f"{self.architecture}.vocab_size", int(embed.shape[-1]))),
            hidden_size=hidden, intermediate_size=int(self._required("feed_forward_length")),
            num_layers=int(self._required("block_count")), num_heads=heads,
            num_kv_heads=int(self.metadata(f"{self.architecture}.attention.head_count_kv", heads)),
            head_dim=int(self.metadata(f"{self.architecture}.attention.key_length", hidden // heads)),
            rms_norm_eps=float(self._required("attention.layer_norm_rms_epsilon")),
            rope_theta=float(self.metadata(f"{self.architecture}.rope.freq_base", 10000.0)),
            tie_word_embeddings="output.weight" not in self.tensors,
            qkv_bias="blk.0.attn_q.bias" in self.tensors, o_bias="blk.0.attn_output.bias" in self.tensors,
            layer_types=("sliding",) * int(self._required("block_count")) if window else (),
            sliding_window=window,
            max_positions=int(self.metadata(f"{self.architecture}.context_length", 0) or 0),
        )

    def __contains__(self, name: str) -> bool:
        return gguf_name(name) in self.tensors

    def get(self, name: str) -> np.ndarray:
        """The float32 tensor transformers calls ``name``, laid out as transformers has it."""
        from gguf import quants

        tensor = self.tensors.get(gguf_name(name))
        if tensor is None:
            raise ValueError(f"{self.path}: no tensor {gguf_name(name)!r} (transformers' {name!r})")
        array = _dequantize_rows(quants, tensor.data, tensor.tensor_type, transpose=False)
        rotary = ".attn_q." in tensor.name or ".attn_k." in tensor.name
        if rotary and self.architecture in ("llama", "mistral") and tensor.name.endswith(".weight"):
            heads = int(self._required("attention.head_count" if ".attn_q." in tensor.name
                                       else "attention.head_count_kv"))
            array = _unpermute_rotary(array, heads)
        return array

    def get_transposed(self, name: str) -> np.ndarray:
        """``get(name).T`` as a new C-contiguous array, written a block of rows at a time: the
        full-size untransposed tensor never exists (loading a tied embedding of 49,152 x 576
        otherwise holds two copies of it for a moment).

        Examples
        --------
        >>> import numpy as np, pathlib, tempfile
        >>> from lucid.models.gguf_file import GGUFWeights, write_gguf
        >>> from lucid.models.llama import LlamaConfig, random_weights
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.gguf"
        >>> weights = GGUFWeights(write_gguf(path, LlamaConfig(), random_weights(LlamaConfig())))
        >>> name = "model.layers.0.mlp.up_proj.weight"
        >>> bool(np.array_equal(weights.get_transposed(name), weights.get(name).T))
        True
        """
        from gguf import quants

        tensor = self.tensors.get(gguf_name(name))
        if tensor is None or ".attn_q." in tensor.name or ".attn_k." in tensor.name:
            return np.ascontiguousarray(self.get(name).T)  # missing (get says so), or rows to reorder first
        return _dequantize_rows(quants, tensor.data, tensor.tensor_type, transpose=True)


#: Rows dequantized at once: the temporaries of a block stay a few MiB, whatever the tensor.
ROWS_PER_BLOCK = 1024


def _dequantize_rows(quants, data, tensor_type, transpose: bool) -> np.ndarray:
    """A new float32 array of the tensor ``data`` (rows of the mapped file; transposed if
    ``transpose``, 2-D tensors only), dequantized a block of rows at a time into it: the float32
    result is the only full-size array made."""
    if data.ndim < 2:
        return np.array(quants.dequantize(data, tensor_type), dtype=np.float32)
    first = quants.dequantize(data[:ROWS_PER_BLOCK], tensor_type)
    shape = (data.shape[0], first.shape[1])
    out = np.empty(shape[::-1] if transpose else shape, dtype=np.float32)
    rows = out.T if transpose else out
    rows[:ROWS_PER_BLOCK] = first
    for start in range(ROWS_PER_BLOCK, data.shape[0], ROWS_PER_BLOCK):
        rows[start:start + ROWS_PER_BLOCK] = quants.dequantize(data[start:start + ROWS_PER_BLOCK], tensor_type)
    return out


def _unpermute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's row order for rotary projections: within each head, rows ``0, 2, 4, ...,
    1, 3, 5, ...`` (interleaved pairs) go back to ``0..D/2-1`` then ``D/2..D-1`` (halves)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to a rotary projection (the inverse of :func:`_unpermute_rotary`)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path, config, weights: dict, tokenizer: dict | None = None) -> pathlib.Path:
    """Write ``weights`` (transformers' names, float32) of a ``llama`` ``config`` as a GGUF file,
    laid out as llama.cpp's converter lays it out (for tests and examples; float32 tensors).

    ``tokenizer`` optionally adds ``tokenizer.ggml.*`` metadata: ``tokens``, ``merges``,
    ``token_type``, ``eos_token_id``, ``bos_token_id`` and ``chat_template``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from lucid.models import LlamaConfig, load_pretrained
    >>> from lucid.models.gguf_file import write_gguf
    >>> from lucid.models.llama import random_weights
    >>> path = write_gguf(pathlib.Path(tempfile.mkdtemp()) / "m.gguf", LlamaConfig(), random_weights(LlamaConfig()))
    >>> load_pretrained(path).config.architecture
    'LlamaForCausalLM'
    """
    import gguf

    path = pathlib.Path(path)
    c = config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c.num_layers)
    if config.max_positions:
        writer.add_context_length(config.max_positions)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_heads)
    writer.add_head_count_kv(c.num_kv_heads)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(tokenizer["tokens"])
        writer.add_token_merges(tokenizer["merges"])
        writer.add_token_types(tokenizer["token_type"])
        writer.add_eos_token_id(tokenizer["eos_token_id"])
        writer.add_bos_token_id(tokenizer.get("bos_token_id", tokenizer["eos_token_id"]))
        if tokenizer.get("chat_template"):
            writer.add_chat_template(tokenizer["chat_template"])
    for name, array in weights.items():
        array = np.asarray(array, dtype=np.float32)
        if ".q_proj.weight" in name or ".k_proj.weight" in name:
            array = _permute_rotary(array, c.num_heads if ".q_proj." in name else c.num_kv_heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
