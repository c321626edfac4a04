"""Prefix reuse and cache files: time to first token warm vs cold, and throughput vs the floor.

    python benchmarks/prefix_store.py [--prefix 2048] [--repeats 7]

Needs ``redis-server`` on the PATH for the Redis rows (it starts its own on a free loopback
port and stops it after); without it those rows say so.

1. Time to first token on the demo's 4-layer model for a request of ``--prefix`` shared
   tokens plus 16 of its own: cold (prefill everything) and warm (the prefix's chunks fetched
   from each tier, then prefill the 16), as a ratio.
2. Throughput in MB/s of the same cache bytes (a 2048-token cache of B=1, H=32, D=128,
   float32, one layer: 64 MiB): ``cache.save`` / ``nn.load_cache`` next to ``numpy.save`` /
   ``numpy.load`` of those arrays, and a PrefixStore's put / fetch through each tier next to
   the floor of that tier (a file write / read, a Redis SET / GET of the same bytes; the
   memory tier's floor, keeping a reference, costs nothing).

Medians of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

import lucid
import lucid.nn as nn
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel
from timing import median_seconds



def start_redis(directory):
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def time_to_first_token(tiers, prefix, repeats):
    model = LlamaModel.random(LlamaConfig(num_layers=4))
    rng = np.random.default_rng(0)
    prompt = np.concatenate([rng.integers(0, 256, size=prefix), rng.integers(0, 256, size=16)])

    def first_token(cache):
        generate(model, prompt[None, :], 1, cache=cache)

    rows = {"cold": median_seconds(lambda: first_token(nn.DynamicKVCache()), repeats)}
    seed = nn.DynamicKVCache()
    first_token(seed)
    for name, tier in tiers.items():
        store = nn.PrefixStore([tier], chunk_size=256, fingerprint="benchmark-model")
        store.put(prompt, seed)

        def warm(store=store):
            cache = nn.DynamicKVCache()
            store.fetch(prompt, cache)
            first_token(cache)

        rows[name] = median_seconds(warm, repeats)
    return rows


def throughput(tiers, directory, redis_url, repeats):
    lucid.manual_seed(0)
    k, v = lucid.randn(1, 32, 2048, 128), lucid.randn(1, 32, 2048, 128)
    cache = nn.DynamicKVCache()
    cache.update(k, v, 0)
    megabytes = 2 * k.nbytes / 1e6
    path = directory / "cache.safetensors"
    floor_path = directory / "floor.npy"
    arrays = np.stack([k.numpy(), v.numpy()])
    rows = {
        "cache.save": median_seconds(lambda: cache.save(path), repeats),
        "numpy.save (floor)": median_seconds(lambda: np.save(floor_path, arrays), repeats),
        "nn.load_cache": median_seconds(lambda: nn.load_cache(path), repeats),
        "numpy.load (floor)": median_seconds(lambda: np.load(floor_path), repeats),
    }
    tokens = np.arange(2048)
    buffer = io.BytesIO()
    np.save(buffer, arrays)
    raw = buffer.getvalue()
    for name, tier in tiers.items():
        store = nn.PrefixStore([tier], chunk_size=256, fingerprint=f"throughput-{name}")

        def put(store=store, tier=tier):
            for key in store.chunk_keys(tokens):
                tier.delete(key)
            store.put(tokens, cache)

        rows[f"PrefixStore.put, {name}"] = median_seconds(put, repeats)
        rows[f"PrefixStore.fetch, {name}"] = median_seconds(lambda store=store: store.fetch(tokens, nn.DynamicKVCache()),
                                                       repeats)
    floor_file = directory / "floor.bin"
    floors = {"disk": (lambda: floor_file.write_bytes(raw), lambda: floor_file.read_bytes())}
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        floors["redis"] = (lambda: client.set("floor", raw), lambda: client.get("floor"))
    for name, (write, read) in floors.items():
        rows[f"floor write, {name}"] = median_seconds(write, repeats)
        rows[f"floor read, {name}"] = median_seconds(read, repeats)
    return {name: megabytes / seconds for name, seconds in rows.items()}, megabytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    directory = pathlib.Path(tempfile.mkdtemp())
    process, redis_url = start_redis(directory)
    try:
        tiers = {"memory": nn.MemoryTier(), "disk": nn.DiskTier(directory / "chunks")}
        if redis_url:
            tiers["redis"] = nn.RedisTier(redis_url, timeout=5)
        else:
            print("no redis-server on the PATH: no Redis rows", file=sys.stderr)
        ttft = time_to_first_token(tiers, args.prefix, args.repeats)
        print(f"time to first token, demo model (4 layers), {args.prefix}-token shared prefix + 16 tokens:")
        print("| prompt | time | cold / this |\n|---|---:|---:|")
        for name, seconds in ttft.items():
            label = "cold (prefill all)" if name == "cold" else f"warm, {name} tier"
            print(f"| {label} | {seconds * 1e3:.1f} ms | {ttft['cold'] / seconds:.1f}x |")
        rates, megabytes = throughput(tiers, directory, redis_url, args.repeats)
        print(f"\nthroughput on {megabytes:.0f} MB of keys and values (B=1, H=32, T=2048, D=128, float32):")
        print("| operation | MB/s |\n|---|---:|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:,.0f} |")
    finally:
        if process is not None:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
