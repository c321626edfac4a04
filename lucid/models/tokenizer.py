"""Text to token ids and back, and chat templates, for the models lucid loads.

Built on Hugging Face's ``tokenizers`` (the Rust tokenizer transformers uses) and ``jinja2``
(which renders chat templates in transformers too). A GGUF file carries its tokenizer as
metadata (``tokenizer.ggml.*``: the byte-level BPE vocabulary, its merges, the token types
that mark special tokens, and the chat template); a checkpoint directory carries
``tokenizer.json`` and ``tokenizer_config.json``.
"""
from __future__ import annotations

import functools
import json
import pathlib
from datetime import datetime

#: GGUF ``tokenizer.ggml.pre`` names whose text splitting differs from GPT-2's: digits stand
#: alone before the byte-level split (as these models' own ``tokenizer.json`` and llama.cpp do).
_DIGITS_ALONE = ("smollm",)

#: GGUF token type of a control token (``<|im_end|>``): never split, skipped by ``decode``.
_CONTROL = 3


class Tokenizer:
    """Encode, decode and render chat templates for one model.

    Build it with :func:`load_tokenizer`. ``backend`` is a ``tokenizers.Tokenizer``;
    ``chat_template`` a Jinja template as transformers renders it (``None``: the model has
    none); ``eos_token_id`` the id that ends an answer; ``stop_token_ids`` every id that ends
    one (the EOS and, for chat models, the end-of-turn token).

    Examples
    --------
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe
    >>> tok = Tokenizer(byte_level_bpe(["a", "b", "ab", "<|end|>"], ["a b"], special=["<|end|>"]),
    ...                 chat_template=None, eos_token="<|end|>")
    >>> tok.encode("abab<|end|>"), tok.decode([2, 2, 3]), tok.eos_token_id
    ([2, 2, 3], 'abab', 3)
    """

    def __init__(self, backend, chat_template: str | None, eos_token: str | None, bos_token: str | None = None):
        self.backend = backend
        self.chat_template = chat_template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.eos_token_id = None if eos_token is None else backend.token_to_id(eos_token)
        if eos_token is not None and self.eos_token_id is None:
            raise ValueError(f"eos_token {eos_token!r} is not in the vocabulary")
        ends = set() if self.eos_token_id is None else {self.eos_token_id}
        for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"):
            if chat_template and name in chat_template and backend.token_to_id(name) is not None:
                ends.add(backend.token_to_id(name))
        self.stop_token_ids = sorted(ends)

    def encode(self, text: str) -> list:
        """The ids of ``text``; special tokens written in it (``<|im_start|>``) stay whole."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The text of ``ids`` (special tokens left out unless ``skip_special_tokens=False``)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list, add_generation_prompt: bool = True) -> str:
        """The chat template rendered for ``messages`` (dicts with ``role`` and ``content``)."""
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template; encode the prompt text instead")
        if not isinstance(messages, (list, tuple)) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise TypeError("messages must be a list of dicts with str 'role' and 'content', got "
                            f"{messages!r:.200}")
        return _compiled(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "")

    def apply_chat_template(self, messages: list, add_generation_prompt: bool = True) -> list:
        """The ids of the chat template rendered for ``messages``, as transformers gives them.

        Examples
        --------
        >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe
        >>> tok = Tokenizer(byte_level_bpe(["a", "b", "<s>"], [], special=["<s>"]),
        ...                 chat_template="{% for m in messages %}<s>{{ m.content }}{% endfor %}", eos_token="<s>")
        >>> tok.apply_chat_template([{"role": "user", "content": "ab"}])
        [2, 0, 1]
        """
        return self.encode(self.render_chat(messages, add_generation_prompt))

    def detokenizer(self) -> "IncrementalDecoder":
        """A fresh :class:`IncrementalDecoder` for streaming text."""
        return IncrementalDecoder(self)


class IncrementalDecoder:
    """Text pieces of a growing list of ids, never cutting a UTF-8 character in two.

    A byte-level token can hold part of a character (an emoji spans several tokens). Only the
    ids since the last emitted piece are decoded (with the ones before them, for context), and
    a piece is emitted once its text no longer ends in an incomplete character; the rest waits
    for the next token. Each step costs a few tokens' decoding, whatever the length.

    Examples
    --------
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe, byte_alphabet
    >>> e = "".join(byte_alphabet()[b] for b in "é".encode())  # two byte-level symbols
    >>> tok = Tokenizer(byte_level_bpe([e[0], e[1], "x"], [], special=[]), chat_template=None, eos_token="x")
    >>> d = tok.detokenizer()
    >>> d.push(0), d.push(1), d.push(2)
    ('', 'é', 'x')
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list = []
        self.prefix = 0  # ids[prefix:read] were emitted already: context for the next piece
        self.read = 0

    def push(self, token_id: int) -> str:
        """Add one id; the new text that is complete (may be empty)."""
        self.ids.append(int(token_id))
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        if len(text) <= len(before) or text.endswith("\ufffd"):  # nothing new, or a character in pieces
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before):]

    def flush(self) -> str:
        """Whatever is left (a character that never completed comes out as U+FFFD)."""
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(before):]


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """A chat template compiled the way transformers compiles it (sandboxed, trimmed blocks)."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(f"the chat template refused the messages: {message}")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(template)


def byte_alphabet() -> dict:
    """GPT-2's map from each byte to the printable character that spells it in a byte-level
    vocabulary: printable Latin-1 bytes spell themselves, the others take code points from 256 on.

    Examples
    --------
    >>> from lucid.models.tokenizer import byte_alphabet
    >>> byte_alphabet()[ord(" ")], byte_alphabet()[ord("a")]
    ('Ġ', 'a')
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | \
        set(range(ord("®"), ord("ÿ") + 1))
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[byte] = chr(byte)
        else:
            alphabet[byte] = chr(256 + extra)
            extra += 1
    return alphabet


def byte_level_bpe(tokens: list, merges: list, special: list, digits_alone: bool = False):
    """A ``tokenizers.Tokenizer`` for a byte-level BPE vocabulary (GPT-2's scheme, as GGUF files
    of ``tokenizer.ggml.model = gpt2`` store it): ``tokens`` in id order, ``merges`` as
    ``"a b"`` strings, ``special`` the tokens never split; ``digits_alone`` splits digits
    apart before the byte-level split.

    Examples
    --------
    >>> from lucid.models.tokenizer import byte_level_bpe
    >>> byte_level_bpe(["h", "i", "hi"], ["h i"], special=[]).encode("hi").ids
    [2]
    """
    from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    backend = Backend(models.BPE(vocab, pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                             if digits_alone else byte_level)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in special])
    return backend


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer of a model: a GGUF file's ``tokenizer.ggml.*`` metadata, or a checkpoint
    directory's ``tokenizer.json`` (and ``tokenizer_config.json`` for the chat template).

    A GGUF tokenizer must be byte-level BPE (``tokenizer.ggml.model = gpt2``, the Llama 3,
    Qwen2 and SmolLM families); anything else is a ``ValueError`` naming the file and the model.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from lucid.models import LlamaConfig
    >>> from lucid.models.gguf_file import write_gguf
    >>> from lucid.models.llama import random_weights
    >>> from lucid.models.tokenizer import load_tokenizer, byte_alphabet
    >>> letters = [byte_alphabet()[b] for b in range(256)]
    >>> path = write_gguf(pathlib.Path(tempfile.mkdtemp()) / "m.gguf", LlamaConfig(vocab_size=257),
    ...                   random_weights(LlamaConfig(vocab_size=257)),
    ...                   tokenizer={"tokens": letters + ["<|end|>"], "merges": [], "token_type": [1] * 256 + [3],
    ...                              "eos_token_id": 256})
    >>> tok = load_tokenizer(path)
    >>> tok.decode(tok.encode("héllo")), tok.eos_token_id
    ('héllo', 256)
    """
    from .gguf_file import is_gguf

    path = pathlib.Path(path)
    if is_gguf(path):
        return _from_gguf(path)
    if path.is_dir():
        return _from_directory(path)
    raise ValueError(f"{path}: neither a GGUF file nor a checkpoint directory")


def _from_gguf(path: pathlib.Path) -> Tokenizer:
    from .gguf_file import read_gguf

    field = read_gguf(path).metadata.get

    model = field("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{path}: tokenizer model {model!r} is not supported; lucid reads byte-level BPE "
                         "tokenizers (tokenizer.ggml.model = 'gpt2')")
    tokens, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges", [])
    types = field("tokenizer.ggml.token_type", [1] * len(tokens))
    special = [token for token, kind in zip(tokens, types) if kind == _CONTROL]
    eos = field("tokenizer.ggml.eos_token_id")
    if eos is None or not 0 <= eos < len(tokens):
        raise ValueError(f"{path}: tokenizer.ggml.eos_token_id is missing or outside the vocabulary")
    bos = field("tokenizer.ggml.bos_token_id")
    backend = byte_level_bpe(tokens, merges, special, digits_alone=field("tokenizer.ggml.pre") in _DIGITS_ALONE)
    return Tokenizer(backend, field("tokenizer.chat_template"), tokens[eos],
                     tokens[bos] if bos is not None and 0 <= bos < len(tokens) else None)


def _from_directory(path: pathlib.Path) -> Tokenizer:
    from tokenizers import Tokenizer as Backend

    file = path / "tokenizer.json"
    if not file.is_file():
        raise ValueError(f"{file}: the checkpoint directory has no tokenizer.json")
    backend = Backend.from_file(str(file))
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}

    def token(name):
        value = config.get(name)
        return value.get("content") if isinstance(value, dict) else value

    template = config.get("chat_template")
    if template is None and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    eos = token("eos_token")
    if eos is None and backend.token_to_id("</s>") is not None:
        eos = "</s>"
    return Tokenizer(backend, template, eos, token("bos_token"))
