"""Values and sizes at the edges, copies of caches, loaders fed what is not a model, and the
command lines' arguments: each a clear error that names its argument, or an exact result."""
import copy
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import lucid
import lucid.nn as nn
from lucid.models import LlamaConfig, load_pretrained
from lucid.models.llama import write_random_checkpoint

from .test_cli import run


def tensor(values, dtype=lucid.Float32):
    return lucid.Tensor(np.asarray(values, dtype=np.float32)).astype(dtype)


# -- quantized values ------------------------------------------------------------

@pytest.mark.parametrize("dtype, big", [(lucid.Float16, 65504.0), (lucid.Float32, 3e38), (lucid.BFloat16, 3e38)])
def test_quantized_extremes_stay_finite_and_within_half_a_step(dtype, big):
    values = np.array([[[[big, -big, 0.0, 1.0], [big, big, big, big]]]], dtype=np.float32)
    x = tensor(values, dtype)
    for bits in (4, 8):
        layer = nn.QuantizedLayer(bits=bits, group_size=4, residual_length=0)
        back = layer.update(x, x)[0].astype(lucid.Float64).numpy()
        exact = x.astype(lucid.Float64).numpy()
        assert np.isfinite(back).all()
        step = (exact.max(axis=-1, keepdims=True) - exact.min(axis=-1, keepdims=True)) / (2**bits - 1)
        assert (np.abs(back - exact) <= step / 2 * 1.02 + 1e-30).all()  # half a step, and the scale's rounding


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantized_refuses_non_finite_values_and_changes_nothing(bad):
    cache = nn.QuantizedKVCache(bits=8, group_size=4, residual_length=0)
    good = tensor(np.ones((1, 1, 2, 4)))
    cache.update(good, good, 0)
    before = cache.get(0)[0].numpy().copy()
    values = np.ones((1, 1, 1, 4), np.float32)
    values[..., 1] = bad
    with pytest.raises(ValueError, match="finite"):
        cache.update(tensor(values), good[:, :, :1], 0)
    assert cache.get_seq_length(0) == 2 and np.array_equal(cache.get(0)[0].numpy(), before)


def test_quantized_refuses_integer_keys():
    ints = lucid.Tensor(np.full((1, 1, 1, 4), 1000, np.int32))
    with pytest.raises(TypeError, match="floating-point"):
        nn.QuantizedKVCache(bits=8, group_size=4).update(ints, ints, 0)


# -- sizes -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [nn.DynamicKVCache, lambda: nn.StaticKVCache(8, 1), lambda: nn.SlidingWindowKVCache(4),
                                  lambda: nn.QuantizedKVCache(8, 4)])
def test_a_batch_of_zero_rows_is_a_value_error(make):
    empty = lucid.zeros(0, 2, 1, 4)
    with pytest.raises(ValueError, match="batch of 0 rows"):
        make().update(empty, empty, 0)


def test_positions_and_indices_past_int64_are_value_errors():
    cache = nn.DynamicKVCache()
    cache.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4), 0)
    with pytest.raises(ValueError, match="cache_position"):
        cache.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4), 0, cache_position=2**70)
    with pytest.raises(ValueError, match="indices"):
        cache.batch_select_indices([2**70])
    assert cache.get_seq_length(0) == 1


@pytest.mark.parametrize("make, name", [(lambda: nn.SlidingWindowKVCache(2**40), "window"),
                                        (lambda: nn.QuantizedKVCache(8, 4, 2**40), "residual_length")])
def test_sizes_that_cannot_fit_name_their_argument(make, name):
    cache = make()
    with pytest.raises(ValueError, match=f"{name}=1099511627776"):
        cache.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4), 0)
    assert cache.get(0) is None


def test_a_hybrid_cache_refuses_layers_of_different_batches():
    a, b = nn.DynamicLayer(), nn.DynamicLayer()
    a.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4))
    b.update(lucid.randn(3, 1, 1, 4), lucid.randn(3, 1, 1, 4))
    with pytest.raises(ValueError, match=r"batches of \[2, 3\] rows"):
        nn.HybridKVCache([a, b])


# -- copies --------------------------------------------------------------------------

KINDS = {
    "dynamic": nn.DynamicKVCache,
    "static-reserved": lambda: nn.StaticKVCache(16, 2, max_batch_size=4),
    "sliding-sinks": lambda: nn.SlidingWindowKVCache(4, 1),
    "quantized": lambda: nn.QuantizedKVCache(8, 4, 2),
    "hybrid": lambda: nn.HybridKVCache([nn.SlidingWindowLayer(4), nn.StaticLayer(16)]),
    "encoder-decoder": nn.EncoderDecoderCache,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_every_cache_kind_copies_independently(kind, how):
    cache = KINDS[kind]()
    k = lucid.randn(2, 2, 6, 4)
    for layer in range(2):
        cache.update(k, k, layer)
    clone = copy.deepcopy(cache) if how == "deepcopy" else pickle.loads(pickle.dumps(cache))
    step = lucid.randn(2, 2, 1, 4)
    mine, theirs = cache.update(step, step, 0)[0].numpy(), clone.update(step, step, 0)[0].numpy()
    np.testing.assert_array_equal(mine, theirs)  # the copy continues exactly as the original
    cache.update(step, step, 0)  # and one changed alone leaves the other as it was
    assert clone.get_seq_length(0) == cache.get_seq_length(0) - 1
    cache.batch_select_indices([1])
    assert clone.get(0)[0].shape[0] == 2


def test_tensors_copy_and_pickle():
    x = lucid.randn(3, 2)
    for clone in (copy.deepcopy(x), pickle.loads(pickle.dumps(x))):
        assert clone.backend is x.backend and np.array_equal(clone.numpy(), x.numpy())


# -- loaders ---------------------------------------------------------------------------

def test_load_cache_reads_only_regular_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            nn.load_cache(path)


def checkpoint(tmp_path, edit=None, config=LlamaConfig()):
    directory = write_random_checkpoint(tmp_path / "ckpt", config)
    if edit:
        edit(directory)
    return directory


def edit_config(change):
    def edit(directory):
        raw = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps(change(raw)))
    return edit


@pytest.mark.parametrize("edit, text", [
    (edit_config(lambda raw: {k: v for k, v in raw.items() if k != "hidden_size"}), "'hidden_size' is missing"),
    (edit_config(lambda raw: [raw]), "must be a JSON object"),
    (edit_config(lambda raw: {**raw, "rope_scaling": "linear"}), "rope_scaling"),
    (edit_config(lambda raw: {**raw, "num_hidden_layers": 10**9}), "'num_hidden_layers' must be"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json: not readable JSON"),
    (lambda d: (d / "config.json").unlink() or os.mkfifo(d / "config.json"), "not a regular file"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors: not a readable safetensors file"),
    (lambda d: save_file({**load_file(str(d / "model.safetensors")), "model.norm.weight": np.ones(1, np.float32)},
                         str(d / "model.safetensors")), "'model.norm.weight' has shape \\(1,\\)"),
])
def test_load_pretrained_names_the_file_and_the_field(tmp_path, edit, text):
    with pytest.raises(ValueError, match=text):
        load_pretrained(checkpoint(tmp_path, edit))


def test_index_shards_stay_inside_the_checkpoint(tmp_path):
    directory = checkpoint(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (directory / "model.safetensors").rename(outside)
    names = load_file(str(outside))
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {name: "../elsewhere.safetensors" for name in names}}))
    with pytest.raises(ValueError, match="outside the checkpoint directory"):
        load_pretrained(directory)


# -- command lines ---------------------------------------------------------------------

def one_line_error(result, text):
    assert result.returncode == 2, result.stdout[-500:] + result.stderr
    assert text in result.stderr and "Traceback" not in result.stderr
    assert "lucid demo on" not in result.stdout  # refused before any work


@pytest.mark.parametrize("args, text", [
    (["--prefix-store", "mem"], "'mem' is not 'memory'"),
    (["--prefix-store", "redis:/127.0.0.1:6379"], "looks like a Redis URL"),
    (["--prefix-store", "redis://h:notaport"], "is not a Redis URL"),
    (["--prefix-store", "/proc/nonexistent-dir"], "cannot be used for a disk tier"),
    (["--prefix-len", "1000000000"], "--prefix-len: expected a whole number from 256 to 32768"),
    (["--prefix-len", "64"], "--prefix-len: expected a whole number from 256 to 32768"),
    (["--model", "tiny", "--text", "hello"], "--text needs a model with a tokenizer"),
])
def test_demo_checks_its_arguments_before_any_work(args, text):
    one_line_error(run("lucid.demo", *args), text)


def test_demo_refuses_a_model_it_cannot_load_in_one_line(tmp_path):
    broken = checkpoint(tmp_path, edit_config(lambda raw: {k: v for k, v in raw.items() if k != "vocab_size"}))
    one_line_error(run("lucid.demo", "--model", str(broken)), "'vocab_size' is missing")
    one_line_error(run("lucid.demo", "--model", str(broken / "config.json")), "neither a GGUF file")
    one_line_error(run("lucid.demo", "--model", str(checkpoint(tmp_path / "b")), "--text", "hi"),
                   "--text needs a model with a tokenizer")


def test_a_bad_thread_count_is_one_line_before_the_self_check():
    result = run("lucid", LUCID_NUM_THREADS="abc")
    assert result.returncode == 2 and "LUCID_NUM_THREADS" in result.stderr and "Traceback" not in result.stderr
    assert "self-check" not in result.stdout


def test_a_benchmark_on_a_backend_that_cannot_run_says_why_in_one_line():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "decode_step.py")
    result = subprocess.run([sys.executable, script, "--lengths", "16"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "LUCID_BACKEND": "bogus"})
    assert result.returncode == 2 and "not a known backend" in result.stderr and "Traceback" not in result.stderr
