"""Prompt-lookup decoding: drafts from the text itself, checked in one forward, the rejected
ones trimmed from the cache; the tokens are greedy decoding's, in fewer forward passes."""
import numpy as np
import pytest

import lucid.nn as nn
from lucid.generation import draft_from_context, generate
from lucid.models import LlamaConfig, LlamaModel

MODEL = LlamaModel.random(LlamaConfig(num_layers=2))
SLIDING = LlamaModel.random(LlamaConfig(num_layers=2, layer_types=("sliding", "full"), sliding_window=8))


def quoting_prompt(seed: int, length: int = 24) -> np.ndarray:
    """A prompt whose end repeats its start, so that its continuation has something to quote."""
    base = np.random.default_rng(seed).integers(0, 256, size=length)
    return np.concatenate([base, base[:6]])[None, :]


@pytest.mark.parametrize("cache", ["dynamic", "static", "hybrid", "quantized-8"])
@pytest.mark.parametrize("draft", [1, 3, 8])
def test_tokens_are_greedy_decodings(cache, draft):
    model = SLIDING if cache == "hybrid" else MODEL
    for seed in range(3):
        prompt = quoting_prompt(seed)
        plain = generate(model, prompt, 40, cache=cache)
        looked = generate(model, prompt, 40, cache=cache, prompt_lookup=draft)
        np.testing.assert_array_equal(looked.tokens, plain.tokens)
        assert len(looked.step_logits) == 40
        np.testing.assert_allclose(np.concatenate(looked.step_logits), np.concatenate(plain.step_logits),
                                   rtol=1e-4, atol=1e-4)


def test_drafts_save_forward_passes_when_the_text_repeats():
    prompt = np.tile(np.arange(10, 26), 3)[None, :]  # a pattern the model's greedy answer keeps repeating
    passes = []
    plain = generate(MODEL, prompt, 48)
    looked = generate(MODEL, prompt, 48, prompt_lookup=6, on_step=passes.append)
    np.testing.assert_array_equal(looked.tokens, plain.tokens)
    assert passes[-1] == 48 and len(passes) < 48  # several tokens per forward pass
    cache = nn.DynamicKVCache()
    generate(MODEL, prompt, 48, cache=cache, prompt_lookup=6)
    assert cache.get_seq_length(0) == prompt.shape[1] + 48 - 1  # rejected drafts trimmed away


def test_stop_tokens_and_the_token_budget_hold():
    prompt = quoting_prompt(4)
    plain = generate(MODEL, prompt, 25)
    stop = int(plain.tokens[0, prompt.shape[1] + 7])
    stopped = generate(MODEL, prompt, 25, stop_token_ids=[stop])
    looked = generate(MODEL, prompt, 25, stop_token_ids=[stop], prompt_lookup=5)
    assert looked.new_tokens == stopped.new_tokens and looked.tokens.shape == stopped.tokens.shape
    for budget in (1, 2, 7):
        assert generate(MODEL, prompt, budget, prompt_lookup=5).tokens.shape[1] == prompt.shape[1] + budget


def test_a_window_that_cannot_trim_drafts_nothing_and_stays_exact():
    prompt = quoting_prompt(5, length=20)  # past the window of 8: its layers cannot trim
    for kind in ("sliding", "hybrid"):
        plain = generate(SLIDING, prompt, 20, cache=kind)
        np.testing.assert_array_equal(generate(SLIDING, prompt, 20, cache=kind, prompt_lookup=4).tokens, plain.tokens)


@pytest.mark.parametrize("kwargs, text", [
    ({"prompt": np.zeros((2, 5), np.int64)}, "one prompt row"),
    ({"temperature": 0.7}, "greedily"),
    ({"num_beams": 2}, "num_beams=1"),
    ({"cache": "none"}, "cache='none'"),
    ({"prompt_lookup": -1}, "prompt_lookup"),
])
def test_bad_arguments(kwargs, text):
    call = {"prompt": np.zeros((1, 5), np.int64), "prompt_lookup": 3, **kwargs}
    with pytest.raises(ValueError, match=text):
        generate(MODEL, call.pop("prompt"), 5, **call)


def test_drafts_follow_the_latest_longest_match():
    assert draft_from_context([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], 2) == [7, 1]  # the later of two matches
    assert draft_from_context([4, 5, 6, 5, 6], 3) == [5, 6]  # "5 6" matched, then what followed it
    assert draft_from_context([1, 2, 3], 4) == []


def test_the_real_model_quotes_faster_with_the_same_tokens(smollm2):
    model, tokenizer = smollm2
    text = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate."
    ids = tokenizer.apply_chat_template([{"role": "user", "content": f"Repeat this sentence exactly: {text}"}],
                                        add_generation_prompt=True)
    passes = []
    plain = generate(model, [ids], 24, stop_token_ids=tokenizer.stop_token_ids)
    looked = generate(model, [ids], 24, stop_token_ids=tokenizer.stop_token_ids, prompt_lookup=8,
                      on_step=passes.append)
    assert looked.new_tokens == plain.new_tokens
    assert len(passes) < len(plain.new_tokens[0]) / 2  # most of the answer is quoted
