"""A small decoder-only Transformer with seeded random weights (no downloads).

Pre-norm blocks with RMSNorm, rotary positions, grouped-query attention and a
SiLU MLP, and an output projection of its own. Its forward pass
takes a KV cache and ``cache_position`` exactly as the caches' workflow
describes: new keys/values go in with ``cache.update`` and attention runs over
what comes back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import creation, dtypes
from ..nn.functional import attention_mask, scaled_dot_product_attention
from ..random import manual_seed, randn
from ..tensor import Tensor


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes and attention pattern of :class:`TinyDecoder`.

    ``layer_types`` gives each layer's attention, ``"full"`` or ``"sliding"`` (a query sees
    the ``sliding_window`` positions ending at its own, plus the first ``sink_tokens``);
    empty means every layer is full. Gemma 2 alternates them: ``("sliding", "full") * n``.
    """

    vocab_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    hidden: int = 64
    seed: int = 0
    layer_types: tuple = ()
    sliding_window: int = 64
    sink_tokens: int = 0

    def layer_type(self, layer_idx: int) -> str:
        """``"full"`` or ``"sliding"``."""
        return self.layer_types[layer_idx] if self.layer_types else "full"


class TinyDecoder:
    """A decoder-only Transformer whose weights are drawn from ``config.seed``.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> from lucid.models import TinyDecoder, DecoderConfig
    >>> model = TinyDecoder(DecoderConfig())
    >>> cache = nn.DynamicKVCache()
    >>> logits = model.forward(lucid.Tensor([[1, 2, 3]]), cache=cache, cache_position=[0, 1, 2])
    >>> logits.shape, cache.get_seq_length(0)
    ((1, 3, 256), 3)
    """

    def __init__(self, config: DecoderConfig = DecoderConfig()):
        if config.num_heads % config.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if config.layer_types and (len(config.layer_types) != config.num_layers
                                   or set(config.layer_types) - {"full", "sliding"}):
            raise ValueError(f"layer_types must name 'full' or 'sliding' for each of the {config.num_layers} "
                             f"layers, got {config.layer_types!r}")
        self.config = config
        manual_seed(config.seed)
        c = config

        def weight(fan_in, fan_out):
            return randn(fan_in, fan_out) * (1.0 / math.sqrt(fan_in))

        self.embed = randn(c.vocab_size, c.hidden)
        self.unembed = weight(c.hidden, c.vocab_size)
        self.layers = [
            {
                "q": weight(c.hidden, c.num_heads * c.head_dim),
                "k": weight(c.hidden, c.num_kv_heads * c.head_dim),
                "v": weight(c.hidden, c.num_kv_heads * c.head_dim),
                "o": weight(c.num_heads * c.head_dim, c.hidden),
                "up": weight(c.hidden, 4 * c.hidden),
                "down": weight(4 * c.hidden, c.hidden),
            }
            for _ in range(c.num_layers)
        ]
        half = c.head_dim // 2
        self.inv_freq = 1.0 / (10000.0 ** (creation.arange(half, dtype=dtypes.Float32) * (2.0 / c.head_dim)))

    def forward(self, input_ids, cache=None, cache_position=None) -> Tensor:
        """Logits ``(B, T, vocab)`` for ``input_ids`` ``(B, T)``.

        Parameters
        ----------
        input_ids : Tensor of ints, shape ``(B, T)``
        cache : KVCache, optional
            Keys/values of earlier tokens; updated with this call's tokens. Attention masks
            come from the absolute positions of the keys it returns (``key_positions``), so
            sliding-window and sink layers see exactly what the model's pattern allows.
        cache_position : list, range or 1-D int Tensor of length T, optional
            Absolute positions of the new tokens (default: after what the cache holds).
        """
        ids = self.as_input(input_ids)
        xp = ids.backend.xp
        batch, length = ids.shape
        start = cache.get_seq_length(0) if cache is not None else 0
        positions = self.as_input(range(start, start + length) if cache_position is None else cache_position)
        cos, sin = self._rotary(positions)
        x = ids.with_array(xp.reshape(xp.take(self.embed.array, xp.reshape(ids.array, (-1,)), axis=0), (batch, length, -1)))
        c = self.config
        for layer_idx, w in enumerate(self.layers):
            h = _rms_norm(x)
            q = _heads(h @ w["q"], c.num_heads)
            k = _heads(h @ w["k"], c.num_kv_heads)
            v = _heads(h @ w["v"], c.num_kv_heads)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            key_positions = positions
            if cache is not None:
                # The caller's positions as given (e.g. the host list [t]): the cache recognises
                # the next positions without a copy.
                k, v = cache.update(k, v, layer_idx, cache_position=cache_position)
                key_positions = self.as_input(cache.key_positions(layer_idx, length))
            sliding = c.layer_type(layer_idx) == "sliding"
            visible = attention_mask(positions, key_positions, window=c.sliding_window if sliding else None,
                                     sink_tokens=c.sink_tokens if sliding else 0)
            attn = scaled_dot_product_attention(q, k, v, attn_mask=visible)
            x = x + _merge_heads(attn) @ w["o"]
            h = _rms_norm(x) @ w["up"]
            x = x + (h * _sigmoid(h)) @ w["down"]
        return _rms_norm(x) @ self.unembed

    def as_input(self, values) -> Tensor:
        """Integer ids or positions as a Tensor on the model's backend (where its weights live)."""
        backend = self.embed.backend
        if isinstance(values, Tensor):
            return values if values.backend is backend else Tensor.wrap(backend.from_host(values.numpy()), backend)
        return Tensor.wrap(backend.from_host(np.asarray(values, dtype=np.int64)), backend)

    def _rotary(self, positions: Tensor):
        angles = positions.astype(dtypes.Float32).reshape(-1, 1) * self.inv_freq.reshape(1, -1)
        xp = angles.backend.xp
        return angles.with_array(xp.cos(angles.array)), angles.with_array(xp.sin(angles.array))


def _rms_norm(x: Tensor) -> Tensor:
    xp = x.backend.xp
    return x.with_array(x.array / xp.sqrt(xp.mean(x.array * x.array, axis=-1, keepdims=True) + 1e-6))


def _sigmoid(x: Tensor) -> Tensor:
    xp = x.backend.xp
    return x.with_array(1.0 / (1.0 + xp.exp(-x.array)))


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, length, _ = x.shape
    return x.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, length, dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * dim)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding over the last axis; ``cos``/``sin`` have shape ``(T, D/2)``."""
    xp = x.backend.xp
    half = x.shape[-1] // 2
    a, b = x.array[..., :half], x.array[..., half:]
    c, s = cos.array, sin.array
    return x.with_array(xp.concat([a * c - b * s, a * s + b * c], axis=-1))
