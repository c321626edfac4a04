"""SlidingWindowLayer / SlidingWindowKVCache against a full-history reference, on every backend."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn
from lucid.nn.cache.window_tensor import WindowTensor

from .helpers import assert_unchanged, batch_op, kv, on_backend, snapshot
from .reference import ReferenceHistory, window_positions

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tokens(b, t, seed, dtype=np.float32):
    k = (np.arange(b * 2 * t * 4, dtype=np.float32) + seed).reshape(b, 2, t, 4).astype(dtype)
    return k, -k


def assert_window(cache, model, window, sinks, new_tokens=None, returned=None):
    n = model.length
    assert cache.get_seq_length(0) == n
    if model.keys is None:  # never written (or reset)
        assert cache.get(0) is None
        return
    for count, got in ((1, cache.get(0)), (new_tokens, returned)):
        if got is None:
            continue
        positions = window_positions(n, window, sinks, count)
        assert cache.key_positions(0, count).tolist() == positions
        np.testing.assert_array_equal(got[0].numpy(), model.keys[..., positions, :])
        np.testing.assert_array_equal(got[1].numpy(), model.values[..., positions, :])


@SETTINGS
@given(data=st.data())
def test_random_operations_match_reference(backend_name, data):
    window = data.draw(st.integers(1, 6))
    sinks = data.draw(st.integers(0, 3))
    cache, model = nn.SlidingWindowKVCache(window, sink_tokens=sinks), ReferenceHistory()
    seed = 0
    for _ in range(data.draw(st.integers(1, 14))):
        op = data.draw(st.sampled_from(["step", "step", "step", "prefill", "bad position", "select", "repeat",
                                        "crop", "trim", "reset"]))
        batch = cache.batch_size() or data.draw(st.integers(1, 3))
        before = snapshot(cache, 1)
        if op in ("step", "prefill"):
            count = 1 if op == "step" else data.draw(st.integers(1, window + sinks + 3))
            k, v = tokens(batch, count, seed)
            seed += 1000
            n = model.length
            form = data.draw(st.sampled_from(["none", "list", "range", "tensor"]))
            position = {"none": None, "list": list(range(n, n + count)), "range": range(n, n + count),
                        "tensor": lucid.Tensor(list(range(n, n + count)), dtype=lucid.Int32)}[form]
            returned = cache.update(on_backend(k), on_backend(v), 0, cache_position=position)
            model.append(k, v)
            assert_window(cache, model, window, sinks, count, returned)
            continue
        if op == "bad position":
            k, v = tokens(batch, 1, seed)
            with pytest.raises(ValueError, match="only appends"):
                cache.update(on_backend(k), on_backend(v), 0, cache_position=[model.length + 1])
            assert_unchanged(before, cache, 1)
        elif op in ("select", "repeat"):
            batch_op(data, op, cache, model, batch)
        elif op == "crop":
            m = data.draw(st.integers(0, 12))
            if m >= model.length:
                cache.crop(m)
            else:
                with pytest.raises(ValueError, match="cannot come back"):
                    cache.crop(m)
                assert_unchanged(before, cache, 1)
        elif op == "trim":
            # Possible while no position has left the window: a trim would need them back.
            n = data.draw(st.integers(0, 4))
            if n == 0 or (model.keys is not None and n <= model.length <= window + sinks):
                assert cache.can_trim(n)
                cache.trim(n)
                model.trim(n)
            else:
                assert not cache.can_trim(n)
                with pytest.raises(ValueError, match=f"trim\\(n={n}\\)"):
                    cache.trim(n)
                assert_unchanged(before, cache, 1)
        elif op == "reset":
            cache.reset()
            model = ReferenceHistory()
        assert_window(cache, model, window, sinks)


@pytest.mark.parametrize("window", [64, 65536])
def test_one_token_steps_copy_nothing_and_hold_the_window_and_the_sinks(backend_name, window):
    cache = nn.SlidingWindowKVCache(window)
    k, v = kv(b=1, t=70)
    cache.update(k, v, 0)
    for t in range(70, 75):
        k_out, v_out = cache.update(*kv(b=1), 0, cache_position=[t])
    layer = cache.layers[0]
    lies = k_out.unordered if isinstance(k_out, WindowTensor) else k_out.array
    if backend_name == "numpy":  # the ring as it lies: no copy per step
        assert np.shares_memory(lies, layer.ring_keys)
    assert isinstance(k_out, WindowTensor) == (window < 75) and k_out.shape[-2] == min(window, 75)
    assert layer.nbytes() == window * 2 * 3 * 4 * 4  # window positions, batch 1, 3 heads, D=4
    sinks = nn.SlidingWindowLayer(8, sink_tokens=3)
    sinks.update(*kv(b=1, t=20))
    assert sinks.nbytes() == (8 + 3) * 2 * 3 * 4 * 4


@pytest.mark.parametrize("window, sinks", [(1, 0), (5, 0), (8, 0), (1, 1), (1, 4), (2, 3), (5, 1), (5, 4), (8, 2)])
def test_steps_read_in_order_at_any_length(window, sinks):
    """The ring wraps around many times; every one-token step returns the buffer as it lies (a
    view, or a WindowTensor that joins nothing until read) holding exactly the sinks and the
    window, and reads back the sinks, then the window, in order."""
    layer = nn.SlidingWindowLayer(window, sink_tokens=sinks)
    history = np.arange(400, dtype=np.float32).reshape(1, 1, 100, 4)
    t = 3
    layer.update(lucid.Tensor(history[..., :t, :]), lucid.Tensor(-history[..., :t, :]))
    while t < 99:
        chunk = 1 if t % 17 else 2  # now and then a two-token update (the general path) in between
        k_out, v_out = layer.update(lucid.Tensor(history[..., t:t + chunk, :]),
                                    lucid.Tensor(-history[..., t:t + chunk, :]), cache_position=list(range(t, t + chunk)))
        positions = layer.key_positions(chunk).tolist()
        assert positions == list(range(min(sinks, t + chunk))) + list(range(max(sinks, t + chunk - window - chunk + 1),
                                                                           t + chunk))
        if chunk == 1 and t >= sinks:
            lies = k_out.unordered if isinstance(k_out, WindowTensor) else k_out.array
            assert not isinstance(k_out, WindowTensor) or not k_out.built
            assert np.shares_memory(lies, layer.ring_keys)
            np.testing.assert_array_equal(np.sort(lies[..., 0], axis=-1), history[..., positions, 0])
        np.testing.assert_array_equal(k_out.numpy(), history[..., positions, :])
        np.testing.assert_array_equal(v_out.numpy(), -history[..., positions, :])
        np.testing.assert_array_equal(layer.get()[0].numpy(), history[..., layer.key_positions().tolist(), :])
        t += chunk
    assert layer.nbytes() == (window + sinks) * 2 * 4 * 4


@pytest.mark.parametrize("dtype", [lucid.Float16, lucid.BFloat16, lucid.Float32])
def test_every_float_dtype(backend_name, dtype):
    if lucid.get_backend().dtype(dtype.xp_name) is None:
        pytest.skip(f"{backend_name} has no {dtype}")
    cache = nn.SlidingWindowKVCache(3, sink_tokens=1)
    k, v = kv(t=6, dtype=dtype)
    cache.update(k, v, 0)
    got = cache.get(0)
    assert got[0].dtype == dtype
    np.testing.assert_array_equal(got[0].numpy(), k.numpy()[..., [0, 3, 4, 5], :])


@pytest.mark.parametrize("make, error, text", [
    (lambda: nn.SlidingWindowKVCache(0), ValueError, "window must be an int >= 1"),
    (lambda: nn.SlidingWindowKVCache(4, sink_tokens=-1), ValueError, "sink_tokens"),
    (lambda: nn.SlidingWindowKVCache(4.0), TypeError, "window must be an int"),
    (lambda: nn.SlidingWindowLayer(True), TypeError, "window"),
])
def test_constructor_arguments(make, error, text):
    with pytest.raises(error, match=text):
        make()


def test_bad_updates_change_nothing(backend_name):
    cache = nn.SlidingWindowKVCache(4, sink_tokens=1)
    cache.update(*kv(t=6), 0)
    before = snapshot(cache, 1)
    for call, error in [
        (lambda: cache.update(*kv(t=1), 0, cache_position=3), ValueError),
        (lambda: cache.update(*kv(t=1), 0, cache_position=[6.0]), TypeError),
        (lambda: cache.update(*kv(t=2), 0, cache_position=[7, 6]), ValueError),
        (lambda: cache.update(*kv(t=1, d=8), 0), ValueError),
        (lambda: cache.update(*kv(b=3), 0), ValueError),
        (lambda: cache.crop(5), ValueError),
    ]:
        with pytest.raises(error):
            call()
        assert_unchanged(before, cache, 1)


def test_writes_that_wrap_around_the_ring_read_back_in_order(backend_name):
    cache, model = nn.SlidingWindowKVCache(4), ReferenceHistory()
    for count in (3, 3, 2, 5, 1, 1):  # every write past the first wraps around the ring
        k, v = tokens(1, count, model.length * 10)
        returned = cache.update(on_backend(k), on_backend(v), 0)
        model.append(k, v)
        assert_window(cache, model, 4, 0, count, returned)


@pytest.mark.parametrize("window, sinks", [(5, 0), (5, 2), (64, 4)])
def test_attention_reads_the_ring_as_it_lies_only_when_every_key_is_visible(backend_name, window, sinks):
    """A decode step's query sees every key a sliding window holds: attention reads the buffer
    without joining it in order, and equals attention over the ordered keys. A mask that hides
    some key (or several causal queries) makes it read them in order. Once every ``window``
    steps the ring lies in order and the step returns plain views."""
    from lucid.nn.functional import attention_mask, scaled_dot_product_attention

    layer = nn.SlidingWindowLayer(window, sink_tokens=sinks)
    k, v = kv(b=2, h=2, t=3 * window + 1)
    layer.update(k, v)
    for step in range(window + 3):
        new_k, new_v = kv(b=2, h=2)
        keys, values = layer.update(new_k, new_v, cache_position=[layer.length])
        lazy = (layer.length - sinks) % window != 0
        assert isinstance(keys, WindowTensor) == isinstance(values, WindowTensor) == lazy
        query = lucid.randn(2, 4, 1, 4)
        positions = layer.key_positions()
        visible = attention_mask(lucid.Tensor([layer.length - 1]), positions, window=window, sink_tokens=sinks)
        got = scaled_dot_product_attention(query, keys, values, attn_mask=visible).numpy()
        assert not lazy or not (keys.built or values.built)
        ordered_k, ordered_v = (lucid.Tensor.wrap(t.array, t.backend) for t in (keys, values))
        want = scaled_dot_product_attention(query, ordered_k, ordered_v).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        hidden = attention_mask(lucid.Tensor([layer.length - 1]), positions, window=window - 1, sink_tokens=sinks)
        keys, values = layer.get()
        got = scaled_dot_product_attention(query, keys, values, attn_mask=hidden).numpy()
        assert not lazy or keys.built  # some key hidden: read in order, as the mask's columns are
        np.testing.assert_allclose(got, scaled_dot_product_attention(query, ordered_k, ordered_v, attn_mask=hidden).numpy(),
                                   rtol=1e-5, atol=1e-6)
