"""PrefixStore over real tiers: memory, a directory, and a real redis-server, faults included."""
import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import redis

import lucid
import lucid.nn as nn
from lucid.models import LlamaConfig, LlamaModel


MODEL = LlamaModel.random(LlamaConfig(num_layers=2))
PROMPT = np.random.default_rng(0).integers(0, 256, size=37)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prefilled(tokens=PROMPT):
    cache = nn.DynamicKVCache()
    MODEL.forward(np.asarray(tokens)[None, :], cache=cache)
    return cache


def store_of(*tiers, fingerprint="tiny-2-layers"):
    return nn.PrefixStore(list(tiers), chunk_size=8, fingerprint=fingerprint)


def assert_fetched_equals_prefill(store, tokens=PROMPT, into=None):
    """Fetch ``tokens`` and check what came back: bit for bit the prefill of ``PROMPT`` (what
    the tests put) and, where ``tokens`` is another prompt with the same prefix, its own prefill to
    float32 rounding (BLAS may round a product's rows differently with the number of rows)."""
    cache = into if into is not None else nn.DynamicKVCache()
    got = store.fetch(tokens, cache)
    references = [(prefilled(), 0.0)]
    if len(tokens) != len(PROMPT):
        references.append((prefilled(tokens), 1e-5))
    for layer in range(2):
        k, v = cache.get(layer)
        for reference, rtol in references:
            for have, want in ((k, reference.get(layer)[0]), (v, reference.get(layer)[1])):
                np.testing.assert_allclose(have.numpy(), want.numpy()[..., :got, :], rtol=rtol, atol=rtol / 10)
    return got


@pytest.fixture(params=["memory", "disk", "redis"])
def tier(request, tmp_path):
    if request.param == "memory":
        return nn.MemoryTier()
    if request.param == "disk":
        return nn.DiskTier(tmp_path / "chunks")
    return nn.RedisTier(request.getfixturevalue("redis_server").url)


def test_put_then_fetch_returns_the_whole_chunks(tier):
    store = store_of(tier)
    assert store.put(PROMPT, prefilled()) == 32  # 37 tokens: four whole chunks of 8
    assert assert_fetched_equals_prefill(store) == 32
    longer = np.concatenate([PROMPT, [1, 2, 3]])
    assert assert_fetched_equals_prefill(store, longer) == 32  # same prefix, more text after it
    other = PROMPT.copy()
    other[20] += 1  # a different token in chunk 2: chunks 0 and 1 still match
    assert store.fetch(other, nn.DynamicKVCache()) == 16


def test_any_cache_class_can_receive_a_prefix(tier):
    store = store_of(tier)
    store.put(PROMPT, prefilled())
    for cache in (nn.StaticKVCache(64, 2), nn.SlidingWindowKVCache(12), nn.QuantizedKVCache(8, 16, 4)):
        assert store.fetch(PROMPT, cache) == 32 and cache.get_seq_length(1) == 32


def test_misses_leave_the_cache_empty_and_other_models_see_nothing(tier):
    store_of(tier).put(PROMPT, prefilled())
    cache = nn.DynamicKVCache()
    assert store_of(tier, fingerprint="another-model").fetch(PROMPT, cache) == 0
    assert cache.get(0) is None
    assert store_of(tier).fetch(PROMPT[1:], cache) == 0 and cache.get(0) is None


def test_read_through_promotes_and_write_through_fills_every_tier(tmp_path):
    memory, disk = nn.MemoryTier(), nn.DiskTier(tmp_path / "d")
    store_of(disk).put(PROMPT, prefilled())  # only on disk
    store = store_of(memory, disk)
    assert memory.nbytes == 0 and store.fetch(PROMPT, nn.DynamicKVCache()) == 32
    assert len(memory._items) == 4  # promoted
    fresh_memory, fresh_disk = nn.MemoryTier(), nn.DiskTier(tmp_path / "e")
    store_of(fresh_memory, fresh_disk).put(PROMPT, prefilled())
    assert len(fresh_memory._items) == 4 and len(list((tmp_path / "e").glob("*.chunk"))) == 4


def test_bad_arguments():
    with pytest.raises(TypeError, match="fingerprint"):
        nn.PrefixStore([nn.MemoryTier()])
    with pytest.raises(ValueError, match="at least one tier"):
        nn.PrefixStore([], fingerprint="m")
    with pytest.raises(TypeError, match="tiers\\[0\\]"):
        nn.PrefixStore(["memory"], fingerprint="m")
    with pytest.raises(ValueError, match="chunk_size"):
        nn.PrefixStore([nn.MemoryTier()], chunk_size=0, fingerprint="m")
    store = store_of(nn.MemoryTier())
    with pytest.raises(ValueError, match="1-D"):
        store.put([[1, 2]], prefilled())
    with pytest.raises(ValueError, match="must hold positions 0 to 31"):
        store.put(PROMPT, prefilled(PROMPT[:20]))
    full = nn.DynamicKVCache()
    store.put(PROMPT, prefilled())
    store.fetch(PROMPT, full)
    with pytest.raises(ValueError, match="empty cache"):
        store.fetch(PROMPT, full)


def test_corrupt_chunks_are_misses_and_are_deleted(tmp_path, redis_server):
    disk, remote = nn.DiskTier(tmp_path / "d"), nn.RedisTier(redis_server.url)
    for tier in (disk, remote):
        store = store_of(tier)
        store.put(PROMPT, prefilled())
        key = store.chunk_keys(PROMPT)[1]
        if tier is disk:
            path = tmp_path / "d" / f"{key}.chunk"
            path.write_bytes(path.read_bytes()[:-7])  # truncated on disk
        else:
            client = redis.Redis.from_url(redis_server.url)
            data = bytearray(client.get("lucid:prefix:" + key))
            data[-3] ^= 0xFF  # a flipped bit in Redis
            client.set("lucid:prefix:" + key, bytes(data))
        assert assert_fetched_equals_prefill(store) == 8  # chunk 0 only: never wrong data
        assert tier.get(key) is None  # the bad chunk is gone


def test_redis_going_away_is_a_miss_with_one_warning_and_coming_back_works(redis_server):
    store = store_of(nn.RedisTier(redis_server.url, timeout=0.2))
    store.put(PROMPT, prefilled())
    redis_server.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # generation goes on: misses, nothing stored, no exception
            assert store.fetch(PROMPT, nn.DynamicKVCache()) == 0
            assert store.put(PROMPT, prefilled()) == 0  # put says what it really stored
    assert len([w for w in caught if "unavailable" in str(w.message)]) == 1
    redis_server.start()  # an empty server on the same port
    deadline = time.monotonic() + 10  # the tier probes again after its back-off (1 s, then 2 s)
    while store.put(PROMPT, prefilled()) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.fetch(PROMPT, nn.DynamicKVCache()) == 32


def test_a_slow_redis_is_a_bounded_miss(redis_server):
    store = store_of(nn.RedisTier(redis_server.url, timeout=0.2))
    store.put(PROMPT, prefilled())
    blocker = threading.Thread(target=lambda: redis.Redis.from_url(redis_server.url).execute_command("DEBUG", "SLEEP", 4))
    blocker.start()
    time.sleep(0.2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert store.fetch(PROMPT, nn.DynamicKVCache()) == 0
        assert blocker.is_alive()  # the miss came from the timeout, not from the server waking up
    blocker.join()


def key(i: int) -> str:
    """A key of the form the store makes (a SHA-256 in hex)."""
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_a_disk_tier_at_its_limit_evicts_the_least_recently_used(tmp_path):
    tier = nn.DiskTier(tmp_path / "d", max_bytes=3000)
    for i in range(6):
        tier.put(key(i), bytes([i]) * 900)  # one after the other, with no pause: order is not left to the clock
        if i == 2:
            tier.get(key(0))  # used again: the second is now the oldest
        assert tier.nbytes <= 3000
    left = sorted(p.stem for p in (tmp_path / "d").glob("*.chunk"))
    assert left == sorted([key(3), key(4), key(5)])
    assert not tier.put(key(9), b"x" * 4000)  # larger than the whole tier: not stored
    assert tier.get(key(9)) is None and tier.nbytes <= 3000


def test_two_processes_writing_the_same_prefix_both_succeed(tmp_path, redis_server):
    code = textwrap.dedent(f"""
        import numpy as np, lucid.nn as nn
        from lucid.models import LlamaConfig, LlamaModel
        model = LlamaModel.random(LlamaConfig(num_layers=2))
        prompt = np.random.default_rng(0).integers(0, 256, size=37)
        cache = nn.DynamicKVCache()
        model.forward(prompt[None, :], cache=cache)
        store = nn.PrefixStore([nn.DiskTier({str(tmp_path / 'shared')!r}), nn.RedisTier({redis_server.url!r})],
                               chunk_size=8, fingerprint="tiny-2-layers")
        for _ in range(20):
            assert store.put(prompt, cache) == 32
            fetched = nn.DynamicKVCache()
            assert store.fetch(prompt, fetched) in (0, 8, 16, 24, 32)
        print("ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "ok" for p, (out, _) in zip(procs, outs)), outs
    for tier in (nn.DiskTier(tmp_path / "shared"), nn.RedisTier(redis_server.url)):
        assert assert_fetched_equals_prefill(store_of(tier)) == 32


def test_bfloat16_chunks(tier):
    store = store_of(tier)
    cache = nn.DynamicKVCache()
    k = lucid.randn(1, 2, 16, 8).astype(lucid.BFloat16)
    cache.update(k, k, 0)
    store.put(list(range(16)), cache)
    fetched = nn.DynamicKVCache()
    assert store.fetch(list(range(17)), fetched) == 16
    assert fetched.get(0)[0].dtype == lucid.BFloat16
    np.testing.assert_array_equal(fetched.get(0)[0].numpy(), k.numpy())


@pytest.mark.parametrize("where", ["disk", "redis"])
def test_the_demo_reuses_a_prefix_through_each_store(where, tmp_path, request, capsys):
    from lucid.demo import main as demo_main

    spec = str(tmp_path / "store") if where == "disk" else request.getfixturevalue("redis_server").url
    assert demo_main(["--model", "tiny", "--tokens", "3", "--layers", "1", "--prefix-len", "256", "--requests", "2",
                      "--prefix-store", spec]) == 0
    assert "| 2 | 256 |" in capsys.readouterr().out


def test_redis_is_an_extra_named_when_missing(monkeypatch):
    imported = subprocess.run([sys.executable, "-c", "import sys, lucid.nn, lucid.demo; print('redis' in sys.modules)"],
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"  # importing lucid never needs the client
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"lucid-kv\[redis\]"):
        nn.RedisTier("redis://127.0.0.1:6379/0")
    with pytest.raises(TypeError, match="url must be a str"):  # the argument is still checked first
        nn.RedisTier(6379)
