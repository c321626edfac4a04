"""Loading checkpoints without transformers: layouts (single file, shards), dtypes, text in and out."""
import json

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st

import lucid.nn as nn
from lucid.generation import generate
from lucid.models import load_pretrained
from lucid.models.llama import write_random_checkpoint


def test_sharded_and_bfloat16_checkpoints_give_the_same_model(tmp_path):
    single = write_random_checkpoint(tmp_path / "single")
    tensors = safetensors.numpy.load_file(str(single / "model.safetensors"))
    names = sorted(tensors)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((single / "config.json").read_text())
    weight_map = {}
    for n, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"model-0000{n + 1}-of-00002.safetensors"
        safetensors.numpy.save_file({name: tensors[name] for name in part}, str(sharded / file))
        weight_map.update({name: file for name in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = np.array([[3, 1, 4, 1, 5]])
    want = load_pretrained(single).forward(ids).numpy()
    np.testing.assert_array_equal(load_pretrained(sharded).forward(ids).numpy(), want)
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    (bf16 / "config.json").write_text((single / "config.json").read_text())
    from safetensors.numpy import save_file
    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, str(bf16 / "model.safetensors"))
    got = load_pretrained(bf16).forward(ids).numpy()
    assert np.abs(got - want).max() < 0.1  # bfloat16 weights: about 3 significant digits


def test_missing_tensors_and_files_are_named(tmp_path):
    directory = write_random_checkpoint(tmp_path / "c")
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        load_pretrained(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_pretrained(directory)


def test_a_checkpoint_model_decodes_with_every_cache_kind(tmp_path):
    model = load_pretrained(write_random_checkpoint(tmp_path))
    prompt = np.array([[1, 2, 3, 4, 5]])
    plain = generate(model, prompt, 8, cache="none").tokens
    for cache in ("dynamic", "static", "quantized-8"):
        np.testing.assert_array_equal(generate(model, prompt, 8, cache=cache).tokens, plain)
    assert generate(model, prompt, 8, cache=nn.DynamicKVCache(), num_beams=3).tokens.shape == (1, 13)


def test_text_in_text_out_with_the_checkpoints_tokenizer(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers", reason="text in, text out needs the tokenizers package")
    from lucid.demo import main as demo_main
    from lucid.models.llama import write_random_checkpoint

    directory = write_random_checkpoint(tmp_path)
    vocab = {f"w{i}": i for i in range(256)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    assert demo_main(["--model", str(directory), "--tokens", "3", "--text", "w1 w2 w3", "--prefix-len", "256",
                      "--requests", "1"]) == 0
    out = capsys.readouterr().out
    assert "text: 'w1 w2 w3' -> 'w" in out
    assert "prefix reuse: 1 request shares a 256-token system prompt" in out


def test_token_blocks_give_the_same_logits_and_cache(backend_name, monkeypatch):
    """A long input runs the token-by-token parts of each layer in blocks (several at once on
    NumPy): any block size gives the same logits and the same cache as one block."""
    from lucid.models import LlamaConfig, LlamaModel, llama

    model = LlamaModel.random(LlamaConfig(num_layers=2, layer_types=("sliding", "full"), sliding_window=5,
                                          sink_tokens=1))
    ids = np.random.default_rng(5).integers(0, 256, size=(3, 11))
    whole, whole_cache = model.forward(ids, cache=nn.DynamicKVCache()).numpy(), None
    for tokens in (1, 4, 7):
        monkeypatch.setattr(llama, "TOKENS_PER_BLOCK", tokens)  # (x2 at this width) blocks of 1, 3 and 4 positions x 3 rows
        cache = nn.DynamicKVCache()
        np.testing.assert_allclose(model.forward(ids, cache=cache).numpy(), whole, rtol=1e-5, atol=1e-5)
        keys = cache.get(1)[0].numpy()
        if whole_cache is not None:
            np.testing.assert_allclose(keys, whole_cache, rtol=1e-5, atol=1e-5)
        whole_cache = keys


@given(batch=st.integers(1, 16), length=st.integers(1, 5000), hidden=st.sampled_from([64, 256, 576, 2048]),
       threads=st.integers(1, 4))
def test_token_blocks_cover_the_input_in_blocks_of_even_size(batch, length, hidden, threads):
    from lucid.models.llama import _token_blocks

    blocks = _token_blocks(batch, length, hidden, threads)
    assert [t0 for t0, _ in blocks] == [0] + [t1 for _, t1 in blocks[:-1]] and blocks[-1][1] == length
    sizes = [t1 - t0 for t0, t1 in blocks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) < len(blocks)  # no small remainder beside full blocks


def test_a_model_refuses_input_ids_without_tokens_and_keeps_its_cache():
    from lucid.models import LlamaModel

    model, cache = LlamaModel.random(), nn.DynamicKVCache()
    model.forward(np.arange(5)[None, :], cache=cache)
    for ids in (np.zeros((1, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64), np.arange(3)):
        with pytest.raises(ValueError, match=r"input_ids must be .* shape \(batch, tokens\)"):
            model.forward(ids, cache=cache)
    assert cache.get_seq_length(0) == 5


@pytest.mark.parametrize("kind", ["none", "dynamic", "static", "sliding", "hybrid", "quantized-8"])
@pytest.mark.parametrize("keep", [1, 3])
def test_kept_logits_are_the_last_positions_of_all(backend_name, monkeypatch, kind, keep):
    """``logits_to_keep`` runs the last layer's queries, attention and MLP for the kept positions
    only: their logits, and every cache's contents, are those of the full forward pass, after
    a cached prefix too."""
    from lucid.generation import make_cache
    from lucid.models import LlamaConfig, LlamaModel, llama

    monkeypatch.setattr(llama, "TOKENS_PER_BLOCK", 8)  # several blocks of tokens in each layer
    model = LlamaModel.random(LlamaConfig(num_layers=3, layer_types=("sliding", "full", "sliding"),
                                          sliding_window=4, sink_tokens=1))
    ids = np.random.default_rng(6).integers(0, 256, size=(2, 13))
    caches = [make_cache(kind, model, 20) for _ in range(2)]
    outputs = []
    for cache, kept in zip(caches, (0, keep)):
        if cache is not None:
            model.forward(ids[:, :4], cache=cache)
        start = 0 if cache is None else 4
        outputs.append(model.forward(ids[:, start:], cache=cache, cache_position=range(start, 13),
                                     logits_to_keep=kept).numpy())
    assert outputs[1].shape == (2, keep, 256)
    np.testing.assert_allclose(outputs[1], outputs[0][:, -keep:, :], rtol=1e-5, atol=1e-5)
    if kind != "none":
        for layer_idx in range(3):
            for whole, trimmed in zip(caches[0].get(layer_idx), caches[1].get(layer_idx)):
                np.testing.assert_array_equal(trimmed.numpy(), whole.numpy())


@pytest.mark.parametrize("kind", ["none", "dynamic", "static", "quantized-8", "sliding"])
def test_prefills_attend_causally_without_a_mask_where_the_keys_are_in_order(backend_name, monkeypatch, kind):
    """A full-attention layer whose keys are the positions up to its last query, in order (a
    prompt, or its second chunk after the first is cached), attends causally with no mask built;
    sliding layers keep theirs, and so does a layer whose cache dropped keys (a sliding-window
    cache on every layer: its second chunk's keys skip the positions between the sink and the
    window). The logits are those the mask gives."""
    from lucid.generation import make_cache
    from lucid.models import LlamaConfig, LlamaModel, llama

    model = LlamaModel.random(LlamaConfig(num_layers=2, layer_types=("sliding", "full"), sliding_window=4,
                                          sink_tokens=1))
    ids = np.random.default_rng(7).integers(0, 256, size=(2, 12))
    real, seen = llama._causal, []
    outputs = []
    for decide in (lambda *args: seen.append(real(*args)) or seen[-1], lambda *args: False):
        monkeypatch.setattr(llama, "_causal", decide)
        cache = make_cache(kind, model, 12)
        chunks = [(0, 12)] if cache is None else [(0, 5), (5, 12)]
        outputs.append([model.forward(ids[:, a:b], cache=cache, cache_position=range(a, b)).numpy()
                        for a, b in chunks])
    for fast, masked in zip(*outputs):
        np.testing.assert_allclose(fast, masked, rtol=1e-5, atol=1e-5)
    assert seen == [True, kind != "sliding"][:len(outputs[0])]  # the full layer only, once per chunk


def test_weights_in_memory_missing_a_tensor_are_named():
    from lucid.models import LlamaConfig, LlamaModel
    from lucid.models.llama import random_weights

    weights = random_weights(LlamaConfig())
    del weights["model.layers.1.self_attn.o_proj.weight"]
    with pytest.raises(ValueError, match="model.layers.1.self_attn.o_proj.weight"):
        LlamaModel(LlamaConfig(), weights)
