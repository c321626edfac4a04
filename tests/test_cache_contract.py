"""The guarantees of CONTRACT.md, on every backend: shapes, positions, views, errors that lose nothing."""
import re

import numpy as np
import pytest

import lucid
import lucid.nn as nn

from .helpers import CACHES, assert_unchanged, kv, on_backend, snapshot

@pytest.fixture(params=sorted(CACHES))
def cache(request, backend_name):
    return CACHES[request.param]()


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
    k = on_backend(np.arange(10, dtype=np.float32).reshape(1, 1, 10, 1))
    cache.update(k, k, 0)
    cache.crop(7)  # source [3, 10) overlaps destination [0, 7)
    assert cache.get(0)[0].numpy().ravel().tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_a_dynamic_reserve_is_allocated_once_and_grown_past_as_usual(backend_name):
    cache = nn.DynamicKVCache(reserve=300)
    cache.update(*kv(b=2, h=1, t=290, d=2), 0)
    layer = cache.layers[0]
    first = layer.keys
    for _ in range(10):
        cache.update(*kv(b=2, h=1, d=2), 0)
    assert layer.capacity == 300 and layer.keys is first and layer.nbytes() == 2 * 300 * 2 * 2 * 4
    cache.update(*kv(b=2, h=1, d=2), 0)  # the 301st position: past the reserve, growth by half
    assert layer.capacity == 451 and cache.get_seq_length(0) == 301
    cache.update(*kv(b=2, h=1, d=2), 1)  # a new layer reserves too
    assert cache.layers[1].capacity == 300
    assert cache.arguments() == {"reserve": 300} and nn.DynamicKVCache().arguments() == {}
    for bad, error in [(-1, ValueError), (2.5, TypeError)]:
        with pytest.raises(error, match="reserve"):
            nn.DynamicKVCache(reserve=bad)


def test_dynamic_growth_is_geometric_and_holds_at_most_1_5x_past_256(backend_name):
    cache = nn.DynamicKVCache()
    reallocations, last = 0, None
    for length in range(1, 3001):
        cache.update(*kv(b=1, h=1, d=2), 0)
        layer = cache.layers[0]
        if layer.keys is not last:
            reallocations, last = reallocations + 1, layer.keys
        if length > 256:
            assert layer.capacity <= 1.5 * length
    assert reallocations <= 10  # 256 * 1.5**9 > 3000: amortized O(1) per append
    cache.crop(10)
    assert cache.layers[0].capacity == 256
    assert cache.get_seq_length(0) == 10


def test_first_decode_step_after_a_prefill_does_not_copy_the_layer(backend_name):
    cache = nn.DynamicKVCache()
    cache.update(*kv(b=1, t=2048), 0)
    buffer = cache.layers[0].keys
    for _ in range(100):
        cache.update(*kv(b=1), 0, cache_position=[cache.get_seq_length(0)])
    assert cache.layers[0].keys is buffer


def test_dynamic_accepts_any_layer_and_static_checks_bounds(backend_name):
    cache = nn.DynamicKVCache()
    cache.update(*kv(), 7)
    assert cache.get(3) is None and cache.get_seq_length(7) == 1 and len(cache.layers) == 8
    assert cache.get_max_cache_shape() is None
    static = nn.StaticKVCache(max_cache_len=4, num_layers=2)
    static.update(*kv(), 1)
    assert static.get(0) is None and static.get_seq_length(1) == 1
    with pytest.raises(ValueError, match="num_layers=2"):
        static.update(*kv(), 2)
    with pytest.raises(ValueError, match="num_layers=2"):
        static.get_seq_length(2)


def test_numpy_arrays_are_accepted_and_tensors_come_back(backend_name):
    if backend_name != "numpy":
        pytest.skip("plain NumPy arrays live on the NumPy backend")
    cache = nn.DynamicKVCache()
    k_out, _ = cache.update(np.ones((1, 2, 1, 4), np.float32), np.ones((1, 2, 1, 4), np.float32), 0)
    assert isinstance(k_out, lucid.Tensor)


def test_kvcache_is_built_from_layers_or_a_prototype():
    grown = nn.KVCache(prototype=nn.SlidingWindowLayer(3))
    grown.update(*kv(t=5), 2)
    assert [type(layer) for layer in grown.layers] == [nn.SlidingWindowLayer] * 3
    assert grown.get(2)[0].shape[-2] == 3 and grown.get_seq_length(2) == 5 and grown.get(0) is None
    assert isinstance(nn.KVCache().prototype, nn.DynamicLayer)
    fixed = nn.KVCache([nn.DynamicLayer(), nn.StaticLayer(8)])
    with pytest.raises(ValueError, match="layer_idx must be < num_layers=2"):
        fixed.update(*kv(), 2)
    with pytest.raises(ValueError, match="not both"):
        nn.KVCache([nn.DynamicLayer()], prototype=nn.DynamicLayer())
    with pytest.raises(TypeError, match="prototype must be a cache layer"):
        nn.KVCache(prototype=nn.DynamicKVCache())


# -- every bad input: the error type, the argument named, and the cache exactly as it was ---

def _bad_calls():
    """case -> (error type, text the message must contain, call)."""
    good_k, good_v = kv(t=1)
    return {
        "empty update": (ValueError, "no tokens", lambda c: c.update(good_k[:, :, :0, :], good_v[:, :, :0, :], 0)),
        "rank 2": (ValueError, "at least 3 axes", lambda c: c.update(good_k[0, 0, ...], good_v[0, 0, ...], 0)),
        "key/value mismatch": (ValueError, "every axis but the last", lambda c: c.update(*kv(t=1, h=2)[:1], good_v, 0)),
        "key/value dtypes": (ValueError, "share a dtype", lambda c: c.update(good_k, good_v.astype(lucid.Float64), 0)),
        "other dtype": (ValueError, "holds Float32; the update is Float64", lambda c: c.update(*kv(dtype=lucid.Float64), 0)),
        "other heads": (ValueError, "expects key of shape", lambda c: c.update(*kv(h=5), 0)),
        "other head dim": (ValueError, "expects key of shape", lambda c: c.update(*kv(d=8), 0)),
        "other batch": (ValueError, "batches of 2 rows", lambda c: c.update(*kv(b=3), 0)),
        "other batch, new layer": (ValueError, "batches of 2 rows", lambda c: c.update(*kv(b=3), 1)),
        "key not an array": (TypeError, "key must be", lambda c: c.update([[1.0]], good_v, 0)),
        "value not an array": (TypeError, "value must be", lambda c: c.update(good_k, "v", 0)),
        "float position": (TypeError, "cache_position", lambda c: c.update(good_k, good_v, 0, cache_position=lucid.Tensor(1.0))),
        "float list position": (TypeError, "cache_position", lambda c: c.update(good_k, good_v, 0, cache_position=[3.0])),
        "bool position": (TypeError, "cache_position", lambda c: c.update(good_k, good_v, 0, cache_position=True)),
        "bool list position": (TypeError, "cache_position", lambda c: c.update(good_k, good_v, 0, cache_position=[True])),
        "0-D position, T=2": (ValueError, "0-D cache_position", lambda c: c.update(*kv(t=2), 0, cache_position=3)),
        "1-D wrong length": (ValueError, "cache_position has shape", lambda c: c.update(good_k, good_v, 0, cache_position=[1, 2])),
        "2-D wrong batch": (ValueError, "2-D cache_position", lambda c: c.update(good_k, good_v, 0, cache_position=[[1], [2], [3]])),
        "3-D position": (ValueError, "0, 1 or 2 dimensions", lambda c: c.update(good_k, good_v, 0, cache_position=[[[1]], [[2]]])),
        "negative position": (ValueError, "non-negative", lambda c: c.update(good_k, good_v, 0, cache_position=-1)),
        "duplicate position": (ValueError, "repeats a position", lambda c: c.update(*kv(t=2), 0, cache_position=[[1, 1], [0, 2]])),
        "absurd position": (ValueError, "cache_position up to 1099511627776", lambda c: c.update(good_k, good_v, 0, cache_position=2**40)),
        "negative layer": (ValueError, "layer_idx", lambda c: c.update(good_k, good_v, -1)),
        "absurd layer": (ValueError, "layer_idx", lambda c: c.update(good_k, good_v, 2**40)),
        "bool layer": (TypeError, "layer_idx", lambda c: c.get(True)),
        "float layer": (TypeError, "layer_idx", lambda c: c.get_seq_length(0.0)),
        "str layer": (TypeError, "layer_idx", lambda c: c.update(good_k, good_v, "0")),
        "index out of range": (ValueError, "indices must lie in [0, 2)", lambda c: c.batch_select_indices([0, 2])),
        "negative index": (ValueError, "beam_idx", lambda c: c.reorder_cache([-1, 0])),
        "2-D indices": (ValueError, "1-D", lambda c: c.batch_select_indices([[0, 1]])),
        "empty indices": (ValueError, "non-empty", lambda c: c.batch_select_indices([])),
        "float indices": (TypeError, "indices", lambda c: c.batch_select_indices(lucid.Tensor([0.0]))),
        "repeats 0": (ValueError, "repeats", lambda c: c.batch_repeat_interleave(0)),
        "repeats float": (TypeError, "repeats", lambda c: c.batch_repeat_interleave(2.0)),
        "absurd repeats": (ValueError, "repeats=4611686018427387904", lambda c: c.batch_repeat_interleave(2**62)),
        "crop negative": (ValueError, "max_length", lambda c: c.crop(-1)),
        "crop bool": (TypeError, "max_length", lambda c: c.crop(False)),
        "crop float": (TypeError, "max_length", lambda c: c.crop(1.0)),
        "unsupported dtype": (TypeError, "lucid has no dtype", lambda c: c.update(np.ones((2, 3, 1, 4), np.uint32), np.ones((2, 3, 1, 4), np.uint32), 1)),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_input_raises_and_changes_nothing(cache, backend_name, case):
    cache.update(*kv(t=3), 0)
    before = snapshot(cache)
    error, text, call = _bad_calls()[case]
    if case == "unsupported dtype" and backend_name != "numpy":
        pytest.skip("plain NumPy arrays live on the NumPy backend")
    if case == "absurd position" and isinstance(cache, nn.StaticKVCache):
        text = "max_cache_len is 16"
    with pytest.raises(error) as info:
        call(cache)
    assert text in str(info.value)
    assert_unchanged(before, cache)


def test_static_past_capacity_raises_and_changes_nothing(backend_name):
    cache = nn.StaticKVCache(max_cache_len=4, num_layers=1)
    cache.update(*kv(t=3), 0)
    before = snapshot(cache, layers=1)
    for call in (lambda: cache.update(*kv(t=2), 0), lambda: cache.update(*kv(), 0, cache_position=4)):
        with pytest.raises(ValueError, match="max_cache_len is 4"):
            call()
        assert_unchanged(before, cache, layers=1)


@pytest.mark.parametrize("make, text", [
    (lambda: nn.StaticKVCache(8, 2**62), "num_layers must be an int in [1, 65536]"),
    (lambda: nn.StaticKVCache(0, 2), "max_cache_len must be an int >= 1"),
    (lambda: nn.StaticKVCache(8.0, 2), "max_cache_len must be an int"),
])
def test_static_constructor_checks_its_arguments(make, text):
    with pytest.raises((TypeError, ValueError), match=re.escape(text)):
        make()


def test_absurd_static_capacity_is_a_clear_error_at_first_write(backend_name):
    cache = nn.StaticKVCache(2**62, 2)
    with pytest.raises(ValueError, match="max_cache_len=4611686018427387904"):
        cache.update(*kv(), 0)
    assert cache.get(0) is None and cache.nbytes() == 0
    rows = nn.StaticKVCache(8, 2, max_batch_size=2**62)
    with pytest.raises(ValueError, match="max_cache_len=8, max_batch_size=4611686018427387904: .* more than"):
        rows.update(*kv(), 0)
    assert rows.get(0) is None and rows.nbytes() == 0


def test_numpy_integer_scalars_are_accepted_wherever_ints_are(cache):
    cache.update(*kv(t=3), np.int64(0), cache_position=np.arange(3, dtype=np.int16))
    cache.update(*kv(), np.int32(0), cache_position=np.int64(3))
    cache.update(*kv(), 1, cache_position=[np.int8(2)])
    assert cache.get_seq_length(np.uint8(0)) == 4 and cache.get_seq_length(1) == 3
    cache.batch_repeat_interleave(np.int64(2))
    cache.batch_select_indices([np.int64(3), np.int32(0)])
    cache.crop(np.int16(2))
    assert cache.get(np.int64(0))[0].shape == (2, 3, 2, 4)


@pytest.mark.parametrize("dtype", [lucid.Float16, lucid.BFloat16, lucid.Float32])
def test_float16_bfloat16_float32_work_on_every_cache(cache, backend_name, dtype):
    if lucid.get_backend().dtype(dtype.xp_name) is None:
        pytest.skip(f"{backend_name} has no {dtype} (the array API standard has neither 16-bit float)")
    k, v = kv(t=3, dtype=dtype)
    cache.update(k, v, 0)
    step_k, step_v = kv(dtype=dtype)
    k_out, v_out = cache.update(step_k, step_v, 0, cache_position=[3])
    assert k_out.dtype == dtype and v_out.dtype == dtype
    np.testing.assert_array_equal(k_out.numpy()[:, :, :3], k.numpy())
    np.testing.assert_array_equal(v_out.numpy()[:, :, 3:], step_v.numpy())
    k_out_before_reorder = k_out.numpy().copy()  # what update returned is a view: it may change
    cache.reorder_cache([1, 0])
    np.testing.assert_array_equal(cache.get(0)[0].numpy()[0], k_out_before_reorder[1])


@pytest.mark.parametrize("dtype", ["uint32", "complex64", ">f4", "object"])
def test_dtypes_lucid_cannot_hand_back_are_a_type_error(dtype):
    cache = nn.DynamicKVCache()
    cache.update(*kv(), 0)
    before = snapshot(cache)
    arr = np.ones((2, 3, 1, 4), dtype=dtype)
    with pytest.raises(TypeError, match="lucid has no dtype"):
        cache.update(arr, arr, 1)
    assert_unchanged(before, cache)


def test_static_reset_keeps_buffers_for_a_matching_first_write(backend_name):
    cache = nn.StaticKVCache(max_cache_len=8, num_layers=1)
    cache.update(*kv(t=5), 0)
    buffer, held = cache.layers[0].keys, cache.nbytes()
    cache.reset()
    assert cache.get(0) is None and cache.get_seq_length(0) == 0
    assert cache.nbytes() == held  # the kept buffers are really held, and counted
    k, v = kv(t=1)
    cache.update(k, v, 0, cache_position=2)
    assert cache.layers[0].keys is buffer
    got = cache.get(0)[0].numpy()
    assert not got[:, :, :2, :].any()  # the old tokens do not come back
    np.testing.assert_array_equal(got[:, :, 2:, :], k.numpy())


def test_static_reset_releases_buffers_that_do_not_fit_the_next_batch(backend_name):
    cache = nn.StaticKVCache(max_cache_len=64, num_layers=2)
    for layer in range(2):
        cache.update(*kv(b=2, t=5), layer)
    one_batch = cache.nbytes()
    cache.reset()
    for layer in range(2):
        cache.update(*kv(b=4, t=1), layer)  # twice the rows: new buffers replace the kept ones
    assert cache.nbytes() == 2 * one_batch
    cache.reset()
    cache.update(*kv(b=4, d=8, t=1), 0)  # other head size on layer 0 only
    assert cache.nbytes() == 2 * one_batch + 2 * one_batch // 2


def test_static_max_batch_size_grows_and_shrinks_the_batch_in_place(backend_name):
    cache = nn.StaticKVCache(max_cache_len=8, num_layers=2, max_batch_size=4)
    k, v = kv(b=1, t=5)
    for layer in range(2):
        cache.update(k, v, layer)
    held = cache.nbytes()
    assert held == 4 * 8 * 3 * (4 + 4) * 4 * 2  # four rows allocated at the first write, two layers
    before = cache.layers[0].keys
    cache.batch_repeat_interleave(4)
    assert cache.batch_size() == 4 and cache.nbytes() == held
    if backend_name == "numpy":  # the same memory, not a new allocation of the same size
        assert np.shares_memory(cache.layers[0].keys, before)
    np.testing.assert_array_equal(cache.get(1)[0].numpy(), np.repeat(k.numpy(), 4, axis=0))
    step_k, step_v = kv(b=4, t=1)
    cache.update(step_k, step_v, 0, cache_position=[5])
    want = np.concatenate([np.repeat(k.numpy(), 4, axis=0), step_k.numpy()], axis=2)
    cache.reorder_cache([3, 1, 0, 2])
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), want[[3, 1, 0, 2]])
    cache.batch_select_indices([2, 2])
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), want[[0, 0]])
    assert cache.batch_size() == 2 and cache.nbytes() == held
    cache.reset()
    cache.update(*kv(b=3, t=1), 0)  # any batch up to max_batch_size reuses the kept rows
    assert cache.nbytes() == held
    if backend_name == "numpy":
        assert np.shares_memory(cache.layers[0].keys, before)


def test_static_batch_past_max_batch_size_is_a_clear_error_and_changes_nothing(backend_name):
    cache = nn.StaticKVCache(max_cache_len=8, num_layers=2, max_batch_size=4)
    with pytest.raises(ValueError, match="a batch of 5 rows does not fit max_batch_size=4"):
        cache.update(*kv(b=5), 0)
    assert cache.get(0) is None and cache.nbytes() == 0
    cache.update(*kv(b=2, t=3), 0)
    cache.update(*kv(b=2, t=2), 1)
    before = snapshot(cache)
    for call, argument in ((lambda: cache.batch_repeat_interleave(3), "repeats=3"),
                           (lambda: cache.batch_select_indices([0, 1, 1, 0, 0]), "indices of length 5"),
                           (lambda: cache.reorder_cache([0] * 6), "beam_idx of length 6")):
        with pytest.raises(ValueError, match=re.escape(argument) + ": a batch of .* rows does not fit max_batch_size=4"):
            call()
        assert_unchanged(before, cache)


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.0, TypeError), (-1, ValueError)])
def test_static_max_batch_size_is_checked(value, error):
    with pytest.raises(error, match="max_batch_size must be an int"):
        nn.StaticKVCache(8, 2, max_batch_size=value)
