"""Sampling, stop tokens, streaming text and multi-turn chat, against small obviously-correct references."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lucid
from lucid.chat import ChatSession
from lucid.generation import generate, sample
from lucid.models import LlamaModel
from lucid.models.tokenizer import Tokenizer, byte_alphabet, byte_level_bpe

PROMPTS = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])


@pytest.fixture(scope="module")
def model():
    with lucid.use_backend("numpy"):
        return LlamaModel.random()


def byte_tokenizer(template=None):
    """Every byte its own token (so ids can split characters), plus ``<|end|>`` as the end token."""
    letters = [byte_alphabet()[b] for b in range(256)]
    return Tokenizer(byte_level_bpe(letters + ["<|end|>"], [], special=["<|end|>"]), template, eos_token="<|end|>")


def allowed(logits, top_k, top_p):
    """Reference: the ids sampling may pick, by sorting probabilities in plain Python."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:top_k or len(logits)]
    kept, total = [], 0.0
    for i in order:
        if top_p is not None and kept and total >= top_p:
            break
        kept.append(i)
        total += probs[i] / sum(probs[j] for j in order)
    return set(kept)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=12), st.one_of(st.none(), st.integers(1, 12)),
       st.one_of(st.none(), st.floats(0.01, 1.0)), st.floats(0.1, 3.0), st.integers(0, 2**32 - 1))
def test_sampling_picks_only_tokens_top_k_and_top_p_allow(logits, top_k, top_p, temperature, seed):
    logits = np.array(logits)
    pick = int(sample(logits[None, :], np.random.default_rng(seed), temperature, top_k, top_p)[0])
    assert pick in allowed(logits / temperature, top_k, top_p)


def test_sampling_follows_the_softmax():
    logits = np.array([[0.0, 1.0, 2.0, -1.0]])
    rng = np.random.default_rng(0)
    picks = np.array([sample(logits, rng, temperature=1.0)[0] for _ in range(20000)])
    want = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / len(picks), want, atol=0.015)
    half = np.array([sample(logits, rng, temperature=0.5)[0] for _ in range(20000)])
    sharper = np.exp(2 * logits[0]) / np.exp(2 * logits[0]).sum()
    np.testing.assert_allclose(np.bincount(half, minlength=4) / len(half), sharper, atol=0.015)


def test_the_same_seed_gives_the_same_tokens_and_top_k_1_is_greedy(model):
    a = generate(model, PROMPTS, 12, temperature=1.0, seed=5).new_tokens
    assert a == generate(model, PROMPTS, 12, temperature=1.0, seed=5).new_tokens
    assert a != generate(model, PROMPTS, 12, temperature=1.0, seed=6).new_tokens
    greedy = generate(model, PROMPTS, 12).new_tokens
    assert generate(model, PROMPTS, 12, temperature=0.7, top_k=1, seed=1).new_tokens == greedy
    assert generate(model, PROMPTS, 12, temperature=0.7, top_p=1e-9, seed=1).new_tokens == greedy


def test_the_same_seed_gives_the_same_tokens_on_every_backend(backend_name):
    model = LlamaModel.random()
    tokens = generate(model, PROMPTS, 10, temperature=0.9, top_p=0.95, seed=3).new_tokens
    with lucid.use_backend("numpy"):
        assert tokens == generate(LlamaModel.random(), PROMPTS, 10, temperature=0.9, top_p=0.95, seed=3).new_tokens


@pytest.mark.parametrize("kind", ["dynamic", "static", "quantized-8", "none"])
def test_a_row_that_stops_leaves_the_others_exact(model, kind):
    greedy = generate(model, PROMPTS, 10, cache=kind)
    stop = greedy.new_tokens[0][3]  # row 0 emits this at step 3
    assert stop not in greedy.new_tokens[1]
    out = generate(model, PROMPTS, 10, cache=kind, stop_token_ids=[stop])
    assert out.new_tokens[0] == greedy.new_tokens[0][:greedy.new_tokens[0].index(stop) + 1]
    assert out.new_tokens[1] == greedy.new_tokens[1]
    assert out.tokens.shape == greedy.tokens.shape
    after = out.tokens[0, PROMPTS.shape[1] + len(out.new_tokens[0]):]
    assert (after == stop).all()  # a stopped row repeats its stop token
    assert [len(logits) for logits in out.step_logits] == [2] * 4 + [1] * 6  # the stopped row costs nothing


def test_decoding_ends_when_every_row_has_stopped(model):
    greedy = generate(model, PROMPTS[:1], 10)
    out = generate(model, PROMPTS[:1], 10, stop_token_ids=[greedy.new_tokens[0][2]])
    assert len(out.step_logits) == out.new_tokens[0].index(greedy.new_tokens[0][2]) + 1


def test_the_cache_keeps_only_running_rows(model):
    cache = lucid.nn.DynamicKVCache()
    greedy = generate(model, PROMPTS, 6).new_tokens
    stop = greedy[1][1]
    assert stop not in greedy[0]
    generate(model, PROMPTS, 6, cache=cache, stop_token_ids=[stop])
    assert cache.batch_size() == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"temperature": 1.0, "top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
    ({"temperature": 1.0, "top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ({"temperature": 1.0, "top_k": 0}, "top_k must be an int >= 1"),
    ({"num_beams": 2, "temperature": 1.0}, "num_beams=2 decodes greedily"),
    ({"num_beams": 2, "stop_token_ids": [3]}, "num_beams=2 decodes greedily"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
])
def test_bad_generation_arguments_name_themselves(model, kwargs, message):
    kwargs = {"max_new_tokens": 3, **kwargs}
    cache = lucid.nn.DynamicKVCache()
    with pytest.raises(ValueError, match=message):
        generate(model, PROMPTS, cache=cache, **kwargs)
    assert cache.get_seq_length(0) == 0


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_incremental_decoding_never_breaks_a_character(text):
    tokenizer = byte_tokenizer()
    ids = tokenizer.encode(text)
    decoder = tokenizer.detokenizer()
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces) or "\ufffd" in text


def test_stream_yields_what_generate_decodes(model):
    tokenizer = byte_tokenizer()
    ids = tokenizer.encode("héllo wörld")
    from lucid.generation import stream

    pieces = list(stream(model, tokenizer, ids, 24, temperature=0.8, seed=2))
    new = generate(model, [ids], 24, temperature=0.8, seed=2, stop_token_ids=tokenizer.stop_token_ids).new_tokens[0]
    assert "".join(pieces) == tokenizer.decode([t for t in new if t not in tokenizer.stop_token_ids])
    assert len(pieces) >= 2


def test_a_chat_prefills_only_the_new_turn_and_answers_as_a_fresh_prompt_would(smollm2):
    model, tokenizer = smollm2
    with lucid.use_backend("numpy"):
        chat = ChatSession(model, tokenizer, max_new_tokens=12)
        chat.ask("What is the capital of France?")
        answer = chat.ask("And of Italy?")
        prompt = tokenizer.apply_chat_template(chat.messages[:-1])
        assert chat.prefilled < len(prompt) / 2  # the first turn came from the cache
        fresh = generate(model, [prompt], 12, stop_token_ids=tokenizer.stop_token_ids).new_tokens[0]
        assert answer == tokenizer.decode([t for t in fresh if t not in tokenizer.stop_token_ids])
        assert "Rome" in answer
        chat.reset()
        assert chat.cache.get_seq_length(0) == 0 and chat.messages == []


def test_a_chat_past_its_context_is_refused_and_keeps_its_turns(model):
    tokenizer = byte_tokenizer("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    chat = ChatSession(model, tokenizer, max_new_tokens=4, max_context=40)
    chat.ask("hi")
    turns, held = list(chat.messages), chat.cache.get_seq_length(0)
    with pytest.raises(ValueError, match="more than max_context=40"):
        chat.ask("x" * 50)
    assert chat.messages == turns and chat.cache.get_seq_length(0) == held


def test_the_demo_runs_on_the_trained_model(smollm2_path, capsys):
    from lucid.demo import main as demo_main

    assert demo_main(["--model", str(smollm2_path), "--tokens", "4", "--chat-tokens", "8", "--beams", "2",
                      "--prefix-len", "256", "--requests", "1"]) == 0
    out = capsys.readouterr().out
    assert "> What is the capital of France?\nThe capital of France is Paris." in out
    assert "all checks passed" in out and "quantized 4-bit" in out


def test_the_terminal_chat_streams_answers_and_obeys_its_commands(smollm2_path):
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lucid.chat", "--model", str(smollm2_path), "--max-new-tokens",
                             "12"], input="What is the capital of France?\n/reset\n\n/quit\n", capture_output=True,
                            text=True, timeout=300, env={**os.environ, "LUCID_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "The capital of France is Paris." in result.stdout
    assert "(new conversation)" in result.stdout and "tokens/s" in result.stdout


def test_the_terminal_chat_names_a_model_it_cannot_load(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lucid.chat", "--model", str(tmp_path / "none.gguf")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'none.gguf'}: no such file or directory")


def test_a_chat_whose_answer_was_not_read_to_the_end_goes_on_exactly(model):
    tokenizer = byte_tokenizer("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    chat = ChatSession(model, tokenizer, max_new_tokens=8)
    stream = chat.send("hello")
    next(stream)
    stream.close()  # the reader went away after the first piece
    assert len(chat.messages) == 2 and chat.cache.get_seq_length(0) == len(chat.ids)
    answer = chat.ask("again")
    prompt = tokenizer.apply_chat_template(chat.messages[:-1])
    fresh = generate(model, [prompt], 8, stop_token_ids=tokenizer.stop_token_ids).new_tokens[0]
    assert answer == tokenizer.decode([t for t in fresh if t not in tokenizer.stop_token_ids])
