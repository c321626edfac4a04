"""Cached decoding equals recomputation: greedy, beams, sliding window, on both caches."""
import numpy as np
import pytest

from lucid.demo import main as demo_main
from lucid.generation import generate
from lucid.models import DecoderConfig, TinyDecoder

MODEL = TinyDecoder(DecoderConfig(num_layers=2))
PROMPT = np.random.default_rng(0).integers(0, 256, size=(2, 5))


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a.step_logits, b.step_logits))


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("options", [{}, {"num_beams": 3}, {"window": 4}], ids=["greedy", "beams", "window"])
def test_cached_decoding_matches_recompute(backend_name, cache, options):
    model = TinyDecoder(DecoderConfig(num_layers=2))  # weights on the active backend
    assert model.embed.backend.name == backend_name
    cached = generate(model, PROMPT, 12, cache=cache, **options)
    plain = generate(model, PROMPT, 12, cache="none", **options)
    assert cached.tokens.shape == (2, 17)
    np.testing.assert_array_equal(cached.tokens, plain.tokens)
    assert max_diff(cached, plain) < 1e-4


def test_the_window_really_limits_attention():
    full = generate(MODEL, PROMPT, 20, cache="dynamic")
    windowed = generate(MODEL, PROMPT, 20, cache="dynamic", window=3)
    assert not np.array_equal(full.tokens, windowed.tokens)


def test_static_cache_holds_exactly_prompt_plus_new_tokens():
    out = generate(MODEL, PROMPT[:1], 7, cache="static")
    c = MODEL.config
    assert out.cache_bytes == c.num_layers * 2 * (1 * c.num_kv_heads * 12 * c.head_dim) * 4


def test_demo_runs_and_passes_its_check(capsys):
    assert demo_main(["--tokens", "6", "--layers", "1", "--window", "4"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "| greedy, static |" in out
