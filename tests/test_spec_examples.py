"""The spec pages' examples, as our own tests, plus the spec's own checker where ../shared is present."""
import pathlib
import subprocess
import sys

import pytest

import lucid
import lucid.nn as nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKER = ROOT.parent / "shared" / "tools" / "spec_examples.py"


def test_quick_start_append_two_steps(backend_name):
    cache = nn.DynamicKVCache()
    k, v = cache.update(lucid.randn(2, 8, 1, 64), lucid.randn(2, 8, 1, 64), layer_idx=0)
    assert (k.shape, v.shape) == ((2, 8, 1, 64), (2, 8, 1, 64))
    k, _ = cache.update(lucid.randn(2, 8, 1, 64), lucid.randn(2, 8, 1, 64), layer_idx=0)
    assert cache.get_seq_length(0) == 2 and k.shape == (2, 8, 2, 64)


@pytest.mark.parametrize("make", [nn.DynamicKVCache, lambda: nn.StaticKVCache(32, 1)], ids=["dynamic", "static"])
@pytest.mark.parametrize(
    "shape, position, length",
    [
        ((1, 8, 1, 64), lucid.Tensor(5, dtype=lucid.Int32), 6),
        ((1, 8, 3, 64), lucid.Tensor([0, 2, 4], dtype=lucid.Int32), 5),
        ((1, 8, 3, 64), lucid.Tensor([0, 4, 7], dtype=lucid.Int32), 8),
        ((2, 8, 2, 64), lucid.Tensor([[0, 2], [1, 3]], dtype=lucid.Int32), 4),
        ((2, 8, 2, 64), lucid.Tensor([[0, 5], [1, 7]], dtype=lucid.Int32), 8),
    ],
)
def test_position_modes_set_the_length(make, shape, position, length):
    cache = make()
    cache.update(lucid.randn(*shape), lucid.randn(*shape), layer_idx=0, cache_position=position)
    assert cache.get_seq_length(0) == length


def test_many_layers_and_static_basics():
    cache = nn.DynamicKVCache()
    for layer in range(6):
        cache.update(lucid.randn(1, 8, 1, 64), lucid.randn(1, 8, 1, 64), layer_idx=layer)
    assert cache.get_seq_length(0) == cache.get_seq_length(5) == 1
    static = nn.StaticKVCache(max_cache_len=16, num_layers=2)
    static.update(lucid.randn(2, 8, 4, 64), lucid.randn(2, 8, 4, 64), layer_idx=0)
    assert static.get_seq_length(0) == 4 and static.get_max_cache_shape() == 16
    with pytest.raises(ValueError):
        nn.StaticKVCache(max_cache_len=4, num_layers=1).update(lucid.randn(1, 8, 5, 64), lucid.randn(1, 8, 5, 64), 0)


@pytest.mark.parametrize("make", [nn.DynamicKVCache, lambda: nn.StaticKVCache(64, 4)], ids=["dynamic", "static"])
def test_beam_expand_select_then_crop(make):
    cache = make()
    cache.update(lucid.randn(2, 8, 20, 64), lucid.randn(2, 8, 20, 64), layer_idx=0)
    cache.batch_repeat_interleave(4)
    cache.reorder_cache(lucid.Tensor([7, 2, 5, 1], dtype=lucid.Int32))
    cache.batch_select_indices(lucid.Tensor([3, 1, 0, 2], dtype=lucid.Int32))
    assert cache.get(0)[0].shape == (4, 8, 20, 64)
    cache.crop(8)
    assert cache.get_seq_length(0) == 8
    cache.reset()
    assert cache.get(0) is None


@pytest.mark.skipif(not CHECKER.exists(), reason="../shared/tools/spec_examples.py is not beside this checkout")
def test_spec_pages_run_as_documented():
    result = subprocess.run([sys.executable, str(CHECKER)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
