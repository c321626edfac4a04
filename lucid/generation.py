"""Greedy and beam-search decoding with a KV cache, and the same without one (the check).

Token selection happens on the host: the logits of one step are small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import nn


@dataclass
class Generation:
    """What :func:`generate` produced."""

    tokens: np.ndarray  # (B, prompt + new)
    step_logits: list = field(default_factory=list)  # per step: host (rows, vocab) logits that chose the tokens
    cache_bytes: int = 0


def make_cache(kind: str, model, max_len: int):
    """A fresh cache of ``kind`` (``"dynamic"``, ``"static"`` or ``"none"``) for ``model``."""
    if kind == "dynamic":
        return nn.DynamicKVCache()
    if kind == "static":
        return nn.StaticKVCache(max_cache_len=max_len, num_layers=model.config.num_layers)
    if kind == "none":
        return None
    raise ValueError(f"cache must be 'dynamic', 'static' or 'none', got {kind!r}")


def _last_logits(model, tokens: np.ndarray, window):
    """Recompute the whole sequence without a cache; logits of the last position."""
    length = tokens.shape[1]
    logits = model.forward(tokens, cache=None, cache_position=range(length), window=window)
    return logits[:, length - 1, ...].numpy()


def generate(model, prompt, max_new_tokens: int, cache: str = "dynamic", num_beams: int = 1,
             window: int | None = None, on_step=None) -> Generation:
    """Decode ``max_new_tokens`` tokens after ``prompt`` (host ints, shape ``(B, T0)``).

    The model runs on the backend its weights were created on.

    ``cache="none"`` recomputes the full sequence at every step: the reference
    the cached runs must match. With ``num_beams > 1`` the prompt is prefilled
    once per batch row, then ``batch_repeat_interleave`` expands the cache and
    ``reorder_cache`` follows the surviving beams. With ``window`` the cache is
    cropped to ``window - 1`` tokens before each step (sliding-window decoding).

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models import TinyDecoder
    >>> from lucid.generation import generate
    >>> model = TinyDecoder()
    >>> prompt = np.array([[1, 2, 3]])
    >>> a = generate(model, prompt, 4, cache="dynamic").tokens
    >>> b = generate(model, prompt, 4, cache="none").tokens
    >>> bool((a == b).all()), a.shape
    (True, (1, 7))
    """
    prompt = np.asarray(prompt, dtype=np.int64)
    batch, prompt_len = prompt.shape
    kv = make_cache(cache, model, prompt_len + max_new_tokens)
    result = Generation(tokens=prompt)
    beam_scores = None
    for step in range(max_new_tokens):
        length = result.tokens.shape[1]
        if kv is None:
            logits = _last_logits(model, result.tokens, window)
        else:
            if step == 0:
                new = result.tokens
                slots = list(range(prompt_len))
            else:
                if window is not None and kv.get_seq_length(0) >= window:
                    kv.crop(window - 1)
                new = result.tokens[:, -1:]
                slots = [kv.get_seq_length(0)]
            out = model.forward(new, cache=kv, cache_position=slots,
                                position_ids=range(length - new.shape[1], length), window=window)
            logits = out[:, new.shape[1] - 1, ...].numpy()
        if num_beams == 1:
            chosen = logits.argmax(axis=-1)[:, None]
            result.tokens = np.concatenate([result.tokens, chosen], axis=1)
        else:
            if step == 0:  # every beam starts as a copy of its prompt row
                logits = np.repeat(logits, num_beams, axis=0)
                result.tokens = np.repeat(result.tokens, num_beams, axis=0)
                if kv is not None:
                    kv.batch_repeat_interleave(num_beams)
                beam_scores = np.tile(np.r_[0.0, np.full(num_beams - 1, -np.inf)], batch)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            vocab = logprobs.shape[-1]
            candidates = (beam_scores[:, None] + logprobs).reshape(batch, num_beams * vocab)
            best = np.argsort(-candidates, axis=1, kind="stable")[:, :num_beams]
            rows = (np.arange(batch)[:, None] * num_beams + best // vocab).reshape(-1)
            beam_scores = np.take_along_axis(candidates, best, axis=1).reshape(-1)
            result.tokens = np.concatenate([result.tokens[rows], (best % vocab).reshape(-1, 1)], axis=1)
            if kv is not None:
                kv.reorder_cache(rows)
        result.step_logits.append(logits)
        if on_step is not None:
            on_step(step + 1)
    if num_beams > 1:  # the best beam of each batch row
        winners = np.arange(batch) * num_beams + beam_scores.reshape(batch, num_beams).argmax(axis=1)
        result.tokens = result.tokens[winners]
    result.cache_bytes = 0 if kv is None else kv.nbytes()
    return result
