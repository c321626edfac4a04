"""``trim(n)``: the rollback of the last n positions, on the composite caches and with bad input."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn

from .helpers import assert_unchanged, kv, snapshot


def test_a_hybrid_trims_only_while_every_layer_can():
    cache = nn.HybridKVCache([nn.DynamicLayer(), nn.SlidingWindowLayer(window=4), nn.QuantizedLayer(8, 4, 8)])
    for layer in range(3):
        cache.update(*kv(t=3), layer)
    assert cache.can_trim(3) and cache.trim(2) == 2
    assert [cache.get_seq_length(i) for i in range(3)] == [1, 1, 1]
    for layer in range(3):
        cache.update(*kv(t=4), layer)  # 5 positions: the window has dropped position 0
    before = snapshot(cache, 3)
    assert not cache.can_trim(1)
    with pytest.raises(ValueError, match=r"trim\(n=1\): layer 1 \(SlidingWindowLayer.*can drop at most its last 0"):
        cache.trim(1)
    assert_unchanged(before, cache, 3)
    assert cache.trim(0) == 0


def test_the_kept_positions_keep_their_numbers_and_the_next_write_follows_them():
    cache = nn.StaticKVCache(max_cache_len=8, num_layers=1)
    k = lucid.Tensor(np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1))
    cache.update(k, k, 0)
    cache.trim(2)
    out, _ = cache.update(lucid.Tensor(np.full((1, 1, 1, 1), 9.0, np.float32)), k[:, :, :1, :], 0, cache_position=[4])
    assert out.numpy()[0, 0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 9.0]
    cache.update(*kv(b=1, h=1, d=1), 0, cache_position=[7])  # a gap after a trim reads zeros, never old data
    assert cache.get(0)[0].numpy()[0, 0, 5:7, 0].tolist() == [0.0, 0.0]


def test_an_encoder_decoder_cache_rolls_back_the_decoder_only():
    cache = nn.EncoderDecoderCache()
    cache.update(*kv(t=5), 0)
    cache.update(*kv(t=7), 0, is_cross_attention=True)
    assert cache.trim(3) == 3
    assert cache.get_seq_length(0) == 2 and cache.get_seq_length(0, is_cross_attention=True) == 7


@pytest.mark.parametrize("n, error, text", [
    (-1, ValueError, "n must be an int >= 0, got -1"),
    (1.0, TypeError, "n must be an int, got float"),
    (6, ValueError, r"trim\(n=6\): layer 0 .* at most its last 5"),
])
def test_bad_counts_name_the_argument_and_change_nothing(n, error, text):
    cache = nn.DynamicKVCache()
    cache.update(*kv(t=5), 0)
    before = snapshot(cache, 1)
    with pytest.raises(error, match=text):
        cache.trim(n)
    assert_unchanged(before, cache, 1)
    assert not cache.can_trim(6) and cache.can_trim(5)


@pytest.mark.parametrize("make", [nn.DynamicKVCache, lambda: nn.StaticKVCache(64, 1), lambda: nn.SlidingWindowKVCache(6, 2),
                                  lambda: nn.QuantizedKVCache(8, 4, 3), lambda: nn.QuantizedKVCache(8, 4, 0),
                                  nn.EncoderDecoderCache])
def test_can_trim_after_an_update_answers_what_trim_then_does(make):
    """``can_trim(n, appended=a)`` before an update of ``a`` tokens says exactly whether
    ``trim(n)`` succeeds after it (what speculative decoding needs to know before it drafts)."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        cache = make()
        for _ in range(int(rng.integers(0, 4))):
            t = int(rng.integers(1, 5))
            cache.update(lucid.randn(1, 1, t, 4), lucid.randn(1, 1, t, 4), 0)
        appended = int(rng.integers(1, 6))
        n = int(rng.integers(1, appended + 3))
        promised = cache.can_trim(n, appended=appended)
        cache.update(lucid.randn(1, 1, appended, 4), lucid.randn(1, 1, appended, 4), 0)
        assert cache.can_trim(n) == promised
