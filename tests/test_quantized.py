"""QuantizedLayer / QuantizedKVCache against a full-precision history, on every backend."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn

from .helpers import assert_unchanged, batch_op, kv, on_backend, snapshot
from .reference import ReferenceHistory

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def error_bound(want, bits, group_size, dtype_name):
    """Per element: scale / 2 of its group, plus a few roundings of the stored dtype."""
    lead, dim = want.shape[:-1], want.shape[-1]
    groups = want.astype(np.float64).reshape(lead + (dim // group_size, group_size))
    low, high = groups.min(axis=-1, keepdims=True), groups.max(axis=-1, keepdims=True)
    scale = (high - low) / (2**bits - 1)
    rounding = 4 * EPS[dtype_name] * np.maximum(np.abs(low), np.abs(high))
    return np.broadcast_to(scale / 2 + rounding, groups.shape).reshape(want.shape)


def assert_close_to_history(got, model, bits, group_size, residual_length, dtype_name):
    n = model.length
    exact = min(n, residual_length)
    for out, want in ((got[0].numpy(), model.keys), (got[1].numpy(), model.values)):
        assert out.shape == want.shape
        np.testing.assert_array_equal(out[..., n - exact:, :], want[..., n - exact:, :])  # full precision
        diff = np.abs(out.astype(np.float64) - want.astype(np.float64))
        assert (diff <= error_bound(want, bits, group_size, dtype_name)).all(), float(diff.max())


@SETTINGS
@given(data=st.data())
def test_random_operations_match_reference(backend_name, data):
    bits = data.draw(st.sampled_from([4, 8]))
    group_size = data.draw(st.sampled_from([2, 4, 8]))
    residual_length = data.draw(st.integers(0, 5))
    dtype = data.draw(st.sampled_from([lucid.Float32, lucid.Float16, lucid.BFloat16]))
    if lucid.get_backend().dtype(dtype.xp_name) is None:
        dtype = lucid.Float32
    cache, model = nn.QuantizedKVCache(bits, group_size, residual_length), ReferenceHistory()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["append", "append", "append", "select", "repeat", "crop", "trim", "reset"]))
        batch = cache.batch_size() or data.draw(st.integers(1, 3))
        if op == "append":
            count = data.draw(st.integers(1, 2 * residual_length + 3))
            k = on_backend((rng.standard_normal((batch, 2, count, 8)) * 3).astype(np.float32)).astype(dtype)
            v = on_backend(rng.standard_normal((batch, 2, count, 8)).astype(np.float32)).astype(dtype)
            position = data.draw(st.sampled_from([None, list(range(model.length, model.length + count))]))
            returned = cache.update(k, v, 0, cache_position=position)
            model.append(k.numpy(), v.numpy())
            assert_close_to_history(returned, model, bits, group_size, residual_length, dtype.xp_name)
            layer = cache.layers[0]
            assert layer.residual_length_held <= 2 * residual_length
        elif op in ("select", "repeat"):
            batch_op(data, op, cache, model, batch)
        elif op == "crop":
            m = data.draw(st.integers(0, 12))
            cache.crop(m)
            model.crop(m)
        elif op == "trim":
            # What is still in full precision drops exactly; positions already in codes do not.
            n = data.draw(st.integers(0, 2 * residual_length + 2))
            layer = cache.layers[0] if cache.layers and cache.layers[0].written else None
            if layer is None:
                fits = n == 0
            elif layer.quantized_length:  # the last residual_length positions must stay exact
                fits = n <= layer.residual_length_held - residual_length
            else:
                fits = n <= model.length
            assert cache.can_trim(n) == fits
            if fits:
                cache.trim(n)
                model.trim(n)
            else:
                before = snapshot(cache, 1)
                with pytest.raises(ValueError, match=f"trim\\(n={n}\\)"):
                    cache.trim(n)
                assert_unchanged(before, cache, 1)
        elif op == "reset":
            cache.reset()
            model = ReferenceHistory()
        assert cache.get_seq_length(0) == model.length
        if model.length:
            assert_close_to_history(cache.get(0), model, bits, group_size, residual_length, dtype.xp_name)


def test_memory_at_4096_float16_tokens_is_under_0_32x_of_the_dynamic_cache():
    quantized, dynamic = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128), nn.DynamicKVCache()
    lucid.manual_seed(0)
    k = lucid.randn(1, 8, 1, 128).astype(lucid.Float16)
    for t in range(4096):  # token by token, as decoding writes them
        dynamic.update(k, k, 0, cache_position=[t])
    block = lucid.randn(1, 8, 128, 128).astype(lucid.Float16)
    for _ in range(4096 // 128):  # blocks of residual_length: the same chunks as token by token
        quantized.update(block, block, 0)
    ratio = quantized.nbytes() / dynamic.nbytes()
    assert ratio <= 0.32, ratio
    prompt = lucid.randn(1, 8, 4096, 128).astype(lucid.Float16)
    prefilled, dense = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128), nn.DynamicKVCache()
    prefilled.update(prompt, prompt, 0)
    dense.update(prompt, prompt, 0)
    assert prefilled.nbytes() <= 0.32 * dense.nbytes()


def test_update_returns_new_arrays_not_views():
    cache = nn.QuantizedKVCache(bits=8, group_size=4, residual_length=4)
    k, v = kv(t=3)
    out_k, _ = cache.update(k, v, 0)
    np.testing.assert_array_equal(out_k.numpy(), k.numpy())
    assert not np.shares_memory(out_k.numpy(), cache.layers[0].residual["key"])


@pytest.mark.parametrize("make, error, text", [
    (lambda: nn.QuantizedKVCache(bits=3), ValueError, "bits must be 4 or 8"),
    (lambda: nn.QuantizedKVCache(bits=4.0), TypeError, "bits must be an int"),
    (lambda: nn.QuantizedKVCache(group_size=0), ValueError, "group_size"),
    (lambda: nn.QuantizedKVCache(residual_length=-1), ValueError, "residual_length"),
])
def test_constructor_arguments(make, error, text):
    with pytest.raises(error, match=text):
        make()


def test_bad_updates_change_nothing(backend_name):
    cache = nn.QuantizedKVCache(bits=4, group_size=4, residual_length=2)
    with pytest.raises(ValueError, match="group_size=4 must divide the key head dimension, got 6"):
        cache.update(*kv(d=6), 0)
    assert cache.get(0) is None and cache.nbytes() == 0
    cache.update(*kv(t=7), 0)
    before = snapshot(cache, 1)
    for call, error in [
        (lambda: cache.update(*kv(), 0, cache_position=3), ValueError),
        (lambda: cache.update(*kv(), 0, cache_position=[7.0]), TypeError),
        (lambda: cache.update(*kv(d=8), 0), ValueError),
        (lambda: cache.batch_repeat_interleave(0), ValueError),
    ]:
        with pytest.raises(error):
            call()
        assert_unchanged(before, cache, 1)
