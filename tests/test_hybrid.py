"""HybridKVCache: one layer object per model layer, any mix, batch operations across kinds."""
import numpy as np
import pytest

import lucid.nn as nn

from .helpers import assert_unchanged, kv, snapshot


def mixed():
    return nn.HybridKVCache([nn.SlidingWindowLayer(3, sink_tokens=1), nn.DynamicLayer(), nn.StaticLayer(32),
                             nn.QuantizedLayer(bits=8, group_size=4, residual_length=2)])


def test_each_layer_keeps_its_own_policy(backend_name):
    cache = mixed()
    k, v = kv(t=10)
    for layer in range(4):
        cache.update(k, v, layer)
    assert [cache.get(i)[0].shape[-2] for i in range(4)] == [4, 10, 10, 10]
    assert [cache.get_seq_length(i) for i in range(4)] == [10] * 4
    assert cache.key_positions(0).tolist() == [0, 7, 8, 9]
    np.testing.assert_array_equal(cache.get(2)[0].numpy(), k.numpy())


def test_batch_operations_reach_every_kind(backend_name):
    cache = mixed()
    k, v = kv(b=2, t=10)
    for layer in range(4):
        cache.update(k, v, layer)
    cache.batch_repeat_interleave(2)
    cache.reorder_cache([3, 0, 1, 2])
    assert {cache.get(i)[0].shape[0] for i in range(4)} == {4}
    np.testing.assert_array_equal(cache.get(1)[0].numpy(), k.numpy()[[1, 0, 0, 1]])
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), k.numpy()[[1, 0, 0, 1]][..., [0, 7, 8, 9], :])


def test_a_batch_operation_that_one_kind_rejects_changes_no_layer(backend_name):
    cache = mixed()
    for layer in range(4):
        cache.update(*kv(t=10), layer)
    before = snapshot(cache, 4)
    with pytest.raises(ValueError, match="sliding-window"):
        cache.crop(5)  # the sliding window cannot crop; the other layers could
    assert_unchanged(before, cache, 4)


@pytest.mark.parametrize("layers, error, text", [
    ([], ValueError, "at least one layer"),
    ("layers", TypeError, "cache layer"),
    (5, TypeError, "sequence of cache layers"),
    ([nn.DynamicLayer(), object()], TypeError, r"layers\[1\]"),
])
def test_constructor_checks_its_layers(layers, error, text):
    with pytest.raises(error, match=text):
        nn.HybridKVCache(layers)


def test_the_same_layer_object_twice_is_an_error():
    layer = nn.DynamicLayer()
    with pytest.raises(ValueError, match=r"layers\[0\] and layers\[2\] are the same object"):
        nn.HybridKVCache([layer, nn.DynamicLayer(), layer])


def test_layer_idx_past_the_layers_is_an_error(backend_name):
    cache = nn.HybridKVCache([nn.DynamicLayer()])
    with pytest.raises(ValueError, match="num_layers=1"):
        cache.update(*kv(), 1)
    assert cache.get(0) is None
