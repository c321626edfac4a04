"""The OpenAI API's request bodies, checked; its error shape; the text of one choice as its
tokens arrive (stop strings held back until they can no longer match)."""
from __future__ import annotations

import math
from dataclasses import dataclass

#: Fields OpenAI defines that this server does not implement: a request that sets one to
#: anything but its neutral value is refused rather than answered as if it had not.
UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "tools": (None, []),
               "functions": (None, []), "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0),
               "frequency_penalty": (None, 0, 0.0), "echo": (None, False), "suffix": (None, ""),
               "best_of": (None, 1)}
MAX_CHOICES = 16


class APIError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's error body.

    Examples
    --------
    >>> from lucid.serve.protocol import APIError
    >>> APIError(400, "max_tokens must be >= 1", param="max_tokens").body()["error"]["param"]
    'max_tokens'
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Completion:
    """One request, checked: the prompts' ids and how to decode them."""

    prompts: list  # one list of ids per prompt
    max_tokens: int | None  # None: up to the context
    temperature: float
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: list  # stop strings
    n: int
    stream: bool
    include_usage: bool


def _number(body: dict, name: str, low: float, high: float, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(400, f"{name} must be a number from {low} to {high}, got {value!r:.40}", param=name)
    if not low <= value <= high:
        raise APIError(400, f"{name} must be from {low} to {high}, got {value}", param=name)
    return float(value)


def _integer(body: dict, name: str, low: int, high: int | None = None):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"{name} must be an integer, got {value!r:.40}", param=name)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise APIError(400, f"{name} must be {bound}, got {value}", param=name)
    return value


def _stop(body: dict) -> list:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise APIError(400, f"stop must be a non-empty string or a list of at most 4, got {stop!r:.80}", param="stop")
    return stops


def _messages(body: dict) -> list:
    """The chat messages with their content as plain text (text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a string role", param="messages")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string or a list of text parts",
                           param="messages")
        plain.append({"role": message["role"], "content": content})
    return plain


def _prompts(body: dict, tokenizer) -> list:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [tokenizer.encode(p) for p in prompt]
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
               for p in prompt):
            return [list(p) for p in prompt]
    raise APIError(400, "prompt must be a string, a list of strings, or token ids", param="prompt")


def parse(body, chat: bool, model_id: str, tokenizer) -> Completion:
    """Check a ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` body.

    Examples
    --------
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe
    >>> from lucid.serve.protocol import parse
    >>> tok = Tokenizer(byte_level_bpe(["a", "b", "ab"], ["a b"], special=[]), chat_template=None, eos_token="a")
    >>> parse({"model": "m", "prompt": "abab", "max_tokens": 3}, False, "m", tok).prompts
    [[2, 2]]
    """
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "model must be a string naming the model (GET /v1/models lists it)", param="model")
    if model != model_id:
        raise APIError(400, f"model {model!r:.80} is not served here; this server serves {model_id!r}",
                       param="model", code="model_not_found")
    for name, neutral in UNSUPPORTED.items():
        if name in body and body[name] not in neutral:
            raise APIError(400, f"{name} is not supported by this server", param=name)
    if chat:
        if not tokenizer.chat_template:
            raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
        prompts = [tokenizer.apply_chat_template(_messages(body), add_generation_prompt=True)]
    else:
        prompts = _prompts(body, tokenizer)
    if any(not p for p in prompts):
        raise APIError(400, "the prompt is empty", param="prompt")
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    max_tokens = next((_integer(body, name, 1) for name in names if body.get(name) is not None), None)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, f"stream must be true or false, got {stream!r:.40}", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise APIError(400, "stream_options must be an object like {\"include_usage\": true}", param="stream_options")
    return Completion(prompts, max_tokens, _number(body, "temperature", 0.0, 2.0, 1.0),
                      _number(body, "top_p", 1e-9, 1.0, None), _integer(body, "top_k", 1),
                      _integer(body, "seed", -(2 ** 63), 2 ** 64 - 1), _stop(body),
                      _integer(body, "n", 1, MAX_CHOICES) or 1, stream, options.get("include_usage", False))


class ChoiceText:
    """The text of one choice, built token by token: complete characters only (an
    :class:`~lucid.models.tokenizer.IncrementalDecoder`), and never text that could be the
    start of a stop string; a stop string ends the choice, and is not part of it.

    Examples
    --------
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe
    >>> from lucid.serve.protocol import ChoiceText
    >>> tok = Tokenizer(byte_level_bpe(list("abcd"), [], special=[]), chat_template=None, eos_token="a")
    >>> text = ChoiceText(tok, stop=["cd"])
    >>> text.push(1), text.push(2), text.push(3), text.stopped
    ('b', '', '', True)
    """

    def __init__(self, tokenizer, stop: list):
        self.decoder, self.stop = tokenizer.detokenizer(), stop
        self.pending, self.stopped = "", False
        self.tokens = 0

    def push(self, token: int) -> str:
        """Add a token; the text that can be shown now."""
        self.tokens += 1
        self.pending += self.decoder.push(token)
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held once the choice has ended."""
        if not self.stopped:
            self.pending += self.decoder.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        found = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if found:
            self.stopped = True
            text, self.pending = self.pending[:min(found)], ""
            return text
        hold = 0 if final else max((k for s in self.stop for k in range(1, len(s))
                                    if self.pending.endswith(s[:k])), default=0)
        text, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return text
