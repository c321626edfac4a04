"""Greedy, sampled and beam-search decoding with a KV cache, the same without one (the check),
and streaming text.

Token selection happens on the host: the logits of one step are small.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import nn
from .validation import check_int


@dataclass
class Generation:
    """What :func:`generate` produced."""

    tokens: np.ndarray  # (B, prompt + steps); a row that stopped repeats its stop token after it
    step_logits: list = field(default_factory=list)  # per step: host (rows running, vocab) logits that chose
    cache_bytes: int = 0
    new_tokens: list = field(default_factory=list)  # per row: its new ids, up to and including a stop token


CACHE_KINDS = ("dynamic", "static", "sliding", "quantized-8", "quantized-4", "hybrid", "paged", "none")


def make_cache(kind: str, model, max_len: int, max_batch_size: int | None = None):
    """A fresh cache of ``kind`` (one of :data:`CACHE_KINDS`) for ``model``.

    ``dynamic`` reserves ``max_len`` positions per layer (allocated at once, growing past them
    only if asked to); ``static`` allocates ``max_len`` positions and, when ``max_batch_size``
    is given, that many batch rows (so that beam search grows the batch in place).

    ``sliding`` gives every layer the model's sliding window; ``hybrid`` gives each layer the
    kind its attention needs (a sliding window for ``"sliding"`` layers, a dynamic layer for
    ``"full"`` ones); ``quantized-8``/``quantized-4`` quantize every layer (keys per channel over
    groups of 64 positions, values per position over groups of 64 head-dimension values, or of
    the largest divisor of the head dimension below 64; the first 4 positions, the attention
    sinks, and the last 32 to 95 in full precision); ``paged`` is a
    :class:`~lucid.nn.PagedKVCache` with blocks of 16 for every row.

    Examples
    --------
    >>> from lucid.models import LlamaConfig, LlamaModel
    >>> from lucid.generation import make_cache
    >>> model = LlamaModel.random(LlamaConfig(layer_types=("sliding", "full"), sliding_window=8))
    >>> [type(layer).__name__ for layer in make_cache("hybrid", model, 100).layers]
    ['SlidingWindowLayer', 'DynamicLayer']
    """
    c = model.config
    if kind == "dynamic":
        return nn.DynamicKVCache(reserve=max_len)
    if kind == "static":
        return nn.StaticKVCache(max_cache_len=max_len, num_layers=c.num_layers, max_batch_size=max_batch_size)
    if kind == "sliding" and not c.sliding_window:
        raise ValueError(f"cache={kind!r} needs a model with sliding-window attention; this "
                         f"{c.architecture} attends to every position: use dynamic, static, quantized-8 or "
                         "quantized-4 (or LlamaModel.with_attention for a windowed variant)")
    if kind == "sliding":
        return nn.SlidingWindowKVCache(c.sliding_window, sink_tokens=c.sink_tokens)
    if kind in ("quantized-8", "quantized-4"):
        return nn.QuantizedKVCache(bits=int(kind[-1]), group_size=_value_group(c.head_dim), residual_length=32,
                                   sink_tokens=4)
    if kind == "hybrid":
        return nn.HybridKVCache([
            nn.SlidingWindowLayer(c.sliding_window, c.sink_tokens) if c.layer_type(i) == "sliding" else nn.DynamicLayer()
            for i in range(c.num_layers)
        ])
    if kind == "paged":  # blocks of 16 for every row's positions, and one more per row for copy-on-write
        rows = max_batch_size or 1
        return nn.PagedKVCache(num_blocks=rows * (-(-max_len // 16) + 1), block_size=16)
    if kind == "none":
        return None
    raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}; got {kind!r}")


def _value_group(head_dim: int) -> int:
    """The quantized caches' group size: 64, or the largest divisor of ``head_dim`` below it."""
    return max(size for size in range(1, 65) if head_dim % size == 0)


def _last_logits(model, tokens: np.ndarray):
    """Recompute the whole sequence without a cache; logits of the last position."""
    length = tokens.shape[1]
    logits = model.forward(tokens, cache=None, cache_position=range(length), logits_to_keep=1)
    return logits[:, 0, ...].numpy()


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None) -> np.ndarray:
    """One token per row of host ``logits`` ``(rows, vocab)``: softmax at ``temperature``, restricted to
    the ``top_k`` most likely tokens and to the smallest set whose probability reaches ``top_p``
    (both as transformers applies them: top-k first, the most likely token always kept), drawn
    with ``rng`` (one uniform number per row, so a seed gives the same tokens on every backend).

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.generation import sample
    >>> logits = np.array([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    >>> sample(logits, np.random.default_rng(0), top_k=1).tolist()
    [1, 0]
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    order = np.argsort(-scaled, axis=-1, kind="stable")
    ranked = np.take_along_axis(scaled, order, axis=-1)
    if top_k is not None:
        ranked[:, top_k:] = -np.inf
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None:
        before = np.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above each
        probs[before >= top_p] = 0.0  # never the most likely token: nothing ranks above it
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random(len(probs)) * cumulative[:, -1]
    picks = np.minimum((cumulative <= draws[:, None]).sum(axis=-1), probs.shape[-1] - 1)
    return order[np.arange(len(order)), picks]


def check_sampling(temperature=0.0, top_k=None, top_p=None, seed=None, num_beams: int = 1,
                   stop_token_ids=None) -> tuple:
    """The sampling arguments of :func:`generate`, checked: ``(temperature, top_k, top_p, seed,
    stop ids as a frozenset)``; a ``ValueError`` or ``TypeError`` names the one that is wrong.

    Examples
    --------
    >>> from lucid.generation import check_sampling
    >>> check_sampling(0.7, top_p=0.9)
    (0.7, None, 0.9, None, frozenset())
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature!r}")
    top_k = None if top_k is None else check_int(top_k, "top_k", minimum=1)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
    seed = None if seed is None else check_int(seed, "seed")
    stops = () if stop_token_ids is None else tuple(check_int(t, "stop_token_ids") for t in stop_token_ids)
    if num_beams > 1 and (temperature > 0 or stops):
        raise ValueError(f"num_beams={num_beams} decodes greedily to max_new_tokens: pass temperature=0 and no "
                         "stop_token_ids, or num_beams=1")
    return float(temperature), top_k, top_p, seed, frozenset(stops)


def generate(model, prompt, max_new_tokens: int, cache="dynamic", num_beams: int = 1, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_token_ids=None, on_step=None, prompt_lookup: int = 0) -> Generation:
    """Decode up to ``max_new_tokens`` tokens after ``prompt`` (host ints, shape ``(B, T0)``).

    ``cache`` is a kind for :func:`make_cache`, or a cache object: empty, or holding a prefix
    of the prompt shorter than it (e.g. fetched from a :class:`~lucid.nn.PrefixStore`, or an
    earlier turn of a chat), in which case only the rest of the prompt is prefilled.

    ``prompt`` may also be a list of prompts of different lengths: each is prefilled alone
    into one :class:`~lucid.nn.PagedKVCache` (``cache`` ``"dynamic"``, ``"paged"`` or an empty
    paged cache; prompts that share leading blocks share them), then all decode together, each
    row at its own position; every row's tokens are the ones its prompt alone gives (greedy).
    ``out.tokens`` is then a list of each row's ids.

    ``temperature=0`` (the default) picks the most likely token, exactly; above 0 the token is
    drawn by :func:`sample` with ``top_k``/``top_p`` from ``numpy.random.default_rng(seed)``.
    A row stops after it emits one of ``stop_token_ids`` (e.g. the tokenizer's
    ``stop_token_ids``); the rows still running go on alone (the cache keeps only their
    rows, so a finished row costs nothing more), and decoding ends when every row has stopped.

    The model runs on the backend its weights were created on. Each step sends
    ``cache_position=[t]``, as models do.

    ``prompt_lookup=k`` (greedy, one prompt row) drafts up to ``k`` tokens at each step by
    finding the text's last n-gram (3, 2 or 1 tokens) earlier in it and copying what followed
    there, checks the draft with one forward of all its tokens, keeps the drafted tokens that
    greedy decoding agrees with plus the model's own next token, and drops the rest from the
    cache with :meth:`~lucid.nn.Cache.trim`. The result is greedy decoding's, at fewer forward
    passes when the answer quotes its prompt (a summary, code edits, "repeat this"). A step
    whose draft the cache cannot trim back (a sliding window that has started to slide, a
    quantized layer's codes) drafts nothing.

    ``cache="none"`` recomputes the full sequence at every step: the reference the cached
    runs must match. With ``num_beams > 1`` (greedy only, no stop tokens) the prompt is
    prefilled once per batch row, then ``batch_repeat_interleave`` expands the cache and
    ``reorder_cache`` follows the surviving beams (a static cache made here reserves the
    beams' rows at its first write, so neither allocates).

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models import LlamaModel
    >>> from lucid.generation import generate
    >>> model = LlamaModel.random()
    >>> prompt = np.array([[1, 2, 3]])
    >>> a = generate(model, prompt, 4, cache="dynamic").tokens
    >>> b = generate(model, prompt, 4, cache="none").tokens
    >>> bool((a == b).all()), a.shape
    (True, (1, 7))
    >>> s = generate(model, prompt, 4, temperature=0.8, top_p=0.9, seed=7).new_tokens
    >>> s == generate(model, prompt, 4, temperature=0.8, top_p=0.9, seed=7).new_tokens
    True
    """
    prompt_lookup = check_int(prompt_lookup, "prompt_lookup")
    if _ragged(prompt):
        return _generate_ragged(model, prompt, max_new_tokens, cache, num_beams, temperature, top_k, top_p, seed,
                                stop_token_ids, on_step, prompt_lookup)
    if prompt_lookup:
        return _generate_with_lookup(model, prompt, max_new_tokens, cache, num_beams, temperature, stop_token_ids,
                                     on_step, prompt_lookup)
    result = None
    for step, result in enumerate(generate_steps(model, prompt, max_new_tokens, cache, num_beams, temperature,
                                                 top_k, top_p, seed, stop_token_ids)):
        if on_step is not None:
            on_step(step + 1)
    return result


def _ragged(prompt) -> bool:
    """Whether ``prompt`` is a list of id sequences of different lengths."""
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(hasattr(row, "__len__") for row in prompt):
        return False
    return len({len(row) for row in prompt}) > 1


def _generate_ragged(model, prompts, max_new_tokens, cache, num_beams, temperature, top_k, top_p, seed,
                     stop_token_ids, on_step, prompt_lookup) -> Generation:
    """:func:`generate` for prompts of different lengths, on a paged cache (see there)."""
    prompts = [np.asarray(row, dtype=np.int64) for row in prompts]
    if any(row.ndim != 1 or not len(row) for row in prompts):
        raise ValueError("prompt must be ids of shape (batch, length >= 1), or a list of 1-D id sequences")
    if num_beams != 1 or prompt_lookup:
        raise ValueError("prompts of different lengths decode with num_beams=1 and prompt_lookup=0 "
                         f"(got num_beams={num_beams}, prompt_lookup={prompt_lookup})")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
    temperature, top_k, top_p, seed, stops = check_sampling(temperature, top_k, top_p, seed, 1, stop_token_ids)
    if isinstance(cache, str) and cache in ("dynamic", "paged"):
        blocks = sum(-(-(len(row) + max_new_tokens) // 16) for row in prompts)
        cache = nn.PagedKVCache(num_blocks=blocks + len(prompts), block_size=16)
    if not isinstance(cache, nn.PagedKVCache) or cache.tables:
        raise ValueError("prompts of different lengths need an empty nn.PagedKVCache (cache='paged'), whose "
                         f"rows keep lengths of their own; got cache={cache!r}")
    rng = np.random.default_rng(seed)
    pick = (lambda logits: logits.argmax(axis=-1)) if temperature == 0 else (
        lambda logits: sample(logits, rng, temperature, top_k, top_p))
    tokens, sequences, result = [row.tolist() for row in prompts], [], Generation(tokens=[])
    first = []
    for row in prompts:  # each prompt prefilled alone (a prefix another row registered is reused)
        cache.batch = []
        seq = cache.add_sequence(tokens=row)
        done = cache.get_seq_length(0)
        out = model.forward(row[None, done:], cache=cache, cache_position=list(range(done, len(row))), logits_to_keep=1)
        first.append(out[:, 0, ...].numpy())
        sequences.append(seq)
    logits = np.concatenate(first)
    running = list(range(len(prompts)))
    for step in range(max_new_tokens):
        chosen = pick(logits)
        for row, token in zip(running, chosen):
            tokens[row].append(int(token))
        result.step_logits.append(logits)
        if on_step is not None:
            on_step(step + 1)
        for row in [r for r, token in zip(running, chosen) if int(token) in stops]:
            cache.remove_sequence(sequences[row])
            running.remove(row)
        if not running or step == max_new_tokens - 1:
            break
        cache.batch = [sequences[row] for row in running]
        out = model.forward(np.array([[tokens[row][-1]] for row in running]), cache=cache,
                            cache_position=[[len(tokens[row]) - 1] for row in running], logits_to_keep=1)
        logits = out[:, 0, ...].numpy()
    result.tokens = [np.array(row) for row in tokens]
    result.new_tokens = [_until_stop(row[len(prompt):], stops) for row, prompt in zip(tokens, prompts)]
    result.cache_bytes = cache.nbytes()
    return result


def draft_from_context(tokens: list, count: int, max_ngram: int = 3) -> list:
    """Up to ``count`` tokens that followed the latest earlier occurrence of ``tokens``' last
    n-gram (the longest of ``max_ngram``, ..., 1 tokens that occurs earlier); ``[]`` if none.

    Examples
    --------
    >>> from lucid.generation import draft_from_context
    >>> draft_from_context([5, 6, 7, 8, 9, 1, 6, 7], 3)
    [8, 9, 1]
    """
    for size in range(min(max_ngram, len(tokens) - 1), 0, -1):
        tail = tokens[-size:]
        for start in range(len(tokens) - size - 1, -1, -1):
            if tokens[start:start + size] == tail:
                return tokens[start + size:start + size + count]
    return []


def _generate_with_lookup(model, prompt, max_new_tokens, cache, num_beams, temperature, stop_token_ids, on_step,
                          lookup: int) -> Generation:
    """:func:`generate` with prompt-lookup drafts (see there)."""
    prompt = np.asarray(prompt, dtype=np.int64)
    if prompt.ndim != 2 or prompt.shape[0] != 1 or num_beams != 1 or temperature != 0:
        raise ValueError("prompt_lookup decodes one prompt row greedily: pass a prompt of shape (1, length), "
                         f"num_beams=1 and temperature=0 (got shape {prompt.shape}, num_beams={num_beams}, "
                         f"temperature={temperature})")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
    kv = make_cache(cache, model, prompt.shape[1] + max_new_tokens + lookup, 1) if isinstance(cache, str) else cache
    if kv is None:
        raise ValueError("prompt_lookup checks its drafts against the cache: cache='none' has none to check with")
    first = next(generate_steps(model, prompt, 1, kv, stop_token_ids=stop_token_ids))
    stops = check_sampling(0.0, None, None, None, 1, stop_token_ids)[4]
    tokens, logits_rows = first.tokens[0].tolist(), list(first.step_logits)
    done = 1
    if on_step is not None:
        on_step(done)
    while done < max_new_tokens and tokens[-1] not in stops:
        length = len(tokens)  # the cache holds length - 1 positions: the last token is not in it yet
        draft = draft_from_context(tokens, min(lookup, max_new_tokens - done - 1))
        if draft and not kv.can_trim(len(draft), appended=1 + len(draft)):
            draft = []
        out = model.forward(np.array([[tokens[-1]] + draft]), cache=kv,
                            cache_position=list(range(length - 1, length + len(draft))),
                            logits_to_keep=1 + len(draft)).numpy()[0]
        chosen = out.argmax(axis=-1)
        accepted = 0
        while accepted < len(draft) and draft[accepted] == chosen[accepted] and draft[accepted] not in stops:
            accepted += 1
        if accepted < len(draft):
            kv.trim(len(draft) - accepted)
        new = draft[:accepted] + [int(chosen[accepted])]
        tokens += new
        logits_rows += [out[i:i + 1] for i in range(len(new))]
        done += len(new)
        if on_step is not None:
            on_step(done)
    prompt_len = prompt.shape[1]
    result = Generation(tokens=np.array([tokens[:prompt_len + max_new_tokens]]), step_logits=logits_rows)
    result.new_tokens = [_until_stop(result.tokens[0, prompt_len:].tolist(), stops)]
    result.cache_bytes = kv.nbytes()
    return result


def generate_steps(model, prompt, max_new_tokens: int, cache="dynamic", num_beams: int = 1,
                   temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                   seed: int | None = None, stop_token_ids=None) -> Iterator[Generation]:
    """:func:`generate` one step at a time: yields the :class:`Generation` after each step
    (``tokens[:, -1]`` holds the step's tokens). Once the generator is exhausted, its last
    result is final (beams resolved to the best one, ``new_tokens`` and ``cache_bytes`` set).

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models import LlamaModel
    >>> from lucid.generation import generate_steps
    >>> steps = [g.tokens.shape[1] for g in generate_steps(LlamaModel.random(), np.array([[1, 2]]), 3)]
    >>> steps
    [3, 4, 5]
    """
    prompt = np.asarray(prompt, dtype=np.int64)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be ids of shape (batch, length >= 1), got shape {prompt.shape}")
    batch, prompt_len = prompt.shape
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
    num_beams = check_int(num_beams, "num_beams", minimum=1)
    temperature, top_k, top_p, seed, stops = check_sampling(temperature, top_k, top_p, seed, num_beams,
                                                             stop_token_ids)
    if not isinstance(cache, str) and cache is not None and cache.get_seq_length(0) >= prompt_len:
        raise ValueError(f"the cache already holds {cache.get_seq_length(0)} positions; it may hold at most a "
                         f"prefix of the prompt ({prompt_len} tokens) shorter than it")
    if isinstance(cache, str):
        kv = make_cache(cache, model, prompt_len + max_new_tokens, batch * num_beams)
    else:
        kv = cache
    rng = np.random.default_rng(seed)
    result = Generation(tokens=prompt)
    running = np.arange(batch)  # the rows still decoding, in the cache's row order
    beam_scores = None
    for step in range(max_new_tokens):
        length = result.tokens.shape[1]
        live = result.tokens[running] if num_beams == 1 else result.tokens
        if kv is None:
            logits = _last_logits(model, live)
        else:
            done = kv.get_seq_length(0) if step == 0 else length - 1  # a prefix may come cached
            new = live[:, done:]
            out = model.forward(new, cache=kv, cache_position=list(range(length - new.shape[1], length)),
                                logits_to_keep=1)
            logits = out[:, 0, ...].numpy()
        if num_beams > 1:
            beam_scores = _beam_step(result, kv, logits, step, batch, num_beams, beam_scores)
            result.step_logits.append(logits)
        else:
            chosen = logits.argmax(axis=-1) if temperature == 0 else sample(logits, rng, temperature, top_k, top_p)
            column = np.array(result.tokens[:, -1])  # a stopped row repeats its last token
            column[running] = chosen
            result.tokens = np.concatenate([result.tokens, column[:, None]], axis=1)
            result.step_logits.append(logits)
            going = np.array([int(t) not in stops for t in chosen], dtype=bool)
            if not going.all():
                running = running[going]
                if len(running) and kv is not None:
                    kv.batch_select_indices(np.flatnonzero(going))
        yield result
        if len(running) == 0:
            break
    if num_beams > 1:  # the best beam of each batch row
        winners = np.arange(batch) * num_beams + beam_scores.reshape(batch, num_beams).argmax(axis=1)
        result.tokens = result.tokens[winners]
    result.new_tokens = [_until_stop(row[prompt_len:].tolist(), stops) for row in result.tokens]
    result.cache_bytes = 0 if kv is None else kv.nbytes()


def _until_stop(ids: list, stops: frozenset) -> list:
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i + 1]
    return ids


def _beam_step(result: Generation, kv, logits: np.ndarray, step: int, batch: int, num_beams: int, beam_scores):
    """One step of beam search: extend every beam, keep the ``num_beams`` best of each batch row,
    and reorder the cache to follow them; the new scores."""
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
    result.tokens = np.concatenate([result.tokens[rows], (best % vocab).reshape(-1, 1)], axis=1)
    if kv is not None:
        kv.reorder_cache(rows)
    return np.take_along_axis(candidates, best, axis=1).reshape(-1)


def stream(model, tokenizer, prompt, max_new_tokens: int, cache="dynamic", temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           stop_token_ids=None) -> Iterator[str]:
    """Text pieces of one answer as they are decoded: :func:`generate` for a single prompt
    (``prompt``: a list of ids), each new token's text yielded as soon as it forms whole
    characters (an :class:`~lucid.models.tokenizer.IncrementalDecoder`, so a character split
    over several tokens never comes out broken). Stops at the tokenizer's ``stop_token_ids``
    unless others are given; stop tokens are not shown.

    Examples
    --------
    >>> from lucid.models import LlamaModel
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe, byte_alphabet
    >>> from lucid.generation import generate, stream
    >>> tok = Tokenizer(byte_level_bpe([byte_alphabet()[b] for b in range(256)], [], []), None, eos_token="!")
    >>> model, ids = LlamaModel.random(), tok.encode("hi")
    >>> text = "".join(stream(model, tok, ids, 5))
    >>> new = generate(model, [ids], 5, stop_token_ids=tok.stop_token_ids).new_tokens[0]
    >>> text == tok.decode([t for t in new if t not in tok.stop_token_ids])
    True
    """
    stops = tokenizer.stop_token_ids if stop_token_ids is None else stop_token_ids
    detok = tokenizer.detokenizer()
    for state in generate_steps(model, [list(prompt)], max_new_tokens, cache, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, stop_token_ids=stops):
        token = int(state.tokens[0, -1])
        if token in stops:
            break
        piece = detok.push(token)
        if piece:
            yield piece
    rest = detok.flush()
    if rest:
        yield rest
