"""Llama-family checkpoints written by transformers itself: lucid must give transformers' answers.

Needs the ``compare`` extra (torch CPU and transformers); skips with the reason otherwise.
"""
import numpy as np
import pytest

import lucid.nn as nn
from lucid.generation import generate
from lucid.models import load_pretrained

torch = pytest.importorskip("torch", reason="the peer checks need torch (pip install -e '.[compare]')")
transformers = pytest.importorskip("transformers", reason="the peer checks need transformers (the compare extra)")

SIZES = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, eos_token_id=None, bos_token_id=None,
             pad_token_id=0)
MODELS = {
    "llama": lambda: transformers.LlamaConfig(**SIZES),
    "llama3-rope": lambda: transformers.LlamaConfig(**SIZES, tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "mistral": lambda: transformers.MistralConfig(**SIZES, sliding_window=7),
    "qwen2": lambda: transformers.Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=6, max_window_layers=1),
}
PROMPT = np.random.default_rng(0).integers(1, 96, size=(1, 12))


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    config = MODELS[request.param]()
    reference = getattr(transformers, config.architectures[0] if config.architectures else {
        "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[
        config.model_type])(config).eval()
    reference.generation_config.eos_token_id = None
    directory = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(directory)
    return request.param, reference, load_pretrained(directory), directory


def test_prefill_logits_match(pair):
    _, reference, model, _ = pair
    ids = np.random.default_rng(1).integers(1, 96, size=(2, 20))
    with torch.no_grad():
        want = reference(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.forward(ids).numpy(), want, atol=1e-4, rtol=0)


def reference_greedy(reference, steps, beams=1):
    with torch.no_grad():
        out = reference.generate(torch.tensor(PROMPT), max_new_tokens=steps, do_sample=False, num_beams=beams,
                                 output_logits=True, return_dict_in_generate=True)
    return out.sequences.numpy(), [x.numpy() for x in out.logits]


@pytest.mark.parametrize("cache", ["dynamic", "static", "sliding", "hybrid", "quantized-8"])
def test_32_greedy_steps_give_transformers_tokens(pair, cache):
    name, reference, model, _ = pair
    if cache == "sliding" and "sliding" not in set(model.config.layer_types):
        pytest.skip(f"{name} has no sliding-window layers")
    if cache == "sliding" and set(model.config.layer_types) != {"sliding"}:
        pytest.skip(f"{name} mixes layer kinds: the hybrid cache serves it")
    want_tokens, want_logits = reference_greedy(reference, 32)
    got = generate(model, PROMPT, 32, cache=cache)
    np.testing.assert_array_equal(got.tokens, want_tokens)
    tolerance = 5e-2 if cache == "quantized-8" else 1e-4
    for step, (ours, theirs) in enumerate(zip(got.step_logits, want_logits)):
        assert np.abs(ours - theirs).max() < tolerance, step


def test_beam_search_gives_transformers_best_sequence(pair):
    _, reference, model, _ = pair
    want, _ = reference_greedy(reference, 10, beams=4)
    got = generate(model, PROMPT, 10, cache="dynamic", num_beams=4)
    np.testing.assert_array_equal(got.tokens, want)


def test_bfloat16_checkpoints_load_and_agree(pair, tmp_path):
    name, reference, _, _ = pair
    reference.to(torch.bfloat16).save_pretrained(tmp_path)
    reference.to(torch.float32)  # back for the other tests
    model = load_pretrained(tmp_path)  # bfloat16 weights, computed in float32
    upcast = getattr(transformers, type(reference).__name__).from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = np.random.default_rng(2).integers(1, 96, size=(1, 16))
    with torch.no_grad():
        want = upcast(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.forward(ids).numpy(), want, atol=1e-4, rtol=0)


def test_unsupported_and_incomplete_checkpoints_are_clear_errors(pair, tmp_path):
    import json
    import shutil

    _, _, _, directory = pair
    for file in directory.iterdir():
        shutil.copy(file, tmp_path / file.name)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")
    nn_cache = nn.DynamicKVCache()
    assert nn_cache.get(0) is None


def test_the_demo_runs_its_checks_on_a_checkpoint(pair, capsys):
    from lucid.demo import main as demo_main

    name, _, model, directory = pair
    assert demo_main(["--model", str(directory), "--tokens", "4", "--prefix-len", "256", "--requests", "1"]) == 0
    out = capsys.readouterr().out
    assert model.config.architecture in out and "all checks passed" in out


def test_the_demo_names_a_directory_that_is_no_checkpoint(tmp_path, capsys):
    from lucid.demo import main as demo_main

    assert demo_main(["--model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err

