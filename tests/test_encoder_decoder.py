"""EncoderDecoderCache: routing by is_cross_attention, and batch utilities applied to both caches atomically."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn

from .helpers import assert_unchanged, snapshot


def filled(batch=2):
    cache = nn.EncoderDecoderCache(nn.StaticKVCache(max_cache_len=8, num_layers=1), nn.DynamicKVCache())
    cache.update(lucid.randn(batch, 2, 5, 4), lucid.randn(batch, 2, 5, 4), 0, is_cross_attention=True)
    cache.update(lucid.randn(batch, 2, 3, 4), lucid.randn(batch, 2, 3, 4), 0)
    return cache


def test_routes_to_the_right_cache(backend_name):
    cache = filled()
    assert cache.get_seq_length(0) == 3 and cache.get_seq_length(0, is_cross_attention=True) == 5
    assert cache.self_attention_cache.get_seq_length(0) == 3
    assert cache.get(0, is_cross_attention=True)[0].shape == (2, 2, 5, 4)
    assert cache.get_max_cache_shape() == 8
    assert nn.EncoderDecoderCache().get_max_cache_shape() is None


def test_batch_utilities_crop_and_reset_reach_both(backend_name):
    cache = filled()
    cross = cache.get(0, is_cross_attention=True)[0].numpy().copy()
    cache.batch_repeat_interleave(2)
    cache.reorder_cache([3, 0])
    np.testing.assert_array_equal(cache.get(0, is_cross_attention=True)[0].numpy(), cross[[1, 0]])
    assert cache.get(0)[0].shape[0] == 2
    cache.crop(2)
    assert cache.get_seq_length(0) == 2 and cache.get_seq_length(0, is_cross_attention=True) == 2
    cache.reset()
    assert cache.get(0) is None and cache.get(0, is_cross_attention=True) is None


def test_a_bad_index_for_either_cache_changes_neither(backend_name):
    cache = nn.EncoderDecoderCache()
    cache.update(lucid.randn(3, 1, 1, 2), lucid.randn(3, 1, 1, 2), 0, is_cross_attention=True)
    cache.update(lucid.randn(3, 1, 1, 2), lucid.randn(3, 1, 1, 2), 0)
    cache.self_attention_cache.batch_select_indices([0, 1])  # now the two disagree: 2 vs 3 rows
    with pytest.raises(ValueError, match="indices"):
        cache.batch_select_indices([2])
    assert cache.get(0, is_cross_attention=True)[0].shape[0] == 3
    assert cache.get(0)[0].shape[0] == 2


def test_constructor_checks_its_arguments():
    with pytest.raises(TypeError, match="self_attention_cache"):
        nn.EncoderDecoderCache(self_attention_cache=object())
    shared = nn.DynamicKVCache()
    with pytest.raises(ValueError, match="different"):
        nn.EncoderDecoderCache(shared, shared)


@pytest.mark.parametrize("call, error", [
    (lambda c: c.batch_repeat_interleave(2**62), ValueError),
    (lambda c: c.crop(-1), ValueError),
    (lambda c: c.reorder_cache([0.5]), TypeError),
])
def test_a_bad_argument_changes_neither_cache(backend_name, call, error):
    cache = filled()
    before = (snapshot(cache.self_attention_cache, 1), snapshot(cache.cross_attention_cache, 1))
    with pytest.raises(error):
        call(cache)
    assert_unchanged(before[0], cache.self_attention_cache, 1)
    assert_unchanged(before[1], cache.cross_attention_cache, 1)


def test_nbytes_counts_both_caches(backend_name):
    cache = filled()
    assert cache.nbytes() == cache.self_attention_cache.nbytes() + cache.cross_attention_cache.nbytes() > 0
    assert cache.self_attention_cache.nbytes() == 8 * 2 * 2 * (4 + 4) * 4  # static: max_cache_len 8
