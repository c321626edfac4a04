"""Cached decoding equals recomputation: every cache kind, greedy and beams, full/sliding/hybrid models."""
import numpy as np
import pytest

from lucid.demo import compare
from lucid.demo import main as demo_main
from lucid.generation import generate, make_cache
from lucid.models import LlamaConfig, LlamaModel

PROMPT = np.random.default_rng(0).integers(0, 256, size=(2, 5))
MODELS = {
    "full": LlamaConfig(num_layers=2),
    "sliding": LlamaConfig(num_layers=2, layer_types=("sliding", "sliding"), sliding_window=4, sink_tokens=2),
    "hybrid": LlamaConfig(num_layers=2, layer_types=("sliding", "full"), sliding_window=3),
}
EXACT = [("full", "dynamic"), ("full", "static"), ("sliding", "sliding"), ("sliding", "hybrid"), ("hybrid", "hybrid")]


@pytest.mark.parametrize("model_name, cache", EXACT)
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_decoding_matches_recompute(backend_name, model_name, cache, beams):
    model = LlamaModel.random(MODELS[model_name])  # weights on the active backend
    assert model.embed.backend.name == backend_name
    cached = generate(model, PROMPT, 12, cache=cache, num_beams=beams)
    plain = generate(model, PROMPT, 12, cache="none", num_beams=beams)
    assert cached.tokens.shape == (2, 17)
    np.testing.assert_array_equal(cached.tokens, plain.tokens)
    assert compare(cached, plain)[2] < 1e-4


@pytest.mark.parametrize("cache, bound", [("quantized-8", 0.05), ("quantized-4", 0.5)])
def test_quantized_caches_stay_within_their_documented_bounds(cache, bound):
    model = LlamaModel.random(MODELS["full"])
    cached = generate(model, PROMPT, 40, cache=cache)
    plain = generate(model, PROMPT, 40, cache="none")
    same, first, diff = compare(cached, plain)
    assert diff <= bound
    if cache == "quantized-8":
        assert first is None and same == 40


def test_the_window_really_limits_attention():
    full = generate(LlamaModel.random(MODELS["full"]), PROMPT, 20, cache="dynamic")
    windowed = generate(LlamaModel.random(LlamaConfig(num_layers=2, layer_types=("sliding", "sliding"),
                                                  sliding_window=3)), PROMPT, 20, cache="sliding")
    assert not np.array_equal(full.tokens, windowed.tokens)


def test_static_cache_holds_exactly_prompt_plus_new_tokens():
    model = LlamaModel.random(MODELS["full"])
    out = generate(model, PROMPT[:1], 7, cache="static")
    c = model.config
    assert out.cache_bytes == c.num_layers * 2 * (1 * c.num_kv_heads * 12 * c.head_dim) * 4


def test_a_dynamic_cache_made_by_generate_holds_exactly_prompt_plus_new_tokens():
    """generate knows the length the sequence reaches: its dynamic cache allocates that once,
    with no headroom past it."""
    model = LlamaModel.random(MODELS["full"])
    cache = make_cache("dynamic", model, PROMPT.shape[1] + 12)
    generate(model, PROMPT, 12, cache=cache)
    assert [layer.capacity for layer in cache.layers] == [PROMPT.shape[1] + 12] * 2
    assert cache.get_seq_length(0) == PROMPT.shape[1] + 11  # the last token is never fed back


def test_unknown_cache_kind_names_the_choices():
    with pytest.raises(ValueError, match="quantized-4"):
        make_cache("ring", LlamaModel.random(MODELS["full"]), 10)


def test_decoder_checks_layer_types():
    with pytest.raises(ValueError, match="layer_types"):
        LlamaModel.random(LlamaConfig(num_layers=2, layer_types=("sliding",)))


def test_demo_runs_and_passes_its_check(capsys):
    assert demo_main(["--model", "tiny", "--tokens", "6", "--layers", "2", "--window", "4"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "| greedy, static |" in out and "| quantized 4-bit |" in out
    assert "| 1 | 1024 |" in out  # the prefix-reuse run fetched the whole system prompt


def test_a_sliding_cache_for_a_model_without_a_window_says_which_kinds_fit():
    from lucid.generation import make_cache

    with pytest.raises(ValueError, match="cache='sliding' needs a model with sliding-window attention.*use dynamic, "
                                         "static, quantized-8 or quantized-4"):
        make_cache("sliding", LlamaModel.random(), 16)
