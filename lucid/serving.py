"""``Engine``: many requests decoded together over one paged cache, joining and leaving between
steps (continuous batching)."""
from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import nn
from .generation import check_sampling, sample
from .validation import check_int


@dataclass
class Request:
    """One request's state in an :class:`Engine`."""

    id: int
    prompt: list  # the ids to prefill: the prompt, and after a preemption the tokens decoded so far too
    max_new_tokens: int
    sampling: tuple  # (temperature, top_k, top_p)
    stops: frozenset
    rng: np.random.Generator
    tokens: list = field(default_factory=list)  # the new tokens
    sequence: int | None = None  # the paged cache's sequence, while it holds one
    prefilled: int = 0  # prompt ids in the cache
    resuming: bool = False  # preempted after decoding: its last token is known, the prefill only rebuilds
    finished: bool = False
    reason: str | None = None  # why it finished: "stop" (a stop id), "length" (max_new_tokens), "cancelled"
    fetched: int = 0  # prompt ids found in the prefix store (its chunks need no storing)
    choices: list = field(default_factory=list)  # the other choices of its prompt, forked once it is prefilled
    given: int = field(init=False)  # the prompt's length as the request gave it

    def __post_init__(self) -> None:
        self.given = len(self.prompt)


class Engine:
    """Requests of any length, added at any time, decoded together in one
    :class:`~lucid.nn.PagedKVCache`.

    Each :meth:`step` runs one forward that decodes every running request, each row at its own
    position, and prefills one chunk of at most ``max_batch_tokens`` prompt ids of the oldest
    waiting request (so a long prompt never stalls the others for long), whose first token
    comes with the chunk that ends its prompt; the linear layers read the weights once for
    both. Requests that share a prompt prefix share its blocks
    (the cache's prefix caching). When a step would need more blocks than are free, the newest
    running request is preempted: its blocks are freed and it is prefilled again, prompt and
    tokens so far, when there is room (``preemptions`` counts them); no request fails for it.
    Greedy requests get the tokens :func:`~lucid.generation.generate` gives their prompt
    alone; sampled ones the tokens their ``seed`` gives it.

    Parameters
    ----------
    model : LlamaModel
    tokenizer : Tokenizer, optional
        Needed for requests given as chat ``messages``.
    num_blocks, block_size : int
        The paged cache's pool.
    max_batch_tokens : int
        Prompt ids prefilled per step.
    prefix_store : PrefixStore, optional
        Shared with other engines (other processes, over Redis or a directory): a new prompt
        starts from the longest prefix found there, when longer than what this engine's own
        blocks hold, and each prompt's whole chunks are stored once prefilled.

    Attributes
    ----------
    prompt_tokens, cached_tokens : int
        Prompt ids the requests brought, and how many of them were not computed: found in the
        cache's blocks or fetched from ``prefix_store``.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.models import LlamaModel
    >>> from lucid.generation import generate
    >>> from lucid.serving import Engine
    >>> model = LlamaModel.random()
    >>> engine = Engine(model, num_blocks=64)
    >>> a, b = engine.add_request([1, 2, 3], max_new_tokens=5), engine.add_request([4, 5, 6, 7, 8, 9], max_new_tokens=4)
    >>> while engine.has_unfinished():
    ...     _ = engine.step()
    >>> engine.tokens(a) == generate(model, [[1, 2, 3]], 5).new_tokens[0]
    True
    """

    def __init__(self, model, tokenizer=None, num_blocks: int = 1024, block_size: int = 16,
                 max_batch_tokens: int = 512, prefix_store=None):
        self.model, self.tokenizer, self.prefix_store = model, tokenizer, prefix_store
        self.cache = nn.PagedKVCache(num_blocks, block_size)
        self.max_batch_tokens = check_int(max_batch_tokens, "max_batch_tokens", minimum=1)
        self.requests: dict[int, Request] = {}
        self.waiting: collections.deque[Request] = collections.deque()  # not yet fully prefilled, oldest first
        self.running: list[Request] = []  # decoding, in the order they started
        self.preemptions = self.prompt_tokens = self.cached_tokens = 0
        self._unstored: list = []  # (prompt, its keys and values) for the prefix store, put at the next step
        self._next = 0

    # -- requests ------------------------------------------------------------
    def add_request(self, prompt=None, max_new_tokens: int = 128, temperature: float = 0.0,
                    top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
                    stop=None, messages=None, n: int = 1) -> int:
        """Queue a request: ``prompt`` ids, or chat ``messages`` (rendered with the tokenizer's
        chat template); its id. ``stop``: ids that end it (default: the tokenizer's stop ids).

        ``n`` > 1 asks for that many choices of the prompt, with the ids ``id, id + 1, ...,
        id + n - 1``: the prompt is prefilled once, then its sequence is forked (every block
        shared, copy-on-write) and each choice samples its own tokens from there, choice ``j``
        with ``seed + j`` (each the tokens a request of its own with that seed would give).

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> engine.add_request([1, 2], max_new_tokens=3), engine.add_request([3], max_new_tokens=2, n=3)
        (0, 1)
        >>> sorted(engine.requests)
        [0, 1, 2, 3]
        """
        if (prompt is None) == (messages is None):
            raise ValueError("give the prompt's ids or chat messages, not both and not neither")
        if messages is not None:
            if self.tokenizer is None:
                raise ValueError("messages need the engine's tokenizer (Engine(model, tokenizer)) for the chat template")
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = np.asarray(prompt)
        if ids.ndim != 1 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"prompt must be a non-empty list of token ids, got {prompt!r:.80}")
        if ids.min() < 0 or ids.max() >= self.model.config.vocab_size:
            raise ValueError(f"prompt ids must lie in [0, {self.model.config.vocab_size}), the model's vocabulary")
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
        self.model.config.check_length(len(ids) + max_new_tokens,
                                       f"max_new_tokens={max_new_tokens} after a prompt of {len(ids)}")
        room = self.cache.num_blocks * self.cache.block_size
        if len(ids) + max_new_tokens > room:
            raise ValueError(f"max_new_tokens={max_new_tokens}: the prompt's {len(ids)} ids and the new tokens need "
                             f"{len(ids) + max_new_tokens} positions, more than the pool's {room}")
        if stop is None and self.tokenizer is not None:
            stop = self.tokenizer.stop_token_ids
        n = check_int(n, "n", minimum=1)
        temperature, top_k, top_p, seed, stops = check_sampling(temperature, top_k, top_p, seed, 1, stop)
        choices = [Request(self._next + j, [int(t) for t in ids], max_new_tokens, (temperature, top_k, top_p), stops,
                           np.random.default_rng(None if seed is None else seed + j)) for j in range(n)]
        self._next += n
        for choice in choices:
            self.requests[choice.id] = choice
        request = choices[0]
        request.choices = choices[1:]
        self.waiting.append(request)
        return request.id

    def _request(self, request_id) -> Request:
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id not in self.requests:
            raise ValueError(f"request_id {request_id!r} is not a request of this engine")
        return self.requests[request_id]

    def tokens(self, request_id: int) -> list:
        """The new tokens of a request so far.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> engine.tokens(engine.add_request([1, 2], max_new_tokens=3))
        []
        """
        return list(self._request(request_id).tokens)

    def cancel(self, request_id: int) -> None:
        """Finish a request now; its blocks go back to the pool at once.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> rid = engine.add_request([1, 2], max_new_tokens=3)
        >>> engine.cancel(rid); engine.has_unfinished()
        False
        """
        self._finish(self._request(request_id), "cancelled")

    def release(self, request_id: int) -> None:
        """Forget a request (cancelling it first if it has not finished): a long-running server
        releases each request once its caller has read it.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> rid = engine.add_request([1, 2], max_new_tokens=3)
        >>> engine.release(rid); rid in engine.requests
        False
        """
        self._finish(self._request(request_id), "cancelled")
        del self.requests[request_id]

    def finish_reason(self, request_id: int) -> str | None:
        """``None`` while the request runs; then ``"stop"`` (it produced a stop id), ``"length"``
        (it reached ``max_new_tokens``) or ``"cancelled"``.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> rid = engine.add_request([1, 2], max_new_tokens=3)
        >>> _ = list(engine.stream(rid)); engine.finish_reason(rid)
        'length'
        """
        return self._request(request_id).reason

    def has_unfinished(self) -> bool:
        """Whether any request still waits or decodes (or prompt chunks wait to be stored in
        the prefix store, which the next :meth:`step` does).

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> Engine(LlamaModel.random(), num_blocks=8).has_unfinished()
        False
        """
        return bool(self.waiting or self.running or self._unstored)

    def stream(self, request_id: int) -> Iterator[int]:
        """The request's new tokens as they are decoded, driving :meth:`step` until it finishes.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> len(list(engine.stream(engine.add_request([1, 2], max_new_tokens=3))))
        3
        """
        request, shown = self._request(request_id), 0
        while True:
            while shown < len(request.tokens):
                shown += 1
                yield request.tokens[shown - 1]
            if request.finished:
                return
            self.step()

    # -- the step -------------------------------------------------------------
    def step(self) -> list:
        """One decode forward and one prefill chunk; the ``(request_id, token)`` pairs decoded.

        Examples
        --------
        >>> from lucid.models import LlamaModel
        >>> from lucid.serving import Engine
        >>> engine = Engine(LlamaModel.random(), num_blocks=8)
        >>> rid = engine.add_request([1, 2], max_new_tokens=3)
        >>> [pair[0] for pair in engine.step()]  # the prefill gives the first token
        [0]
        """
        emitted = []
        while self._unstored:  # a step late, so that storing never delays the first token
            self.prefix_store.put(*self._unstored.pop())
        # The prompt chunk first: starting a sequence may take cached prefix blocks, and the
        # chunk only goes ahead with room left for the decode; else running requests come first.
        chunk = self._next_chunk(self.running) if self.waiting else None
        decoding = list(self.running)
        self._make_room(decoding)
        groups = []
        if decoding:
            groups.append(([[r.tokens[-1]] for r in decoding], [r.sequence for r in decoding],
                           [[self.cache.lengths[r.sequence][0]] for r in decoding]))
        if chunk is not None:
            request, end = chunk
            groups.append(([request.prompt[request.prefilled:end]], [request.sequence],
                           list(range(request.prefilled, end))))
        if not groups:
            return emitted
        # One forward: every running request's next token and the prompt chunk, the weights read once.
        logits = [out.numpy() for out in self.model.forward_groups(groups, self.cache)]
        for row, request in enumerate(decoding):
            emitted += self._emit(request, logits[0][row:row + 1])
        if chunk is not None:
            emitted += self._prefilled(*chunk, logits[-1])
        return emitted

    def _blocks_needed(self, requests: list) -> int:
        """Blocks one more decoded token of each request takes (a row whose blocks are full, or
        whose last block it shares with a fork)."""
        return self.cache.blocks_needed([r.sequence for r in requests]) if requests else 0

    def _free_blocks(self) -> int:
        return self.cache.num_blocks - self.cache.blocks_used()

    def _make_room(self, decoding: list) -> None:
        """Preempt the newest running requests until the decode step fits the pool."""
        while decoding and self._blocks_needed(decoding) > self._free_blocks():
            victim = decoding.pop()
            self._preempt(victim)

    def _preempt(self, request: Request) -> None:
        self.cache.remove_sequence(request.sequence)
        self.running.remove(request)
        # What the cache held: the prompt and every token but the last (the next step's input),
        # from the prompt as given (a request preempted again before it decoded holds no more).
        request.sequence, request.prefilled = None, 0
        request.prompt, request.resuming = request.prompt[:request.given] + request.tokens[:-1], True
        self.waiting.appendleft(request)
        self.preemptions += 1

    def _next_chunk(self, decoding: list):
        """``(request, end)``: the prompt ids ``prefilled:end`` of the request to prefill in this
        step (the one part-way through its prompt first: it holds blocks already), or ``None``
        while the pool has no room for them beside the decoding requests."""
        cache, size = self.cache, self.cache.block_size
        request = next((r for r in self.waiting if r.sequence is not None), self.waiting[0])
        if request.sequence is None:
            cache.batch = []
            request.sequence = cache.add_sequence(tokens=request.prompt)
            request.prefilled = cache.get_seq_length(0)
            if self.prefix_store is not None:
                self._fetch(request)
            if not request.resuming:
                self.prompt_tokens += len(request.prompt)
                self.cached_tokens += request.prefilled
        end = min(len(request.prompt), request.prefilled + self.max_batch_tokens)
        needed = -(-end // size) - len(cache.tables[request.sequence])
        if needed > self._free_blocks() - self._blocks_needed(decoding):
            if self.running:
                return None  # waits for running requests to finish
            raise ValueError(f"num_blocks={cache.num_blocks}: one request's prompt does not fit the pool")
        return request, end

    def _prefilled(self, request: Request, end: int, logits) -> list:
        """The chunk up to ``end`` is in the cache: a request whose prompt is whole starts decoding."""
        request.prefilled = end
        if end < len(request.prompt):
            return []
        self.waiting.remove(request)
        self.running.append(request)
        if self.prefix_store is not None:
            self._store(request)
        if request.resuming:  # its last token was decoded before the preemption: it goes on from there
            request.resuming = False
            return []
        # The other choices of the prompt: forks of this sequence, before this choice's token
        # (which may finish it and free its blocks), each sampling from the same logits.
        choices, request.choices = [c for c in request.choices if not c.finished], []
        for choice in choices:
            self.cache.batch = []
            choice.sequence, choice.prefilled = self.cache.fork(request.sequence), len(choice.prompt)
            self.running.append(choice)
            self.prompt_tokens += len(choice.prompt)
            self.cached_tokens += len(choice.prompt)
        emitted = self._emit(request, logits)
        for choice in choices:
            emitted += self._emit(choice, logits)
        return emitted

    def _fetch(self, request: Request) -> None:
        """Extend the request's cached prefix from the prefix store, when it may hold more."""
        chunk = self.prefix_store.chunk_size
        if (len(request.prompt) - 1) // chunk * chunk <= request.prefilled:
            return  # this engine's blocks hold every chunk the store could give
        found = nn.DynamicKVCache()
        reused = self.prefix_store.fetch(request.prompt, found)
        if reused <= request.prefilled or -(-reused // self.cache.block_size) - len(
                self.cache.tables[request.sequence]) > self._free_blocks():
            return
        self.cache.batch = [request.sequence]
        positions = list(range(request.prefilled, reused))
        for layer in range(len(found.layers)):
            keys, values = found.get(layer)
            self.cache.update(keys[..., request.prefilled:reused, :], values[..., request.prefilled:reused, :],
                              layer, cache_position=positions)
        request.prefilled = request.fetched = reused

    def _store(self, request: Request) -> None:
        """Copy out the request's prompt chunks for the prefix store, if it may lack any."""
        chunk = self.prefix_store.chunk_size
        if len(request.prompt) // chunk * chunk <= request.fetched:
            return  # no whole chunk the store lacks
        self.cache.batch = [request.sequence]
        whole = nn.DynamicKVCache()
        for layer in range(len(self.model.layers)):
            keys, values = self.cache.get(layer)
            whole.update(keys, values, layer)
        self._unstored.append((list(request.prompt), whole))

    def _emit(self, request: Request, logits) -> list:
        temperature, top_k, top_p = request.sampling
        token = int(logits.argmax(axis=-1)[0] if temperature == 0 else
                    sample(logits, request.rng, temperature, top_k, top_p)[0])
        request.tokens.append(token)
        if token in request.stops:
            self._finish(request, "stop")
        elif len(request.tokens) >= request.max_new_tokens:
            self._finish(request, "length")
        return [(request.id, token)]

    def _finish(self, request: Request, reason: str) -> None:
        if request.finished:
            return
        request.finished, request.reason = True, reason
        # Choices still to be forked from it go on as requests of their own.
        self.waiting.extend(c for c in request.choices if not c.finished)
        request.choices = []
        if request.sequence is not None:
            self.cache.remove_sequence(request.sequence)
            request.sequence = None
        if request in self.running:
            self.running.remove(request)
        if request in self.waiting:
            self.waiting.remove(request)
