"""The guarantees of CONTRACT.md, on every backend: shapes, positions, views, errors that lose nothing."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn

CACHES = {
    "dynamic": nn.DynamicKVCache,
    "static": lambda: nn.StaticKVCache(max_cache_len=16, num_layers=2),
}


@pytest.fixture(params=sorted(CACHES))
def cache(request, backend_name):
    return CACHES[request.param]()


def kv(b=2, h=3, t=1, d=4, dv=None, dtype=lucid.Float32):
    return lucid.randn(b, h, t, d).astype(dtype), lucid.randn(b, h, t, dv or d).astype(dtype)


def state(cache):
    """Everything observable about a cache, as host arrays."""
    out = []
    for layer in range(2):
        got = cache.get(layer)
        out.append(None if got is None else (got[0].numpy().copy(), got[1].numpy().copy()))
    return out


def assert_unchanged(before, cache):
    after = state(cache)
    for a, b in zip(before, after):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_update_returns_what_get_returns_and_views_storage(cache):
    k, v = kv(t=3)
    k_out, v_out = cache.update(k, v, 0)
    k_get, v_get = cache.get(0)
    np.testing.assert_array_equal(k_out.numpy(), k_get.numpy())
    np.testing.assert_array_equal(k_out.numpy(), k.numpy())
    np.testing.assert_array_equal(v_out.numpy(), v.numpy())
    if lucid.get_backend().name == "numpy":  # a view: shares memory with the cache's buffer
        assert np.shares_memory(k_get.numpy(), cache.layers[0].keys)


def test_value_head_dim_may_differ(cache):
    k, v = kv(t=2, d=4, dv=6)
    k_out, v_out = cache.update(k, v, 0)
    assert k_out.shape == (2, 3, 2, 4) and v_out.shape == (2, 3, 2, 6)


def test_gaps_read_as_zero_and_length_is_max_position_plus_one(cache):
    k, v = kv(t=1)
    cache.update(k, v, 0, cache_position=5)
    assert cache.get_seq_length(0) == 6
    got = cache.get(0)[0].numpy()
    assert not got[:, :, :5, :].any()
    np.testing.assert_array_equal(got[:, :, 5:6, :], k.numpy())


def test_stale_data_never_reappears_after_crop_or_reset(cache):
    cache.update(*kv(t=6), 0)
    cache.crop(2)
    cache.update(*kv(t=1), 0, cache_position=4)  # slot 3 was crop's stale data
    assert not cache.get(0)[0].numpy()[:, :, 2:4, :].any()
    cache.reset()
    cache.update(*kv(t=1), 0, cache_position=3)
    assert not cache.get(0)[0].numpy()[:, :, :3, :].any()


def test_2d_positions_write_each_row_separately(cache):
    k, v = kv(b=2, t=2)
    cache.update(k, v, 0, cache_position=lucid.Tensor([[0, 2], [3, 1]], dtype=lucid.Int16))
    got = cache.get(0)[0].numpy()
    kn = k.numpy()
    assert cache.get_seq_length(0) == 4
    np.testing.assert_array_equal(got[0, :, [0, 2], :], kn[0, :, [0, 1], :])
    np.testing.assert_array_equal(got[1, :, [3, 1], :], kn[1, :, [0, 1], :])
    assert not got[0, :, [1, 3], :].any() and not got[1, :, [0, 2], :].any()


def test_python_positions_are_accepted(cache):
    cache.update(*kv(t=2), 0, cache_position=[4, 1])
    cache.update(*kv(t=1), 0, cache_position=7)
    assert cache.get_seq_length(0) == 8


def test_reading_unwritten_layers(cache):
    assert cache.get(1) is None and cache.get_seq_length(1) == 0
    cache.update(*kv(t=3), 0)
    cache.crop(0)
    assert cache.get_seq_length(0) == 0 and cache.get(0)[0].shape == (2, 3, 0, 4)
    cache.update(*kv(t=1), 0)  # a cropped-to-zero layer keeps accepting appends
    assert cache.get_seq_length(0) == 1


def test_batch_utilities(cache):
    k, v = kv(b=2, t=2)
    cache.update(k, v, 0)
    cache.update(k, v, 1)
    cache.batch_repeat_interleave(2)
    kn = k.numpy()
    np.testing.assert_array_equal(cache.get(1)[0].numpy(), kn[[0, 0, 1, 1]])
    cache.reorder_cache(lucid.Tensor([3, 0, 0], dtype=lucid.Int32))
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), kn[[1, 0, 0]])
    cache.update(*kv(b=3), 0)  # the new batch size applies to further updates
    with pytest.raises(ValueError, match="batch"):
        cache.update(*kv(b=2), 1)


def test_empty_cache_batch_operations_are_no_ops_but_check_arguments(cache):
    cache.batch_repeat_interleave(4)
    cache.reorder_cache([3, 1, 0, 2])
    cache.batch_select_indices(lucid.Tensor([0], dtype=lucid.Int8))
    assert cache.get(0) is None
    with pytest.raises(ValueError, match="repeats"):
        cache.batch_repeat_interleave(0)
    with pytest.raises(TypeError, match="beam_idx"):
        cache.reorder_cache([0.5])


def test_static_capacity(backend_name):
    cache = nn.StaticKVCache(max_cache_len=4, num_layers=1)
    assert cache.get_max_cache_shape() == 4
    cache.update(*kv(t=3), 0)
    buffer = cache.layers[0].keys
    cache.update(*kv(t=1), 0)
    assert cache.layers[0].keys is buffer  # no reallocation on update
    with pytest.raises(ValueError, match="max_cache_len"):
        cache.update(*kv(t=1), 0)
    with pytest.raises(ValueError, match="max_cache_len"):
        cache.update(*kv(t=1), 0, cache_position=4)
    cache.crop(2)
    assert cache.layers[0].capacity == 4 and cache.get_max_cache_shape() == 4
    with pytest.raises(ValueError, match="num_layers"):
        cache.get(1)


def test_static_crop_moves_overlapping_range(backend_name):
    cache = nn.StaticKVCache(max_cache_len=16, num_layers=1)
    k = lucid.Tensor(np.arange(10, dtype=np.float32).reshape(1, 1, 10, 1))
    cache.update(k, k, 0)
    cache.crop(7)  # source [3, 10) overlaps destination [0, 7)
    assert cache.get(0)[0].numpy().ravel().tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_dynamic_growth_is_geometric_and_crop_returns_memory(backend_name):
    cache = nn.DynamicKVCache()
    reallocations, last = 0, None
    for _ in range(1000):
        cache.update(*kv(b=1, h=1, d=2), 0)
        if cache.layers[0].keys is not last:
            reallocations, last = reallocations + 1, cache.layers[0].keys
    assert reallocations <= 11  # log2(1000) + 1: amortized O(1) per append
    assert cache.layers[0].capacity <= 2 * 1000
    cache.crop(10)
    assert cache.layers[0].capacity < 2 * 10 + 1


def test_dynamic_accepts_any_layer_and_static_checks_bounds(backend_name):
    cache = nn.DynamicKVCache()
    cache.update(*kv(), 7)
    assert cache.get(3) is None and cache.get_seq_length(7) == 1
    assert cache.get_max_cache_shape() is None


def test_numpy_arrays_are_accepted_and_tensors_come_back(backend_name):
    if backend_name != "numpy":
        pytest.skip("plain NumPy arrays live on the NumPy backend")
    cache = nn.DynamicKVCache()
    k_out, _ = cache.update(np.ones((1, 2, 1, 4), np.float32), np.ones((1, 2, 1, 4), np.float32), 0)
    assert isinstance(k_out, lucid.Tensor)


def test_kvcache_itself_is_abstract():
    with pytest.raises(TypeError, match="DynamicKVCache"):
        nn.KVCache()


# -- every bad input: the error type, and the cache is exactly as it was ------------

def _bad_calls():
    good_k, good_v = kv(t=1)
    return {
        "empty update": (ValueError, lambda c: c.update(good_k[:, :, :0, :], good_v[:, :, :0, :], 0)),
        "rank 2": (ValueError, lambda c: c.update(good_k[0, 0, ...], good_v[0, 0, ...], 0)),
        "key/value mismatch": (ValueError, lambda c: c.update(*kv(t=1, h=2)[:1], good_v, 0)),
        "other dtype": (ValueError, lambda c: c.update(*kv(dtype=lucid.Float64), 0)),
        "other heads": (ValueError, lambda c: c.update(*kv(h=5), 0)),
        "other head dim": (ValueError, lambda c: c.update(*kv(d=8), 0)),
        "other batch": (ValueError, lambda c: c.update(*kv(b=3), 0)),
        "other batch, new layer": (ValueError, lambda c: c.update(*kv(b=3), 1)),
        "not an array": (TypeError, lambda c: c.update([[1.0]], good_v, 0)),
        "float position": (TypeError, lambda c: c.update(good_k, good_v, 0, cache_position=lucid.Tensor(1.0))),
        "bool position": (TypeError, lambda c: c.update(good_k, good_v, 0, cache_position=True)),
        "0-D position, T=2": (ValueError, lambda c: c.update(*kv(t=2), 0, cache_position=3)),
        "1-D wrong length": (ValueError, lambda c: c.update(good_k, good_v, 0, cache_position=[1, 2])),
        "2-D wrong batch": (ValueError, lambda c: c.update(good_k, good_v, 0, cache_position=[[1], [2], [3]])),
        "3-D position": (ValueError, lambda c: c.update(good_k, good_v, 0, cache_position=[[[1]], [[2]]])),
        "negative position": (ValueError, lambda c: c.update(good_k, good_v, 0, cache_position=-1)),
        "duplicate position": (ValueError, lambda c: c.update(*kv(t=2), 0, cache_position=[[1, 1], [0, 2]])),
        "position past static capacity": (ValueError, lambda c: c.update(good_k, good_v, 1, cache_position=16)),
        "negative layer": (ValueError, lambda c: c.update(good_k, good_v, -1)),
        "bool layer": (ValueError, lambda c: c.get(True)),
        "float layer": (ValueError, lambda c: c.get_seq_length(0.0)),
        "index out of range": (ValueError, lambda c: c.batch_select_indices([0, 2])),
        "negative index": (ValueError, lambda c: c.reorder_cache([-1, 0])),
        "2-D indices": (ValueError, lambda c: c.batch_select_indices([[0, 1]])),
        "float indices": (TypeError, lambda c: c.batch_select_indices(lucid.Tensor([0.0]))),
        "repeats 0": (ValueError, lambda c: c.batch_repeat_interleave(0)),
        "repeats float": (ValueError, lambda c: c.batch_repeat_interleave(2.0)),
        "crop negative": (ValueError, lambda c: c.crop(-1)),
        "crop bool": (ValueError, lambda c: c.crop(False)),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_input_raises_and_changes_nothing(cache, case):
    cache.update(*kv(t=3), 0)
    before = state(cache)
    error, call = _bad_calls()[case]
    if case == "position past static capacity" and not isinstance(cache, nn.StaticKVCache):
        call(cache)  # the dynamic cache grows instead
        return
    with pytest.raises(error) as info:
        call(cache)
    assert len(str(info.value)) > 20  # says what was expected and what arrived
    assert_unchanged(before, cache)


def test_static_reset_keeps_buffers_for_a_matching_first_write(backend_name):
    cache = nn.StaticKVCache(max_cache_len=8, num_layers=1)
    cache.update(*kv(t=5), 0)
    buffer = cache.layers[0].keys
    cache.reset()
    assert cache.get(0) is None and cache.get_seq_length(0) == 0
    k, v = kv(t=1)
    cache.update(k, v, 0, cache_position=2)
    assert cache.layers[0].keys is buffer
    got = cache.get(0)[0].numpy()
    assert not got[:, :, :2, :].any()  # the old tokens do not come back
    np.testing.assert_array_equal(got[:, :, 2:, :], k.numpy())
    cache.reset()
    cache.update(*kv(t=1, d=8), 0)  # other shapes: a fresh buffer
    assert cache.layers[0].keys is not buffer
