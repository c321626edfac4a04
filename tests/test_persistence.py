"""cache.save / lucid.nn.load_cache: every cache kind, bit-identical, cross-backend, and bad files."""
import json
import os

import numpy as np
import pytest
import safetensors.numpy

import lucid
import lucid.nn as nn
from lucid_backends import framing
from lucid.models import LlamaConfig, LlamaModel

from .helpers import kv

KINDS = {
    "dynamic": nn.DynamicKVCache,
    "static": lambda: nn.StaticKVCache(max_cache_len=32, num_layers=3),
    "static-rows": lambda: nn.StaticKVCache(max_cache_len=32, num_layers=3, max_batch_size=4),
    "sliding": lambda: nn.SlidingWindowKVCache(4, sink_tokens=2),
    "quantized-4": lambda: nn.QuantizedKVCache(bits=4, group_size=2, residual_length=3),
    "quantized-8": lambda: nn.QuantizedKVCache(bits=8, group_size=4, residual_length=0),
    "quantized-8 with sinks": lambda: nn.QuantizedKVCache(bits=8, group_size=4, residual_length=1, sink_tokens=2),
    "hybrid": lambda: nn.HybridKVCache([nn.SlidingWindowLayer(3), nn.DynamicLayer(), nn.QuantizedLayer(8, 4, 2)]),
    "hybrid-static-rows": lambda: nn.HybridKVCache([nn.StaticLayer(32, max_batch_size=4), nn.DynamicLayer(),
                                                    nn.SlidingWindowLayer(3)]),
}


def observe(cache, layers=3):
    """Everything a caller can see: per layer, the arrays, the length and the key positions."""
    out = []
    for i in range(layers):
        got = cache.get(i)
        positions = cache.key_positions(i)
        out.append((None if got is None else (got[0].numpy(), got[1].numpy()), cache.get_seq_length(i),
                    None if positions is None else positions.tolist()))
    return out


def assert_same(a, b):
    for (arrays_a, length_a, pos_a), (arrays_b, length_b, pos_b) in zip(a, b):
        assert length_a == length_b and pos_a == pos_b and (arrays_a is None) == (arrays_b is None)
        if arrays_a is not None:
            assert arrays_a[0].dtype == arrays_b[0].dtype
            np.testing.assert_array_equal(arrays_a[0], arrays_b[0])
            np.testing.assert_array_equal(arrays_a[1], arrays_b[1])


def filled(kind, dtype=lucid.Float32):
    cache = KINDS[kind]()
    cache.update(*kv(t=9, dtype=dtype), 0)
    cache.update(*kv(t=2, dtype=dtype), 2)  # layer 1 stays unwritten
    return cache


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_is_bit_identical_and_keeps_decoding_the_same(backend_name, kind, tmp_path):
    cache = filled(kind)
    path = tmp_path / "cache.safetensors"
    cache.save(path)
    loaded = nn.load_cache(path)
    assert type(loaded) is type(cache) and loaded.arguments() == cache.arguments()
    assert [layer.arguments() for layer in loaded.layers] == [layer.arguments() for layer in cache.layers]
    for mine, theirs in zip(loaded.layers, cache.layers):
        if isinstance(mine, nn.StaticLayer):  # a static layer's storage (its reserved rows too) is its arguments'
            assert mine.nbytes() == theirs.nbytes()
    assert_same(observe(loaded), observe(cache))
    for _ in range(5):  # the next steps give the same answers on both
        k, v = kv()
        for target in (cache, loaded):
            target.update(k, v, 0, cache_position=[target.get_seq_length(0)])
        assert_same(observe(loaded), observe(cache))


def test_a_layer_cropped_to_nothing_and_a_reset_cache_round_trip(tmp_path):
    cache = nn.DynamicKVCache()
    cache.update(*kv(t=4), 0)
    cache.crop(0)
    cache.save(tmp_path / "a")
    loaded = nn.load_cache(tmp_path / "a")
    assert loaded.get_seq_length(0) == 0 and loaded.get(0)[0].shape == (2, 3, 0, 4)
    cache.reset()
    cache.save(tmp_path / "b")
    assert nn.load_cache(tmp_path / "b").get(0) is None


def test_encoder_decoder_round_trip(backend_name, tmp_path):
    cache = nn.EncoderDecoderCache(nn.StaticKVCache(16, 1), nn.DynamicKVCache())
    cache.update(*kv(t=7), 0, is_cross_attention=True)
    cache.update(*kv(t=3), 0)
    cache.save(tmp_path / "ed")
    loaded = nn.load_cache(tmp_path / "ed")
    assert isinstance(loaded, nn.EncoderDecoderCache) and loaded.get_max_cache_shape() == 16
    assert_same(observe(loaded.self_attention_cache, 1), observe(cache.self_attention_cache, 1))
    assert_same(observe(loaded.cross_attention_cache, 1), observe(cache.cross_attention_cache, 1))


@pytest.mark.parametrize("dtype", [lucid.BFloat16, lucid.Float16])
def test_sixteen_bit_floats_round_trip(dtype, tmp_path):
    for kind in ("dynamic", "quantized-4"):
        cache = filled(kind, dtype)
        cache.save(tmp_path / kind)
        loaded = nn.load_cache(tmp_path / kind)
        assert loaded.get(0)[0].dtype == dtype
        assert_same(observe(loaded), observe(cache))


def test_saved_on_one_backend_loaded_on_another(tmp_path):
    with lucid.use_backend("array_api_strict"):
        cache = filled("sliding")
        cache.save(tmp_path / "strict")
        expected = observe(cache)
    loaded = nn.load_cache(tmp_path / "strict")
    assert loaded.get(0)[0].backend.name == "numpy"
    assert_same(observe(loaded), expected)
    nn.DynamicKVCache().save(tmp_path / "empty")
    with lucid.use_backend("array_api_strict"):
        filled("static").save(tmp_path / "static")
    with lucid.use_backend("array_api_strict"):
        assert nn.load_cache(tmp_path / "static").get(0)[0].backend.name == "array_api_strict"


def test_a_loaded_cache_continues_generation_exactly(tmp_path):
    model = LlamaModel.random(LlamaConfig(num_layers=2))
    prompt = np.arange(10).reshape(1, 10)
    cache = nn.DynamicKVCache()
    model.forward(prompt, cache=cache, cache_position=list(range(10)))
    cache.save(tmp_path / "prompt")
    a, b = cache, nn.load_cache(tmp_path / "prompt")
    tokens_a, tokens_b = [], []
    for tokens, c in ((tokens_a, a), (tokens_b, b)):
        token = 7
        for t in range(10, 20):
            logits = model.forward([[token]], cache=c, cache_position=[t]).numpy()
            token = int(logits[0, -1].argmax())
            tokens.append((token, logits.tobytes()))
    assert tokens_a == tokens_b


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "cache.safetensors"
    filled("dynamic").save(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        filled("static").save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["cache.safetensors"]


def test_bad_files_raise_value_errors_naming_the_path(tmp_path):
    good = tmp_path / "good"
    filled("dynamic").save(good)
    data = good.read_bytes()
    truncated, corrupted, foreign, future = (tmp_path / n for n in ("truncated", "corrupted", "foreign", "future"))
    truncated.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # a byte of tensor data
    corrupted.write_bytes(bytes(flipped))
    safetensors.numpy.save_file({"x": np.zeros(3)}, str(foreign))
    arrays, meta = framing.unpack(data)
    future.write_bytes(framing.pack(arrays, {**meta, "version": 99}))  # a later format, properly framed
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    meta = json.loads(header["__metadata__"]["lucid"])
    meta["cache"]["layers"][0]["length"] += 1  # a header field edited, the data bytes untouched
    header["__metadata__"]["lucid"] = json.dumps(meta)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    edited = tmp_path / "edited"
    edited.write_bytes(len(new_header).to_bytes(8, "little") + new_header + data[8 + header_len:])
    for path, text in ((tmp_path / "missing", "no file"), (tmp_path, "directory"), (truncated, "truncated"),
                       (corrupted, "corrupted"), (foreign, "not a saved lucid cache"), (future, "version 99"),
                       (edited, "checksum")):
        with pytest.raises(ValueError, match=text) as info:
            nn.load_cache(path)
        assert str(path) in str(info.value)


def test_a_process_killed_mid_save_never_leaves_a_truncated_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "cache.safetensors"
    code = (
        "import time, lucid, lucid.nn as nn\n"
        "cache = nn.DynamicKVCache()\n"
        "k = lucid.randn(1, 8, 1024, 128)\n"  # 8 MiB a save: several saves a second, each one killable
        "cache.update(k, k, 0)\n"
        f"start = time.perf_counter(); cache.save({str(path)!r})\n"
        "print(time.perf_counter() - start, flush=True)\n"
        f"while True: cache.save({str(path)!r})\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for fraction in (0.2, 0.5, 0.8, 1.3, 1.7):  # kills spread over save cycles
        process = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
        one_save = float(process.stdout.readline())
        time.sleep(fraction * one_save)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert nn.load_cache(path).get_seq_length(0) == 1024  # the file at the path is always whole
