"""Random operation sequences on the caches, checked against the reference model after every step."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn

from .reference import ReferenceCache

H, DK, DV = 2, 3, 2
NUM_LAYERS = 3
MAX_LEN = 8  # static capacity; positions go up to 10 so overflows get exercised
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make(kind):
    if kind == "dynamic":
        return nn.DynamicKVCache(), ReferenceCache()
    return nn.StaticKVCache(max_cache_len=MAX_LEN, num_layers=NUM_LAYERS), ReferenceCache(MAX_LEN)


def assert_same(cache, model):
    for layer in range(NUM_LAYERS):
        got = cache.get(layer)
        want = model.layers.get(layer)
        if want is None:
            assert got is None and cache.get_seq_length(layer) == 0
            continue
        assert cache.get_seq_length(layer) == want[0].shape[-2]
        np.testing.assert_array_equal(got[0].numpy(), want[0])
        np.testing.assert_array_equal(got[1].numpy(), want[1])


def snapshot(cache):
    return [None if cache.get(i) is None else (cache.get(i)[0].numpy().copy(), cache.get(i)[1].numpy().copy())
            for i in range(NUM_LAYERS)]


def draw_positions(data, batch, n_tokens):
    mode = data.draw(st.sampled_from(["append", "0d", "1d", "2d"]))
    slots = st.lists(st.integers(0, 10), min_size=n_tokens, max_size=n_tokens, unique=True)
    if mode == "append":
        return None, None
    if mode == "0d":
        p = data.draw(st.integers(0, 10))
        return lucid.Tensor(p, dtype=lucid.Int32), p
    if mode == "1d":
        p = data.draw(slots)
        return lucid.Tensor(p, dtype=lucid.Int64), p
    rows = [data.draw(slots) for _ in range(batch)]
    return lucid.Tensor(rows, dtype=lucid.Int32), rows


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@SETTINGS
@given(data=st.data())
def test_random_operations_match_reference(backend_name, kind, data):
    cache, model = make(kind)
    counter = 0
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["update", "update", "update", "select", "repeat", "crop", "reset"]))
        batch = model.batch()
        before = snapshot(cache)
        if op == "update":
            b = batch or data.draw(st.integers(1, 3))
            n_tokens = data.draw(st.integers(1, 3))
            if data.draw(st.booleans()):
                n_tokens = 1  # the decode step
            layer = data.draw(st.integers(0, NUM_LAYERS - 1))
            k = (np.arange(b * H * n_tokens * DK, dtype=np.float32) + counter).reshape(b, H, n_tokens, DK)
            v = -(np.arange(b * H * n_tokens * DV, dtype=np.float32) + counter).reshape(b, H, n_tokens, DV)
            counter += 1000
            pos_tensor, pos = draw_positions(data, b, n_tokens)
            if pos is not None and isinstance(pos, int) and n_tokens != 1:
                pos_tensor, pos = None, None
            try:
                model.update(k, v, layer, pos)
            except ValueError:
                with pytest.raises(ValueError):
                    cache.update(lucid.Tensor(k), lucid.Tensor(v), layer, cache_position=pos_tensor)
                assert_equal_snapshot(before, snapshot(cache))
                continue
            k_out, v_out = cache.update(lucid.Tensor(k), lucid.Tensor(v), layer, cache_position=pos_tensor)
            np.testing.assert_array_equal(k_out.numpy(), model.layers[layer][0])
            np.testing.assert_array_equal(v_out.numpy(), model.layers[layer][1])
        elif op == "select":
            if batch is None:
                cache.batch_select_indices([0])  # no-op on an empty cache
            else:
                rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=4))
                method = data.draw(st.sampled_from([cache.batch_select_indices, cache.reorder_cache]))
                method(lucid.Tensor(rows, dtype=lucid.Int32))
                model.select(rows)
        elif op == "repeat":
            repeats = data.draw(st.integers(1, 3))
            if batch is not None and batch * repeats > 6:
                continue
            cache.batch_repeat_interleave(repeats)
            if batch is not None:
                model.repeat(repeats)
        elif op == "crop":
            m = data.draw(st.integers(0, 10))
            cache.crop(m)
            model.crop(m)
        else:
            cache.reset()
            model.reset()
        assert_same(cache, model)


def assert_equal_snapshot(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])
