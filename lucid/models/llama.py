"""Llama-family decoders (Llama 2/3, Mistral, Qwen2) from checkpoints written by Hugging Face.

``load_pretrained(directory)`` reads ``config.json`` and ``model.safetensors`` (or the shards
its ``model.safetensors.index.json`` names), float32, float16 or bfloat16, and computes in
float32 on the active backend. No torch at run time.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import pathlib

import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy, so safetensors can read it
import numpy as np
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

import lucid_backends

from ..nn.functional import attention_mask, scaled_dot_product_attention
from ..tensor import Tensor
from ..validation import check_regular_file
from .config import LlamaConfig

def _inverse_frequencies(config: LlamaConfig) -> np.ndarray:
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    if not config.rope_scaling:
        return inv.astype(np.float32)
    p = dict(config.rope_scaling)  # llama 3.1: stretch the low frequencies, keep the high ones
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _read_json(path: pathlib.Path, what: str):
    """The JSON in ``path`` (a regular file); ``ValueError`` naming it when it cannot be read."""
    check_regular_file(path, what)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None


class _Weights:
    """The checkpoint's tensors by name, across shards (confined to its directory), read on demand."""

    def __init__(self, directory: pathlib.Path):
        index = directory / "model.safetensors.index.json"
        if index.exists():
            names = _read_json(index, "a safetensors index")
            names = names.get("weight_map") if isinstance(names, dict) else None
            if not isinstance(names, dict) or not all(isinstance(f, str) for f in names.values()):
                raise ValueError(f"{index}: no weight_map of tensor names to shard files")
        elif (directory / "model.safetensors").exists():
            names = None
        else:
            raise ValueError(f"{directory}: no model.safetensors or model.safetensors.index.json")
        files = sorted(set(names.values())) if names else ["model.safetensors"]
        root = directory.resolve()
        self.where = {}
        for file in files:
            path = (directory / file).resolve()
            if not path.is_relative_to(root):
                raise ValueError(f"{index}: shard {file!r} lies outside the checkpoint directory {directory}")
            check_regular_file(path, "a safetensors shard")
            for key in self._open(path, lambda f: list(f.keys())):
                self.where[key] = path

    @staticmethod
    def _open(path: pathlib.Path, read):
        try:
            with safe_open(str(path), framework="numpy") as f:
                return read(f)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupted?): {exc}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> np.ndarray:
        if name not in self.where:
            raise ValueError(f"the checkpoint has no tensor {name!r} (files: "
                             f"{', '.join(sorted({p.name for p in self.where.values()}))})")
        return self._open(self.where[name], lambda f: f.get_tensor(name)).astype(np.float32)


class LlamaModel:
    """A Llama-family decoder with weights on the active backend, computing in float32.

    Build it from a checkpoint with :func:`load_pretrained`, or with seeded random weights
    with :meth:`random`. ``weights`` is anything that answers ``name in weights`` and
    ``weights.get(name)`` (a host array) for the tensor names transformers uses.

    Examples
    --------
    >>> import numpy as np, lucid.nn as nn
    >>> from lucid.models import LlamaModel
    >>> model = LlamaModel.random()
    >>> cache = nn.DynamicKVCache()
    >>> model.forward(np.array([[1, 2, 3]]), cache=cache).shape, cache.get_seq_length(0)
    ((1, 3, 256), 3)
    """

    @classmethod
    def random(cls, config: LlamaConfig = LlamaConfig(), seed: int = 0) -> "LlamaModel":
        """A model of ``config``'s architecture with weights drawn from ``seed`` (no files).

        The same seed gives the same weights on every backend (they are drawn on the host).

        Examples
        --------
        >>> import numpy as np
        >>> from lucid.models import LlamaConfig, LlamaModel
        >>> model = LlamaModel.random(LlamaConfig(num_layers=3), seed=1)
        >>> len(model.layers), model.forward(np.array([[5]])).shape
        (3, (1, 1, 256))
        """
        return cls(config, random_weights(config, seed))

    def __init__(self, config: LlamaConfig, weights, progress: str | None = None):
        self.config = config
        backend = lucid_backends.get_backend()
        self.backend = backend

        transposed = getattr(weights, "get_transposed", None)  # a reader that transposes as it loads

        def tensor(name, transpose=False):
            if transpose and transposed is not None:
                host = transposed(name).T  # in the stored layout again: checked below, copied by nothing
            else:
                host = weights.get(name)
            if host is None:
                raise ValueError(f"weights: no tensor {name!r}; a {config.architecture} needs the names "
                                 "transformers gives its tensors")
            host = np.asarray(host, dtype=np.float32)
            if host.shape != config.weight_shape(name):
                raise ValueError(f"weights: tensor {name!r} has shape {host.shape}; this {config.architecture} "
                                 f"configuration needs {config.weight_shape(name)}")
            return Tensor.wrap(backend.from_host(np.ascontiguousarray(host.T if transpose else host)), backend)

        def maybe(name, transpose=False):
            return tensor(name, transpose) if name in weights else None

        c = config
        self.norm = tensor("model.norm.weight")
        self._tied = c.tie_word_embeddings and "lm_head.weight" not in weights
        if self._tied:
            # One copy, laid out for the output projection (the product every step runs, 5-40%
            # faster on a contiguous (hidden, vocab) matrix); the lookups read it transposed.
            self.unembed = tensor("model.embed_tokens.weight", transpose=True)
            self.embed = Tensor.wrap(backend.xp.matrix_transpose(self.unembed.array), backend)
        else:
            self.embed = tensor("model.embed_tokens.weight")
            self.unembed = tensor("lm_head.weight", transpose=True)
        self.layers = []
        # A bar on a terminal only (tqdm's disable=None), when the caller names what loads
        for i in tqdm(range(c.num_layers), desc=progress, unit="layer", leave=False,
                      disable=None if progress else True):
            p = f"model.layers.{i}."
            layer = {name: tensor(p + path + ".weight", transpose=True) for name, path in (
                ("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"),
                ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"), ("down", "mlp.down_proj"))}
            for name, path in (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                               ("o", "self_attn.o_proj")):
                layer[name + "_bias"] = maybe(p + path + ".bias")
            # The MLP's two input projections as one (hidden, 2 x intermediate) matrix: one
            # product instead of two (about 10% faster on a prefill's tokens); "gate" and "up"
            # are views of its halves.
            gate_up = backend.xp.concat([layer.pop("gate").array, layer.pop("up").array], axis=1)
            layer["gate_up"] = Tensor.wrap(gate_up, backend)
            layer["gate"] = Tensor.wrap(gate_up[:, :c.intermediate_size], backend)
            layer["up"] = Tensor.wrap(gate_up[:, c.intermediate_size:], backend)
            layer["norm1"] = tensor(p + "input_layernorm.weight")
            layer["norm2"] = tensor(p + "post_attention_layernorm.weight")
            self.layers.append(layer)
        self.inv_freq = Tensor.wrap(backend.from_host(_inverse_frequencies(c)), backend)
        self._weights_digest: str | None = None

    def fingerprint(self) -> str:
        """A SHA-256 of the configuration and every weight (computed once, about a second per
        500 MB): names the model where processes share what it computed, so a prefix store keyed
        by it never hands one model's keys and values to another.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> a, b = LlamaModel.random(seed=1), LlamaModel.random(seed=2)
        >>> a.fingerprint() == LlamaModel.random(seed=1).fingerprint(), a.fingerprint() == b.fingerprint()
        (True, False)
        """
        if self._weights_digest is None:
            digest = hashlib.sha256()
            tensors = [self.embed, self.norm, self.unembed] + [
                layer[name] for layer in self.layers for name in sorted(layer)
                if layer[name] is not None and name != "gate_up"]  # its halves are hashed
            for tensor in tensors:
                digest.update(np.ascontiguousarray(self.backend.to_host(tensor.array)))
            self._weights_digest = digest.hexdigest()
        return hashlib.sha256(f"{self.config}/{self._weights_digest}".encode()).hexdigest()

    def with_attention(self, layer_types: tuple, sliding_window: int, sink_tokens: int = 0) -> "LlamaModel":
        """The same weights with other attention: each layer ``"full"`` or ``"sliding"`` over
        ``sliding_window`` positions plus the first ``sink_tokens`` (the demo's sliding-window
        and hybrid runs on a trained model). The weights are shared, not copied.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> model = LlamaModel.random()
        >>> windowed = model.with_attention(("sliding", "full"), sliding_window=8, sink_tokens=2)
        >>> windowed.config.layer_type(0), windowed.embed is model.embed
        ('sliding', True)
        """
        variant = copy.copy(self)
        variant.config = dataclasses.replace(self.config, layer_types=tuple(layer_types),
                                             sliding_window=sliding_window, sink_tokens=sink_tokens)
        return variant

    def forward(self, input_ids, cache=None, cache_position=None, logits_to_keep: int = 0) -> Tensor:
        """Logits ``(B, T, vocab)`` for int ids ``(B, T)`` (host or a Tensor).

        Parameters
        ----------
        input_ids : array-like of ints, shape ``(B, T)``
        cache : Cache, optional
            Keys/values of earlier tokens, updated with this call's. Attention masks come from
            the cache's absolute key positions (``key_positions``), so sliding-window layers
            see exactly the window (and sinks) the config names.
        cache_position : list, range or 1-D ints of length T, optional
            Absolute positions of the new tokens; by default they follow what the cache holds.
        logits_to_keep : int
            Only the last this many positions' logits (``0``: all), as transformers'
            argument of that name: generation needs the last one, and the output projection
            of a long prompt is the largest matrix product of a prefill. The last layer then
            runs queries, attention and MLP for the kept positions only (it still writes
            every token's keys and values).
        """
        ids = np.asarray(input_ids.numpy() if isinstance(input_ids, Tensor) else input_ids, dtype=np.int64)
        if ids.ndim != 2 or 0 in ids.shape:
            raise ValueError(f"input_ids must be token ids of shape (batch, tokens), at least one of each; "
                             f"got shape {ids.shape}")
        backend, xp, c = self.backend, self.backend.xp, self.config
        batch, length = ids.shape
        start = cache.get_seq_length(0) if cache is not None else 0
        host_positions = np.arange(start, start + length) if cache_position is None else np.asarray(cache_position)
        positions, (cos, sin) = self._rotary(host_positions)
        x = xp.reshape(self._lookup(backend.from_host(ids.reshape(-1))), (batch, length, c.hidden_size))
        keep = logits_to_keep if 0 < logits_to_keep < length else length
        written = host_positions.tolist() if cache_position is None else cache_position  # as the caller gave them
        blocks = _token_blocks(batch, length, c.hidden_size, backend.threads())
        with backend.parallel_region() if len(blocks) > 1 else contextlib.nullcontext():
            for layer_idx in range(c.num_layers):
                # Only the kept positions' outputs of the last layer are used: it writes every
                # token's keys and values, but runs queries, attention and the MLP for those alone.
                outputs = keep if layer_idx == c.num_layers - 1 else length
                x = self._layer(layer_idx, x, blocks, (cos, sin), positions, cache, written, outputs)
        return Tensor.wrap(self._linear(self._rms(x, self.norm.array), self.unembed, None), backend)

    def forward_groups(self, groups: list, cache) -> list:
        """One forward over groups of rows that differ in length: each group ``(ids, batch,
        cache_position)`` is ``ids`` ``(B, T)`` for the sequences ``batch`` of a
        :class:`~lucid.nn.PagedKVCache` (set as ``cache.batch`` for the group's writes) at
        ``cache_position`` (``(T,)``, or ``(B, T)``). Returns each group's logits at its rows'
        last positions, ``(B, vocab)``.

        The linear layers and the MLP run once over every token of every group; only attention
        runs group by group. A serving step decodes its running requests (``T = 1``) and
        prefills a prompt chunk in one pass, reading the weights once instead of twice.

        Examples
        --------
        >>> import numpy as np, lucid.nn as nn
        >>> from lucid.models import LlamaModel
        >>> model, cache = LlamaModel.random(), nn.PagedKVCache(16, block_size=4)
        >>> first, second = cache.add_sequence(), cache.add_sequence()
        >>> decode, prompt = model.forward_groups([([[1, 2, 3]], [first], [0, 1, 2]), ([[4, 5]], [second], [0, 1])],
        ...                                       cache)
        >>> decode.shape, cache.lengths[first][0], cache.lengths[second][0]
        ((1, 256), 3, 2)
        """
        backend, xp, c = self.backend, self.backend.xp, self.config
        prepared, tokens = [], []
        for ids, batch, cache_position in groups:
            ids = np.asarray(ids, dtype=np.int64)
            positions, (cos, sin) = self._rotary(np.asarray(cache_position))
            prepared.append((ids.shape, list(batch), cache_position, positions, cos, sin))
            tokens.append(ids.reshape(-1))
        x = self._lookup(backend.from_host(np.concatenate(tokens)))[None, ...]  # (1, N, hidden)
        for layer_idx in range(c.num_layers):
            w = self.layers[layer_idx]
            h = self._rms(x, w["norm1"].array)
            q_all, k_all, v_all = (self._linear(h, w[name], w[name + "_bias"]) for name in ("q", "k", "v"))
            outputs, start = [], 0
            for (rows, length), batch, written, positions, cos, sin in prepared:
                part = slice(start, start + rows * length)
                start += rows * length

                def heads(a, count, rotate=True):
                    return self._heads(xp.reshape(a[0, part, :], (rows, length, -1)), count,
                                       *((cos, sin) if rotate else ()))

                cache.batch = batch
                k, v = cache.update(Tensor.wrap(heads(k_all, c.num_kv_heads), backend),
                                    Tensor.wrap(heads(v_all, c.num_kv_heads, rotate=False), backend), layer_idx,
                                    cache_position=written)
                attn = self._attention(layer_idx, heads(q_all, c.num_heads), k, v, positions,
                                       cache.key_positions(layer_idx, length))
                outputs.append(xp.reshape(xp.permute_dims(attn, (0, 2, 1, 3)), (1, rows * length, -1)))
            x = self._mlp(x, xp.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0], w)
        last, start = [], 0
        for (rows, length), *_ in prepared:
            last += [start + row * length + length - 1 for row in range(rows)]
            start += rows * length
        x = xp.take(x[0, ...], backend.from_host(np.asarray(last, dtype=np.int64)), axis=0)[None, ...]
        logits = self._linear(self._rms(x, self.norm.array), self.unembed, None)[0, ...]
        out, start = [], 0
        for (rows, _), *_ in prepared:
            out.append(Tensor.wrap(logits[start:start + rows, ...], backend))
            start += rows
        return out

    def _rotary(self, host_positions) -> tuple:
        """The positions as a Tensor, and the rotary factors ``(cos, sin)``: ``(T, 2, D/2)``,
        rotating both halves of a head at once (see ``_heads``); with a position per row
        (``(B, T)``: rows of different lengths), ``(B, 1, T, 2, D/2)``."""
        backend, xp = self.backend, self.backend.xp
        positions = Tensor.wrap(backend.from_host(np.asarray(host_positions, dtype=np.int64)), backend)
        angles = xp.astype(positions.array, xp.float32)[..., None] * self.inv_freq.array
        cos, sin = xp.cos(angles), xp.sin(angles)
        cos, sin = xp.stack([cos, cos], axis=-2), xp.stack([-sin, sin], axis=-2)
        if positions.ndim == 2:
            cos, sin = cos[:, None, ...], sin[:, None, ...]
        return positions, (cos, sin)

    def _layer(self, layer_idx: int, x, blocks, rotary, positions: Tensor, cache, written, outputs: int):
        """Decoder layer ``layer_idx`` over the tokens ``x`` ``(B, T, hidden)`` (in ``blocks`` of
        positions) at ``positions`` (written to ``cache``, if any, at ``written``): the outputs
        ``(B, outputs, hidden)`` of the last ``outputs`` tokens."""
        backend, xp, c, w = self.backend, self.backend.xp, self.config, self.layers[layer_idx]
        batch, length = x.shape[0], x.shape[1]
        cos, sin = rotary
        key_positions = positions
        queries = outputs == length
        projected = self._by_tokens(blocks, lambda t0, t1: self._project(x[:, t0:t1, :], w, cos[..., t0:t1, :, :],
                                                                         sin[..., t0:t1, :, :], queries), axis=2)
        if queries:
            q, k, v = projected
        else:
            k, v = projected
            first = length - outputs
            x, positions = x[:, first:, :], positions.with_array(positions.array[..., first:])
            q = self._queries(self._rms(x, w["norm1"].array), w, cos[..., first:, :, :], sin[..., first:, :, :])
            blocks = _token_blocks(batch, outputs, c.hidden_size, backend.threads())
        k_t, v_t = Tensor.wrap(k, backend), Tensor.wrap(v, backend)
        if cache is not None:
            k_t, v_t = cache.update(k_t, v_t, layer_idx, cache_position=written)
            key_positions = cache.key_positions(layer_idx, length)
        attn = self._attention(layer_idx, q, k_t, v_t, positions, key_positions)
        attn = xp.reshape(xp.permute_dims(attn, (0, 2, 1, 3)), (batch, outputs, c.num_heads * c.head_dim))
        return self._by_tokens(blocks, lambda t0, t1: (self._mlp(x[:, t0:t1, :], attn[:, t0:t1, :], w),), axis=1)[0]

    def _attention(self, layer_idx: int, q, k: Tensor, v: Tensor, positions: Tensor, key_positions: Tensor):
        """Attention of layer ``layer_idx``'s queries ``q`` (an array ``(B, heads, T, D)``) at
        ``positions`` over keys ``k`` and values ``v`` at ``key_positions``, masked as the
        layer's type says: an array ``(B, heads, T, D)``."""
        c, backend = self.config, self.backend
        query = Tensor.wrap(q, backend)
        sliding = c.layer_type(layer_idx) == "sliding"
        # A decode step (one query) never is: it skips the check, which reads the key positions.
        if not sliding and positions.shape[-1] > 1 and _causal(backend.xp, positions.array,
                                                                positions.as_operand(key_positions)):
            return scaled_dot_product_attention(query, k, v, is_causal=True).array
        mask = attention_mask(positions, key_positions, window=c.sliding_window if sliding else None,
                              sink_tokens=c.sink_tokens if sliding else 0)
        if mask.ndim == 3:  # a mask per row: (B, Lq, Lk) -> (B, 1, Lq, Lk), the same for every head
            mask = mask.with_array(mask.array[:, None, ...])
        return scaled_dot_product_attention(query, k, v, attn_mask=mask).array

    def _by_tokens(self, blocks, fn, axis: int) -> tuple:
        """``fn(t0, t1)`` (a tuple of arrays) for each block of tokens, joined along ``axis``."""
        parts = self.backend.map_blocks(lambda block: fn(*block), blocks)
        if len(parts) == 1:
            return parts[0]
        return tuple(self.backend.xp.concat(list(pieces), axis=axis) for pieces in zip(*parts))

    def _project(self, x, w: dict, cos, sin, queries: bool) -> tuple:
        """Queries (if ``queries``), keys and values ``(B, heads, T, D)`` of the tokens ``x``, rotated."""
        c = self.config
        h = self._rms(x, w["norm1"].array)
        kv = (self._heads(self._linear(h, w["k"], w["k_bias"]), c.num_kv_heads, cos, sin),
              self._heads(self._linear(h, w["v"], w["v_bias"]), c.num_kv_heads))
        return (self._queries(h, w, cos, sin),) + kv if queries else kv

    def _queries(self, h, w: dict, cos, sin):
        """Rotated queries ``(B, heads, T, D)`` of the normalised tokens ``h``."""
        return self._heads(self._linear(h, w["q"], w["q_bias"]), self.config.num_heads, cos, sin)

    def _mlp(self, x, attn, w: dict):
        """The rest of a layer for the tokens ``x``: attention's output projection, then the MLP."""
        x = x + self._linear(attn, w["o"], w["o_bias"])
        h = self._rms(x, w["norm2"].array)
        gate_up = self._linear(h, w["gate_up"], None)
        gate, up = gate_up[..., :self.config.intermediate_size], gate_up[..., self.config.intermediate_size:]
        # SiLU(gate) * up = gate / (1 + e ** -gate) * up, reusing one temporary (the backend
        # picks its faster exponential)
        act = self.backend.exp_negated(gate)
        act += 1.0
        act = gate / act
        act *= up
        return x + self._linear(act, w["down"], None)

    def _lookup(self, ids):
        """The embeddings ``(N, hidden)`` of the token ids ``ids`` (a backend array), a new
        C-contiguous array. A tied embedding is stored as the output projection's ``(hidden,
        vocab)`` matrix: its columns are gathered (taking rows of its transposed view would
        make NumPy copy the whole matrix first)."""
        xp = self.backend.xp
        if self._tied:
            out = xp.empty((ids.shape[0], self.config.hidden_size), dtype=self.unembed.array.dtype)
            out[...] = xp.matrix_transpose(xp.take(self.unembed.array, ids, axis=1))
            return out
        return xp.take(self.embed.array, ids, axis=0)

    def _linear(self, x, weight: Tensor, bias):
        w = weight.array
        if x.shape[0] > 1:
            # One matrix product over every token: (B, T, in) @ (in, out) would broadcast the
            # weight and run B products, each reading the whole weight (B matrix-vector
            # products in a decode step).
            xp = self.backend.xp
            out = xp.reshape(xp.reshape(x, (-1, w.shape[0])) @ w, tuple(x.shape[:-1]) + (w.shape[1],))
        else:
            out = x @ w
        return out if bias is None else out + bias.array

    def _rms(self, x, weight):
        xp = self.backend.xp
        # vecdot: the squares' sum in one operation, without the temporary of x * x
        mean_square = xp.vecdot(x, x)[..., None] / x.shape[-1]
        return x * (weight / xp.sqrt(mean_square + self.config.rms_norm_eps))

    def _heads(self, x, heads: int, cos=None, sin=None):
        xp = self.backend.xp
        batch, length, _ = x.shape
        x = xp.permute_dims(xp.reshape(x, (batch, length, heads, self.config.head_dim)), (0, 2, 1, 3))
        if cos is None:
            return x
        # Rotary embedding on the halves (a, b) of each head: (a cos - b sin, b cos + a sin), as
        # x * cos + (x with its halves swapped) * sin with the (T, 2, D/2) factors of forward.
        halves = xp.reshape(x, tuple(x.shape[:-1]) + (2, self.config.head_dim // 2))
        return xp.reshape(halves * cos + xp.flip(halves, axis=-2) * sin, tuple(x.shape))


#: Tokens (batch rows x positions) per block of the token-by-token parts of a layer. Up to
#: this many tokens form one block, whose matrix products BLAS spreads over the cores itself;
#: longer inputs are split for the worker threads (BLAS at one thread per call meanwhile).
#: On NumPy with two cores, SmolLM2's 1,024 tokens in two blocks of 512 prefill 1.15-1.2x
#: faster than in one: the threads also share the element-wise work, and attention's blocks,
#: which follow on the worker threads, no longer start beside a BLAS thread still spinning
#: after its call. With one thread the two are alike. An input that would make fewer blocks
#: than there are threads is split into a block per thread once each holds half this many
#: tokens: on two cores SmolLM2's 512-token prefill (batch 1, or 8 rows of 64) ran 1.07-1.21x
#: faster in two blocks of 256 than in one, its 128- and 256-token prefills 1.02-1.2x slower.
TOKENS_PER_BLOCK = 512
#: Models narrower than this take blocks of twice ``TOKENS_PER_BLOCK``: their blocks hold too
#: little work to gain from the split (a 256-wide model's 1,024-token prefill ran 1.15x slower
#: in two blocks on the Xeon of ``docs/benchmarks.md``, its prefill of 8 rows of 1,024 tokens
#: 1.03x slower in blocks of 512 on the AMD EPYC). An input that is one such block, but with
#: rows of a whole block each, is still split evenly among the threads: its attention outweighs
#: the rest, and runs faster beside the other block's one-thread products than after a
#: two-thread product whose second BLAS thread still spins on a core (the same model's
#: 1,024-token prefill ran 1.24x faster in two blocks on the AMD EPYC; its prefill of 8 rows of
#: 128 tokens, with little attention, 1.15x slower).
SPLIT_FROM_HIDDEN = 512


def _causal(xp, positions, key_positions) -> bool:
    """Whether queries at ``positions`` over keys at ``key_positions`` (1-D arrays) see exactly
    the keys up to their own position: the keys are consecutive positions in order and the
    queries are the last of them, several (a prefill). Attention is then causal, and needs no
    mask built or read.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models.llama import _causal
    >>> _causal(np, np.arange(5, 8), np.arange(8)), _causal(np, np.arange(5, 8), np.array([0, 1, 6, 7]))
    (True, False)
    """
    q_len, k_len = positions.shape[-1], key_positions.shape[-1]
    if positions.ndim != 1 or key_positions.ndim != 1 or q_len < 2 or k_len < q_len:
        return False
    return bool(xp.all(key_positions[1:] - key_positions[:-1] == 1)) and bool(
        xp.all(positions == key_positions[k_len - q_len:]))


def _token_blocks(batch: int, length: int, hidden: int, threads: int = 1) -> list:
    """Everything but attention works token by token: a long input goes through it in blocks
    of positions ``[(t0, t1), ...]``, which the backend may run at once (NumPy: one per core,
    ``threads`` of them). An input too short for a block per thread, but with at least half a
    block's tokens per thread (of a model wide enough to split), is split evenly among them.
    A narrow model's blocks are twice as large, and split evenly only when its rows are a whole
    block long. The blocks are of even size, and as many for each thread: an input a little
    longer than a whole number of blocks is not left a small last block (or one more block for
    one thread) while the other cores wait.

    Examples
    --------
    >>> from lucid.models.llama import _token_blocks
    >>> _token_blocks(1, 1024, 576), _token_blocks(1, 512, 576, threads=2), _token_blocks(1, 256, 576, threads=2)
    ([(0, 512), (512, 1024)], [(0, 256), (256, 512)], [(0, 256)])
    >>> _token_blocks(8, 128, 256, threads=2), _token_blocks(1, 1024, 256, threads=2), _token_blocks(1, 600, 576)
    ([(0, 128)], [(0, 512), (512, 1024)], [(0, 300), (300, 600)])
    >>> _token_blocks(1, 1100, 576, threads=2)
    [(0, 275), (275, 550), (550, 825), (825, 1100)]
    """
    wide = hidden >= SPLIT_FROM_HIDDEN
    tokens = TOKENS_PER_BLOCK if wide else 2 * TOKENS_PER_BLOCK
    step = max(1, -(-tokens // batch))
    count = -(-length // step)
    if threads > 1 and (wide or length >= tokens) and count < threads <= batch * length * 2 // tokens:
        count = threads  # split evenly among them
    elif threads > 1 and count > threads:
        count = -(-count // threads) * threads  # as many blocks for each thread
    if length:
        step = -(-length // count)  # blocks of even size
    return [(t, min(length, t + step)) for t in range(0, length, step)]


def load_pretrained(path) -> LlamaModel:
    """The Llama-family model saved at ``path``: a checkpoint directory (``config.json`` +
    safetensors weights, as transformers writes it) or a GGUF file (llama.cpp's format:
    ``llama``, ``mistral`` or ``qwen2`` metadata; F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors,
    dequantized to float32 one at a time as they load).

    Unsupported architectures, tensor types and missing tensors raise ``ValueError`` naming
    the file and what was found.

    Examples
    --------
    >>> from lucid.models import load_pretrained
    >>> from lucid.models.llama import write_random_checkpoint
    >>> model = load_pretrained(write_random_checkpoint())
    >>> model.config.architecture, model.config.num_layers
    ('LlamaForCausalLM', 2)
    """
    from .gguf_file import GGUFWeights, is_gguf

    directory = pathlib.Path(path)
    if is_gguf(directory):
        weights = GGUFWeights(directory)
        return LlamaModel(weights.config(), weights, progress=f"loading {directory.name}")
    if directory.is_file():
        raise ValueError(f"{directory}: neither a GGUF file nor a checkpoint directory")
    if not directory.exists():
        raise ValueError(f"{directory}: no such file or directory (expected a GGUF file or a checkpoint "
                         "directory with config.json)")
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ValueError(f"{config_path}: no config.json in the checkpoint directory")
    raw = _read_json(config_path, "a config.json")
    return LlamaModel(LlamaConfig.from_json(raw, str(config_path)), _Weights(directory),
                      progress=f"loading {directory.name}")


def random_weights(config: LlamaConfig, seed: int = 0) -> dict:
    """Seeded float32 host weights for ``config``, named as transformers names them.

    Projections are scaled by ``1/sqrt(fan_in)`` and the norms' gains stay near one, so the
    activations keep unit size through the layers.

    Examples
    --------
    >>> from lucid.models import LlamaConfig
    >>> from lucid.models.llama import random_weights
    >>> random_weights(LlamaConfig())["model.layers.0.self_attn.k_proj.weight"].shape
    (32, 64)
    """
    c = config
    rng = np.random.default_rng(seed)

    def projection(rows, fan_in):
        return (rng.standard_normal((rows, fan_in)) / math.sqrt(fan_in)).astype(np.float32)

    def gain():
        return (1.0 + 0.1 * rng.standard_normal(c.hidden_size)).astype(np.float32)

    weights = {"model.embed_tokens.weight": rng.standard_normal((c.vocab_size, c.hidden_size)).astype(np.float32)}
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        weights.update({p + "self_attn.q_proj.weight": projection(q, c.hidden_size),
                        p + "self_attn.k_proj.weight": projection(kv, c.hidden_size),
                        p + "self_attn.v_proj.weight": projection(kv, c.hidden_size),
                        p + "self_attn.o_proj.weight": projection(c.hidden_size, q),
                        p + "mlp.gate_proj.weight": projection(c.intermediate_size, c.hidden_size),
                        p + "mlp.up_proj.weight": projection(c.intermediate_size, c.hidden_size),
                        p + "mlp.down_proj.weight": projection(c.hidden_size, c.intermediate_size),
                        p + "input_layernorm.weight": gain(), p + "post_attention_layernorm.weight": gain()})
        for name, rows in (("q", q), ("k", kv), ("v", kv)) if c.qkv_bias else ():
            weights[p + f"self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(rows)).astype(np.float32)
    weights["model.norm.weight"] = gain()
    if not c.tie_word_embeddings:
        weights["lm_head.weight"] = projection(c.vocab_size, c.hidden_size)
    return weights


def write_random_checkpoint(directory=None, config: LlamaConfig = LlamaConfig(), seed: int = 0) -> pathlib.Path:
    """Write a seeded random checkpoint of ``config`` as transformers lays it out: a checkpoint
    to try :func:`load_pretrained` and the demo (``--model DIR``) on without the network.

    Without ``directory`` it goes to a new temporary directory, removed when the process exits.

    Examples
    --------
    >>> from lucid.models.llama import write_random_checkpoint
    >>> sorted(p.name for p in write_random_checkpoint().iterdir())
    ['config.json', 'model.safetensors']
    """
    import atexit
    import shutil
    import tempfile

    import safetensors.numpy

    if directory is None:
        directory = tempfile.mkdtemp(prefix="lucid-checkpoint-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(random_weights(config, seed), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config.to_json()))
    return directory


__all__ = ["LlamaConfig", "LlamaModel", "load_pretrained"]
