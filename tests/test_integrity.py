"""Stored caches and prefix chunks never come back as wrong data: every byte is covered by a
digest (an HMAC with a secret), and a prefix store's keys and tiers hold under faults."""
import os
import signal
import time
import warnings

import numpy as np
import pytest
import redis

import lucid
import lucid.nn as nn
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel

from .test_prefix_store import key

MODEL = LlamaModel.random(LlamaConfig(num_layers=2))


def small_sliding() -> nn.SlidingWindowKVCache:
    cache = nn.SlidingWindowKVCache(4, 2)
    data = lucid.Tensor(np.arange(20, dtype=np.float32).reshape(1, 1, 10, 2))
    cache.update(data, data + 100, 0)
    return cache


def small_quantized() -> nn.QuantizedKVCache:
    cache = nn.QuantizedKVCache(bits=4, group_size=2, residual_length=2)
    data = lucid.Tensor(np.linspace(-3, 3, 14, dtype=np.float32).reshape(1, 1, 7, 2)).astype(lucid.BFloat16)
    cache.update(data, data, 0)
    return cache


def same_state(a: nn.Cache, b: nn.Cache) -> bool:
    (settings_a, arrays_a), (settings_b, arrays_b) = a.state(), b.state()
    if settings_a != settings_b or set(arrays_a) != set(arrays_b):
        return False
    return all(arrays_a[n].dtype == arrays_b[n].dtype
               and np.array_equal(np.asarray(arrays_a[n]).view(np.uint8), np.asarray(arrays_b[n]).view(np.uint8))
               for n in arrays_a)


@pytest.mark.parametrize("make", [small_sliding, small_quantized], ids=["sliding-sinks", "quantized-bf16"])
def test_every_flipped_byte_of_a_saved_file_is_refused(make, tmp_path):
    cache = make()
    path = tmp_path / "cache.safetensors"
    cache.save(path)
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    wrong, refused = [], 0
    for position in range(len(data)):
        for mask in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[position] ^= mask
            bad.write_bytes(bytes(flipped))
            try:
                loaded = nn.load_cache(bad)
            except ValueError:  # anything else fails the test: an internal exception
                refused += 1
                continue
            if not same_state(loaded, cache):
                wrong.append((position, mask))
    assert wrong == []
    assert refused >= 2 * len(data) - 8 * 2  # all but, at most, a few padding spaces of the header


def test_the_reported_header_edits_are_refused(tmp_path):
    cache = small_sliding()
    path = tmp_path / "c"
    cache.save(path)
    data = path.read_bytes()
    for old, new in ((b'"F32"', b'"I32"'), (b'\\"length\\": 10', b'\\"length\\": 11')):
        assert old in data
        edited = tmp_path / "edited"
        edited.write_bytes(data.replace(old, new, 1))
        with pytest.raises(ValueError, match="checksum"):
            nn.load_cache(edited)


def test_from_state_refuses_keys_and_values_that_disagree():
    settings, arrays = small_sliding().state()
    arrays["layers.0.values"] = arrays["layers.0.values"][..., :1, :]
    with pytest.raises(ValueError, match="keys .* and values .* do not"):
        nn.Cache.from_state(settings, arrays)
    settings, arrays = small_sliding().state()
    settings["layers"][0]["length"] = 3  # 3 positions would keep 2 sinks and 1 more, not the 6 saved
    with pytest.raises(ValueError, match="positions"):
        nn.Cache.from_state(settings, arrays)


# -- prefix chunks -------------------------------------------------------------

def bfloat16_store(tier, **kw):
    return nn.PrefixStore([tier], chunk_size=4, fingerprint="bf16", **kw)


def bfloat16_cache():
    cache = nn.DynamicKVCache()
    data = lucid.Tensor(np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 1, 8, 2)).astype(lucid.BFloat16)
    cache.update(data, data * 3, 0)
    return cache


def test_every_flipped_byte_of_a_chunk_is_a_counted_miss_that_is_deleted():
    tier, tokens = nn.MemoryTier(), list(range(5))
    store = bfloat16_store(tier)
    source = bfloat16_cache()
    assert store.put(tokens, source) == 4
    (chunk_key,) = store.chunk_keys(tokens)
    data = tier.get(chunk_key)
    served, missed = 0, 0
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        tier.put(chunk_key, bytes(flipped))
        fetched = nn.DynamicKVCache()
        got = store.fetch(tokens, fetched)
        if got:
            served += 1
            np.testing.assert_array_equal(fetched.get(0)[0].numpy().view(np.uint16),
                                          source.get(0)[0].numpy()[..., :4, :].view(np.uint16))
        else:
            missed += 1
            assert tier.get(chunk_key) is None and fetched.get_seq_length(0) == 0
    assert missed == store.rejected and missed >= len(data) - 8  # header padding may be harmless


def test_a_signed_store_uses_only_chunks_signed_with_its_secret(monkeypatch):
    tier, tokens = nn.MemoryTier(), list(range(9))
    writer = bfloat16_store(tier, secret=b"team key")
    assert writer.signed and writer.put(tokens, bfloat16_cache()) == 8
    assert bfloat16_store(tier, secret=b"team key").fetch(tokens, nn.DynamicKVCache()) == 8
    stranger = bfloat16_store(tier, secret=b"another key")
    assert stranger.fetch(tokens, nn.DynamicKVCache()) == 0 and stranger.rejected == 1
    # A writer without the key plants unsigned chunks: a signed reader never serves them.
    assert bfloat16_store(tier).put(tokens, bfloat16_cache()) == 8
    monkeypatch.setenv("LUCID_PREFIX_SECRET", "team key")
    from_env = bfloat16_store(tier)
    assert from_env.signed and from_env.fetch(tokens, nn.DynamicKVCache()) == 0 and from_env.rejected == 1


def test_the_chunk_key_covers_the_chunk_size():
    tokens = list(range(16))
    small = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m").chunk_keys(tokens)
    large = nn.PrefixStore([nn.MemoryTier()], chunk_size=8, fingerprint="m").chunk_keys(tokens)
    assert small[1] != large[0] and not set(small) & set(large)


@pytest.mark.parametrize("bad", ["../escaped", "/tmp/absolute", "a" * 63, "A" * 64, "x" * 64, 7])
def test_tiers_take_only_store_keys(tmp_path, bad):
    directory = tmp_path / "tier"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    for tier in (nn.DiskTier(directory), nn.MemoryTier()):
        for call in (lambda: tier.put(bad, b"x"), lambda: tier.get(bad), lambda: tier.delete(bad)):
            with pytest.raises(ValueError, match="64 lowercase hex digits"):
                call()
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        nn.DiskTier(directory).delete("../victim")
    assert victim.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["tier", "victim"]


def test_a_disk_tier_never_raises_for_its_directory(tmp_path, monkeypatch):
    tier = nn.DiskTier(tmp_path / "d")
    assert tier.put(key(1), b"data")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "utime", refuse)  # a directory this process may read but not write
    assert tier.get(key(1)) == b"data"
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tier.put(key(2), b"more") is False and tier.put(key(3), b"more") is False
    assert len([w for w in caught if "unavailable" in str(w.message)]) == 1  # one warning per outage
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f"{key(1)}.chunk"]  # no temporaries left


def test_a_disk_tier_removes_temporaries_of_dead_writers(tmp_path):
    tier = nn.DiskTier(tmp_path / "d")
    stale, fresh = tmp_path / "d" / ".killed.tmp", tmp_path / "d" / ".writing.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x" * 100)
    old = time.time() - tier.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    tier.put(key(1), b"data")
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("kwargs, error", [
    ({"timeout": "0.5"}, TypeError), ({"timeout": -1}, ValueError), ({"timeout": float("nan")}, ValueError),
    ({"timeout": 0}, ValueError), ({"prefix": None}, TypeError), ({"backoff": 0.5}, ValueError),
])
def test_redis_tier_arguments_are_checked_at_construction(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        nn.RedisTier("redis://127.0.0.1:6379/0", **kwargs)


def test_a_paused_redis_costs_one_timeout_and_put_says_nothing_was_stored(redis_server):
    tokens = list(range(16 * 4 + 1))
    cache = nn.DynamicKVCache()
    cache.update(lucid.randn(1, 1, len(tokens), 2), lucid.randn(1, 1, len(tokens), 2), 0)
    store = nn.PrefixStore([nn.RedisTier(redis_server.url, timeout=0.5)], chunk_size=4, fingerprint="m")
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            start = time.monotonic()
            stored = store.put(tokens, cache)
            elapsed = time.monotonic() - start
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert stored == 0
    assert elapsed < 8 * 0.5  # 16 chunks: the breaker skips the tier after the first timeout


def test_a_full_redis_reports_what_it_stored(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    tokens = list(range(64 * 8 + 1))
    cache = nn.DynamicKVCache()
    cache.update(lucid.randn(1, 8, len(tokens), 64), lucid.randn(1, 8, len(tokens), 64), 0)
    store = nn.PrefixStore([nn.RedisTier(redis_server.url)], chunk_size=64, fingerprint="m")
    assert store.put(tokens[:64 * 2], cache) == 128  # two chunks in, then the server is full
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 10_000))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert store.put(tokens, cache) == 128  # not 512: the other six chunks were refused
    assert store.fetch(tokens, nn.DynamicKVCache()) == 128


# -- fetch -----------------------------------------------------------------------

def test_fetch_into_an_encoder_decoder_cache_is_a_type_error():
    store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
    with pytest.raises(TypeError, match="EncoderDecoderCache"):
        store.fetch(list(range(9)), nn.EncoderDecoderCache())


def test_a_failed_fetch_changes_nothing_even_in_a_cache_cropped_to_nothing():
    store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="m")
    source = nn.DynamicKVCache()
    source.update(lucid.randn(1, 2, 9, 4), lucid.randn(1, 2, 9, 4), 0)
    assert store.put(list(range(9)), source) == 8
    target = nn.StaticKVCache(max_cache_len=6, num_layers=1)  # too short for the 8 fetched positions
    target.update(lucid.randn(1, 2, 3, 4), lucid.randn(1, 2, 3, 4), 0)
    target.crop(0)
    before = target.state()
    with pytest.raises(ValueError, match="max_cache_len"):
        store.fetch(list(range(9)), target)
    assert target.state()[0] == before[0] and target.layers[0].written and target.nbytes() == 6 * 2 * 2 * 4 * 4


def test_a_prompt_of_whole_chunks_leaves_a_token_for_generate():
    store = nn.PrefixStore([nn.MemoryTier()], chunk_size=4, fingerprint="tiny")
    prompt = np.arange(8)
    prefill = nn.DynamicKVCache()
    MODEL.forward(prompt[None, :], cache=prefill)
    assert store.put(prompt, prefill) == 8
    cache = nn.DynamicKVCache()
    assert store.fetch(prompt, cache) == 4  # not 8: the next forward needs at least one token
    warm = generate(MODEL, prompt[None, :], 5, cache=cache)
    assert warm.tokens.tolist() == generate(MODEL, prompt[None, :], 5).tokens.tolist()


def test_a_disk_tier_counts_bytes_while_others_remove_files(tmp_path, monkeypatch):
    tier = nn.DiskTier(tmp_path / "d")
    for i in range(3):
        tier.put(key(i), b"x" * 10)
    real_stat = type(tmp_path).stat

    def vanishing(path, *args, **kwargs):  # another process evicts this chunk between glob and stat
        if path.name.startswith(key(1)):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "stat", vanishing)
    assert tier.nbytes == 20
    assert tier.put(key(4), b"y" * 10)  # eviction walks the directory too
