"""Random operation sequences on the caches, checked against the reference model after every step."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn

from .helpers import assert_same_snapshot, on_backend, snapshot
from .reference import ReferenceCache

H, DK, DV = 2, 3, 2
NUM_LAYERS = 3
MAX_LEN = 8  # static capacity; positions go up to 10 so overflows get exercised
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


MAX_BATCH = 4  # "static-rows": batch rows reserved; larger batches get exercised too

KINDS = ["dynamic", "static", "static-rows"]


def make(kind):
    if kind == "dynamic":
        return nn.DynamicKVCache(), ReferenceCache()
    if kind == "static-rows":
        return (nn.StaticKVCache(max_cache_len=MAX_LEN, num_layers=NUM_LAYERS, max_batch_size=MAX_BATCH),
                ReferenceCache(MAX_LEN, MAX_BATCH))
    return nn.StaticKVCache(max_cache_len=MAX_LEN, num_layers=NUM_LAYERS), ReferenceCache(MAX_LEN)


def expect_same_outcome(model_call, cache_call, cache, before):
    """Run the reference's call, then the cache's: both succeed, or both raise ValueError and
    the cache is unchanged. Answers whether they succeeded."""
    try:
        model_call()
    except ValueError:
        with pytest.raises(ValueError):
            cache_call()
        assert_same_snapshot(before, snapshot(cache, NUM_LAYERS))
        return False
    cache_call()
    return True


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


def as_form(data, positions):
    """The same positions in one of the forms callers use: list, NumPy array, Tensor, range."""
    form = data.draw(st.sampled_from(["list", "numpy", "tensor32", "tensor64"]
                                     + (["range"] if _is_range(positions) else [])))
    if form == "list":
        return positions
    if form == "numpy":
        return np.asarray(positions, dtype=np.int16)
    if form == "range":
        return range(positions[0], positions[-1] + 1)
    return lucid.Tensor(positions, dtype=lucid.Int32 if form == "tensor32" else lucid.Int64)


def _is_range(positions):
    return isinstance(positions, list) and positions and isinstance(positions[0], int) and \
        positions == list(range(positions[0], positions[0] + len(positions)))


def draw_positions(data, batch, n_tokens, length):
    """(cache_position to pass, the same as plain ints for the reference), over every mode."""
    mode = data.draw(st.sampled_from(["append", "next", "0d", "1d", "2d"]))
    slots = st.lists(st.integers(0, 10), min_size=n_tokens, max_size=n_tokens, unique=True)
    if mode == "append":
        return None, None
    if mode == "next":  # what models send: exactly the next positions
        p = list(range(length, length + n_tokens))
        return as_form(data, p), p
    if mode == "0d":
        p = data.draw(st.integers(0, 10))
        return data.draw(st.sampled_from([p, np.int64(p), lucid.Tensor(p, dtype=lucid.Int32)])), p
    if mode == "1d":
        p = data.draw(slots)
        return as_form(data, p), p
    rows = [data.draw(slots) for _ in range(batch)]
    if data.draw(st.booleans()):
        rows = [rows[0]] * batch  # the same positions for every row, written as 2-D
    return as_form(data, rows), rows


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_random_operations_match_reference(backend_name, kind, data):
    cache, model = make(kind)
    counter = 0
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["update", "update", "update", "select", "repeat", "crop", "trim", "reset"]))
        batch = model.batch()
        before = snapshot(cache, NUM_LAYERS)
        if op == "update":
            b = batch or data.draw(st.integers(1, 5))
            n_tokens = data.draw(st.integers(1, 3))
            if data.draw(st.booleans()):
                n_tokens = 1  # the decode step
            layer = data.draw(st.integers(0, NUM_LAYERS - 1))
            k = (np.arange(b * H * n_tokens * DK, dtype=np.float32) + counter).reshape(b, H, n_tokens, DK)
            v = -(np.arange(b * H * n_tokens * DV, dtype=np.float32) + counter).reshape(b, H, n_tokens, DV)
            counter += 1000
            length = 0 if layer not in model.layers else model.layers[layer][0].shape[-2]
            pos_tensor, pos = draw_positions(data, b, n_tokens, length)
            if isinstance(pos, int) and n_tokens != 1:
                pos_tensor, pos = None, None
            out = []
            if not expect_same_outcome(
                    lambda: model.update(k, v, layer, pos),
                    lambda: out.extend(cache.update(on_backend(k), on_backend(v), layer, cache_position=pos_tensor)),
                    cache, before):
                continue
            np.testing.assert_array_equal(out[0].numpy(), model.layers[layer][0])
            np.testing.assert_array_equal(out[1].numpy(), model.layers[layer][1])
        elif op == "select":
            if batch is None:
                cache.batch_select_indices([0])  # no-op on an empty cache
            else:
                rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=5))
                method = data.draw(st.sampled_from([cache.batch_select_indices, cache.reorder_cache]))
                expect_same_outcome(lambda: model.select(rows),
                                    lambda: method(lucid.Tensor(rows, dtype=lucid.Int32)), cache, before)
        elif op == "repeat":
            repeats = data.draw(st.integers(1, 3))
            if batch is not None and batch * repeats > 6:
                continue
            if batch is None:
                cache.batch_repeat_interleave(repeats)  # no-op on an empty cache
            else:
                expect_same_outcome(lambda: model.repeat(repeats),
                                    lambda: cache.batch_repeat_interleave(repeats), cache, before)
        elif op == "crop":
            m = data.draw(st.integers(0, 10))
            cache.crop(m)
            model.crop(m)
        elif op == "trim":
            n = data.draw(st.integers(0, 6))
            assert cache.can_trim(n) == (all(k.shape[-2] >= n for k, _ in model.layers.values())
                                         and (n == 0 or bool(model.layers)))
            expect_same_outcome(lambda: model.trim(n), lambda: cache.trim(n), cache, before)
        else:
            cache.reset()
            model.reset()
        assert_same(cache, model)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@SETTINGS
@given(data=st.data())
def test_returned_tensors_a_caller_keeps_never_change(backend_name, kind, data):
    # A decode step may hand back the Tensor objects of the step before when the caller has
    # dropped them; the ones a caller keeps (both, or just one of the two) must keep their shape
    # and contents, through the dynamic layer's growth (past 256 positions) too.
    cache = nn.DynamicKVCache() if kind == "dynamic" else nn.StaticKVCache(max_cache_len=300, num_layers=1)

    def token(position, n_tokens=1):
        column = np.arange(position, position + n_tokens, dtype=np.float32)[None, None, :, None]
        return (on_backend(np.broadcast_to(column, (1, H, n_tokens, DK))),
                on_backend(np.broadcast_to(-column, (1, H, n_tokens, DV))))

    length = data.draw(st.sampled_from([1, 5, 250, 254]))
    cache.update(*token(0, length), 0)
    kept = []
    for step in range(length, length + data.draw(st.integers(1, 12))):
        k_out, v_out = cache.update(*token(step), 0, cache_position=data.draw(st.sampled_from([None, [step]])))
        keep = data.draw(st.sampled_from(["none", "none", "keys", "values", "both"]))
        if keep in ("keys", "both"):
            kept.append((k_out, step, DK, 1))
        if keep in ("values", "both"):
            kept.append((v_out, step, DV, -1))
        del k_out, v_out
    for tensor, last, dim, sign in kept:
        assert tensor.shape == (1, H, last + 1, dim)
        want = sign * np.broadcast_to(np.arange(last + 1, dtype=np.float32)[:, None], (last + 1, dim))
        np.testing.assert_array_equal(tensor.numpy()[0, 0], want)
