"""QuantizedLayer / QuantizedKVCache against a full-precision history, on every backend."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

from .helpers import assert_unchanged, batch_op, kv, on_backend, snapshot
from .reference import ReferenceHistory

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def rounding(low, high, dtype_name):
    return 4 * EPS[dtype_name] * np.maximum(np.abs(low), np.abs(high))


def value_bound(want, bits, group_size, dtype_name):
    """Values, per position over groups of the head dimension: scale / 2 of the group, plus a
    few roundings of the stored dtype."""
    lead, dim = want.shape[:-1], want.shape[-1]
    groups = want.astype(np.float64).reshape(lead + (dim // group_size, group_size))
    low, high = groups.min(axis=-1, keepdims=True), groups.max(axis=-1, keepdims=True)
    bound = (high - low) / (2**bits - 1) / 2 + rounding(low, high, dtype_name)
    return np.broadcast_to(bound, groups.shape).reshape(want.shape)


def key_bound(want, bits, group_size, dtype_name, peak=None, first=0):
    """Keys, per channel over groups of ``group_size`` positions from ``first`` (after the
    sinks): scale / 2 of the group plus the dtype's roundings. After a crop into the codes the
    groups' cropped positions are gone from the reference, so the bound comes from ``peak`` (the
    largest magnitude written since the reset): no group spans more than ``2 * peak``."""
    if peak is not None:
        return np.full(want.shape, 2 * peak / (2**bits - 1) / 2 + rounding(peak, peak, dtype_name))
    bound = np.zeros(want.shape)
    wide = want.astype(np.float64)
    for start in range(first, want.shape[-2], group_size):
        group = wide[..., start:start + group_size, :]
        low, high = group.min(axis=-2, keepdims=True), group.max(axis=-2, keepdims=True)
        bound[..., start:start + group_size, :] = (high - low) / (2**bits - 1) / 2 + rounding(low, high, dtype_name)
    return bound


def assert_close_to_history(got, model, bits, group_size, residual_length, dtype_name, peak=None, sinks=0):
    """``got`` within the scheme's bounds of the reference; the last ``residual_length`` and the
    first ``sinks`` positions exact."""
    n = model.length
    exact = min(n, residual_length)
    for out, want, bound in ((got[0].numpy(), model.keys, key_bound(model.keys, bits, group_size, dtype_name, peak, sinks)),
                             (got[1].numpy(), model.values, value_bound(model.values, bits, group_size, dtype_name))):
        assert out.shape == want.shape
        np.testing.assert_array_equal(out[..., n - exact:, :], want[..., n - exact:, :])  # full precision
        np.testing.assert_array_equal(out[..., :sinks, :], want[..., :sinks, :])
        diff = np.abs(out.astype(np.float64) - want.astype(np.float64))
        assert (diff <= bound).all(), float(diff.max())


@SETTINGS
@given(data=st.data())
def test_random_operations_match_reference(backend_name, data):
    bits = data.draw(st.sampled_from([4, 8]))
    group_size = data.draw(st.sampled_from([2, 4, 8]))
    residual_length = data.draw(st.integers(0, 5))
    sink_tokens = data.draw(st.sampled_from([0, 0, 1, 3]))
    dtype = data.draw(st.sampled_from([lucid.Float32, lucid.Float16, lucid.BFloat16]))
    if lucid.get_backend().dtype(dtype.xp_name) is None:
        dtype = lucid.Float32
    cache, model = nn.QuantizedKVCache(bits, group_size, residual_length, sink_tokens), ReferenceHistory()

    def sinks():  # the exact first positions, which a crop may have cut into
        layer = cache.layers[0] if cache.layers and cache.layers[0].written else None
        if layer is not None and not cut:
            assert layer.sinks_held == min(sink_tokens, model.length)
        return layer.sinks_held if layer is not None else 0

    cut = False  # whether a crop dropped positions since the reset
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    peak, cropped = 0.0, False  # the largest key magnitude since the reset; whether a crop cut into the codes
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["append", "append", "append", "select", "repeat", "crop", "trim", "reset"]))
        batch = cache.batch_size() or data.draw(st.integers(1, 3))
        if op == "append":
            count = data.draw(st.integers(1, residual_length + 2 * group_size + 1))
            k = on_backend((rng.standard_normal((batch, 2, count, 8)) * 3).astype(np.float32)).astype(dtype)
            v = on_backend(rng.standard_normal((batch, 2, count, 8)).astype(np.float32)).astype(dtype)
            peak = max(peak, float(np.abs(k.numpy().astype(np.float64)).max()))
            position = data.draw(st.sampled_from([None, list(range(model.length, model.length + count))]))
            returned = cache.update(k, v, 0, cache_position=position)
            model.append(k.numpy(), v.numpy())
            assert_close_to_history(returned, model, bits, group_size, residual_length, dtype.xp_name,
                                    peak if cropped else None, sinks())
            layer = cache.layers[0]
            after_sinks = model.length - layer.sinks_held
            assert residual_length <= layer.residual_length_held + (after_sinks < residual_length) * residual_length
            assert layer.residual_length_held < residual_length + group_size
            assert layer.quantized_length == after_sinks - layer.residual_length_held
        elif op in ("select", "repeat"):
            batch_op(data, op, cache, model, batch)
        elif op == "crop":
            m = data.draw(st.integers(0, 12))
            layer = cache.layers[0] if cache.layers and cache.layers[0].written else None
            cropped = cropped or (layer is not None and layer.quantized_length > 0 and m < model.length)
            cut = cut or m < model.length
            cache.crop(m)
            model.crop(m)
        elif op == "trim":
            # What is still in full precision drops exactly; positions already in codes do not.
            n = data.draw(st.integers(0, residual_length + group_size + 2))
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
            model, peak, cropped, cut = ReferenceHistory(), 0.0, False, False
        if cache.layers and cache.layers[0].written and not cache.layers[0].quantized_length:
            cropped = False  # no codes left: the next ones start whole groups from the first position
        assert cache.get_seq_length(0) == model.length
        if model.length:
            assert_close_to_history(cache.get(0), model, bits, group_size, residual_length, dtype.xp_name,
                                    peak if cropped else None, sinks())


@SETTINGS
@given(data=st.data())
def test_snapshots_never_change_and_attention_reads_the_codes_exactly(backend_name, data):
    """What ``update`` returned reads the same after later appends, trims, crops and batch
    edits; attention over it (from the codes) equals attention over its full-precision arrays."""
    bits, group_size = data.draw(st.sampled_from([4, 8])), data.draw(st.sampled_from([2, 4, 8]))
    cache = nn.QuantizedKVCache(bits, group_size, data.draw(st.integers(0, 5)), data.draw(st.sampled_from([0, 2])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    kept = []
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["append", "append", "trim", "crop", "select"]))
        if op == "append" or not cache.get_seq_length(0):
            count = data.draw(st.integers(1, 12))
            batch = cache.batch_size() or 2
            k, v = (on_backend(rng.standard_normal((batch, 2, count, 8)).astype(np.float32)) for _ in range(2))
            returned = cache.update(k, v, 0)
            if data.draw(st.booleans()):  # read it now, or only after the later calls
                kept.append((returned, [t.numpy().copy() for t in returned]))
            else:
                kept.append((returned, [t.numpy().copy() for t in cache.get(0)]))
        elif op == "trim" and cache.can_trim(1):
            cache.trim(1)
        elif op == "crop":
            cache.crop(data.draw(st.integers(0, cache.get_seq_length(0))))
        elif op == "select":
            cache.reorder_cache(data.draw(st.lists(st.integers(0, cache.batch_size() - 1), min_size=1, max_size=3)))
    for (k, v), (want_k, want_v) in kept:
        np.testing.assert_array_equal(k.numpy(), want_k)
        np.testing.assert_array_equal(v.numpy(), want_v)
        q = on_backend(rng.standard_normal((k.shape[0], 4, data.draw(st.integers(1, 3)), 8)).astype(np.float32))
        causal = data.draw(st.booleans())
        got = F.scaled_dot_product_attention(q, k, v, is_causal=causal).numpy()
        want = F.scaled_dot_product_attention(q, on_backend(want_k), on_backend(want_v), is_causal=causal).numpy()
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_a_decode_step_never_builds_the_history_in_full_precision():
    """Attention of one query over 16,384 quantized positions allocates a few blocks, not the
    64 MiB that dequantized keys and values of that history take."""
    cache = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128)
    lucid.manual_seed(0)
    history = lucid.randn(1, 8, 16384, 64)
    k, v = cache.update(history, history, 0)
    q = lucid.randn(1, 8, 1, 64)
    tracemalloc.start()
    try:
        out = F.scaled_dot_product_attention(q, k, v)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2**20, peak
    want = F.scaled_dot_product_attention(q, k.numpy(), v.numpy())
    np.testing.assert_allclose(out.numpy(), want.numpy(), atol=2e-5)


def test_attention_over_a_layer_cropped_to_nothing_is_zero(backend_name):
    cache = nn.QuantizedKVCache(bits=8, group_size=4, residual_length=2)
    cache.update(*kv(t=9), 0)
    cache.crop(0)
    k, v = cache.get(0)
    q = on_backend(np.ones((2, 3, 1, 4), np.float32))
    for keys, values in ((k, v), (on_backend(k.numpy()), on_backend(v.numpy()))):  # from codes, and dense
        out = F.scaled_dot_product_attention(q, keys, values).numpy()
        assert out.shape == (2, 3, 1, 4) and not out.any()


def test_keys_with_an_outlier_channel_keep_the_quiet_channels_fine():
    """Per-channel key groups: a channel 100 times wider than the others costs those others
    nothing (per-token groups would give every channel the wide one's step)."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((1, 1, 256, 64)).astype(np.float32)
    keys[..., 7] *= 100
    cache = nn.QuantizedKVCache(bits=4, group_size=64, residual_length=0)
    got = cache.update(keys, keys, 0)[0].numpy()
    quiet, wide = np.delete(keys, 7, axis=-1), keys[..., 7]
    error = np.delete(np.abs(got - keys), 7, axis=-1).max()
    assert error <= (quiet.max() - quiet.min()) / 15 / 2 * 1.001 < (wide.max() - wide.min()) / 15 / 2 / 50


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
    with pytest.raises(ValueError, match="group_size=4 must divide the value head dimension .*got 6"):
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
