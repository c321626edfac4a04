"""GGUF files: the same model as its safetensors checkpoint, llama.cpp's row order undone, every
supported tensor type read, and clear errors for what lucid does not read."""
import dataclasses

import numpy as np
import pytest

import lucid
from lucid.models import LlamaConfig, LlamaModel, load_pretrained
from lucid.models.gguf_file import GGUFWeights, _permute_rotary, _unpermute_rotary, write_gguf
from lucid.models.llama import random_weights

gguf = pytest.importorskip("gguf")

CONFIG = LlamaConfig(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=128,
                     intermediate_size=96, tie_word_embeddings=True)


def write_one_tensor(path, architecture, data, qtype=None, tokenizer_model=None):
    """A GGUF file of ``architecture`` holding ``data`` as ``token_embd.weight`` (and a two-token
    vocabulary of ``tokenizer_model``, if given)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    if tokenizer_model:
        writer.add_tokenizer_model(tokenizer_model)
        writer.add_token_list(["<unk>", "a"])
    writer.add_tensor("token_embd.weight", data, raw_dtype=qtype)
    for stage in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        stage()
    writer.close()
    return path


def test_a_gguf_file_gives_the_checkpoints_logits(tmp_path, backend_name):
    weights = random_weights(CONFIG, seed=3)
    path = write_gguf(tmp_path / "m.gguf", CONFIG, weights)
    ids = np.array([[5, 9, 17, 33, 2, 70]])
    want = LlamaModel(CONFIG, weights).forward(ids).numpy()
    got = load_pretrained(path).forward(ids).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_the_config_comes_from_the_metadata(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", CONFIG, random_weights(CONFIG))
    config = GGUFWeights(path).config()
    assert config.rms_norm_eps == pytest.approx(CONFIG.rms_norm_eps, rel=1e-6)  # GGUF stores a float32
    assert dataclasses.replace(config, rms_norm_eps=CONFIG.rms_norm_eps) == CONFIG


def test_rotary_row_order_round_trips_and_is_not_the_identity():
    rows = np.arange(4 * 16, dtype=np.float32).reshape(4 * 16, 1)
    permuted = _permute_rotary(rows, 4)
    assert not np.array_equal(permuted, rows)
    # llama.cpp pairs neighbours: within a head, row 1 of the file is row D/2 of transformers'
    assert permuted[1, 0] == 8
    np.testing.assert_array_equal(_unpermute_rotary(permuted, 4), rows)


@pytest.mark.parametrize("kind, atol", [("F16", 1e-2), ("BF16", 5e-2), ("Q8_0", 5e-2), ("Q4_0", 0.5), ("Q4_1", 0.5)])
def test_every_supported_tensor_type_dequantizes(tmp_path, kind, atol):
    rng = np.random.default_rng(0)
    original = rng.standard_normal((8, 64)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[kind]
    weights = GGUFWeights(write_one_tensor(tmp_path / "t.gguf", "llama", gguf.quants.quantize(original, qtype), qtype))
    np.testing.assert_allclose(weights.get("model.embed_tokens.weight"), original, atol=atol)


def test_an_unknown_architecture_names_the_file(tmp_path):
    write_one_tensor(tmp_path / "g.gguf", "gpt2", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"g\.gguf: architecture 'gpt2' is not supported"):
        load_pretrained(tmp_path / "g.gguf")


def test_an_unknown_tensor_type_names_the_tensor(tmp_path):
    q5 = gguf.GGMLQuantizationType.Q5_0
    write_one_tensor(tmp_path / "q.gguf", "llama", gguf.quants.quantize(np.zeros((4, 256), np.float32), q5), q5)
    with pytest.raises(ValueError, match=r"q\.gguf: tensor 'token_embd.weight' has type Q5_0"):
        load_pretrained(tmp_path / "q.gguf")


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"x\.bin: neither a GGUF file nor a checkpoint directory"):
        load_pretrained(tmp_path / "x.bin")
    with pytest.raises(ValueError, match="no such file or directory"):
        load_pretrained(tmp_path / "missing")


def test_a_missing_tensor_names_both_spellings(tmp_path):
    weights = random_weights(CONFIG)
    del weights["model.layers.1.mlp.up_proj.weight"]
    path = write_gguf(tmp_path / "m.gguf", CONFIG, weights)
    with pytest.raises(ValueError, match=r"no tensor 'blk\.1\.ffn_up\.weight'.*model\.layers\.1\.mlp\.up_proj"):
        with lucid.use_backend("numpy"):
            load_pretrained(path)


def test_an_unknown_tokenizer_model_names_the_file(tmp_path):
    from lucid.models import load_tokenizer

    write_one_tensor(tmp_path / "sp.gguf", "llama", np.zeros((2, 4), np.float32), tokenizer_model="llama")
    with pytest.raises(ValueError, match=r"sp\.gguf: tokenizer model 'llama' is not supported"):
        load_tokenizer(tmp_path / "sp.gguf")


def test_a_rewritten_file_is_read_again(tmp_path):
    import os

    path = write_gguf(tmp_path / "m.gguf", CONFIG, random_weights(CONFIG, seed=1))
    first = GGUFWeights(path).get("model.norm.weight")
    write_gguf(path, CONFIG, random_weights(CONFIG, seed=2))
    os.utime(path, ns=(1, 1))  # a different modification time, even on a coarse clock
    assert not np.array_equal(GGUFWeights(path).get("model.norm.weight"), first)


def test_loading_smollm2_allocates_at_most_a_fifth_more_than_its_weights(smollm2_path):
    """The metadata parse (a few small arrays per vocabulary entry) is dropped before the
    weights are dequantized, and no tensor is ever in flight twice: measured in a fresh
    process, since the parsed metadata is cached per process."""
    import json
    import pathlib
    import subprocess
    import sys

    benchmarks = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    script = (f"import json, sys; sys.path.insert(0, {str(benchmarks)!r}); from model_memory import measure; "
              f"print(json.dumps(measure({str(smollm2_path)!r})))")
    got = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                    check=True).stdout)
    assert got["peak"] <= 1.2 * got["weights"], got
    assert got["retained"] <= 1.05 * got["weights"], got
