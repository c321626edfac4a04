"""Median cost of one decode-step ``update`` against the floor and a concat-per-step cache.

    python benchmarks/decode_step.py [--lengths 128 1024 4096] [--samples 300]
    LUCID_BACKEND=cupy python benchmarks/decode_step.py

One token (B=1, H=8, D=64, float32) is written to layer 0 of a cache that
starts with T tokens. Samples of ``--number`` consecutive steps follow each
other without any reset (a reset such as ``crop`` would move megabytes and
evict the caches the next steps use); the figure is the median over samples,
per step. Reference lines, on the same backend and in the same run:

* floor: two in-place slice writes of the token into preallocated, already
  touched buffers of the same size, at the same advancing positions (no views,
  checks or wrappers). The static cache's pages are touched first too; the
  dynamic cache pays for its growth (fresh pages, copies) as it goes;
* concat: ``k = concat([k, token])`` per step, as transformers' DynamicCache does.

The last column appends T tokens one by one to an empty DynamicKVCache and
reports the mean per step: the amortized cost including every reallocation.
"""
from __future__ import annotations

import argparse
import statistics
import time

import lucid
import lucid.nn as nn

B, H, D = 1, 8, 64


def median_per_step(step, number, samples, sync):
    per_step = []
    for _ in range(samples):
        sync()
        start = time.perf_counter()
        for _ in range(number):
            step()
        sync()
        per_step.append((time.perf_counter() - start) / number)
    return statistics.median(per_step)


def measure(length, number, samples):
    backend = lucid.get_backend()
    xp, sync = backend.xp, backend.synchronize
    k, v = lucid.randn(B, H, 1, D), lucid.randn(B, H, 1, D)
    prefill_k, prefill_v = lucid.randn(B, H, length, D), lucid.randn(B, H, length, D)
    capacity = length + number * samples
    row = {}

    for name, cache in (("dynamic", nn.DynamicKVCache()), ("static", nn.StaticKVCache(capacity, 1))):
        if name == "static":  # touch every page first, as the floor's buffers are touched
            cache.update(k, v, 0, cache_position=capacity - 1)
            cache.reset()
        cache.update(prefill_k, prefill_v, 0)
        update = cache.update
        row[name] = median_per_step(lambda: update(k, v, 0), number, samples, sync)
        del cache

    kb = xp.zeros((B, H, capacity, D), dtype=xp.float32)
    vb = xp.zeros((B, H, capacity, D), dtype=xp.float32)
    kb[...] = 1.0
    vb[...] = 1.0
    kd, vd, at = k._data, v._data, [length]

    def floor():
        s = at[0]
        kb[..., s:s + 1, :] = kd
        vb[..., s:s + 1, :] = vd
        at[0] = s + 1

    row["floor"] = median_per_step(floor, number, samples, sync)

    state = {"k": prefill_k._data, "v": prefill_v._data}

    def concat():
        state["k"] = xp.concat([state["k"], kd], axis=-2)
        state["v"] = xp.concat([state["v"], vd], axis=-2)

    row["concat"] = median_per_step(concat, 5, 21, sync)

    def grow():
        cache = nn.DynamicKVCache()
        sync()
        start = time.perf_counter()
        for _ in range(length):
            cache.update(k, v, 0)
        sync()
        return (time.perf_counter() - start) / length

    row["grow"] = statistics.median(grow() for _ in range(5))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--number", type=int, default=100, help="steps per sample")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    backend = lucid.get_backend()
    print(f"backend {backend.name} ({backend.device}); B={B} H={H} D={D} float32, one token per step; "
          f"median of {args.samples} samples x {args.number} steps")
    print("| T | floor (us) | DynamicKVCache (us, x floor) | StaticKVCache (us, x floor) "
          "| concat per step (us, x floor) | dynamic from empty, mean (us) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        r = {key: value * 1e6 for key, value in measure(length, args.number, args.samples).items()}
        f = r["floor"]
        print(f"| {length} | {f:.2f} | {r['dynamic']:.2f} ({r['dynamic'] / f:.2f}x) | {r['static']:.2f} "
              f"({r['static'] / f:.2f}x) | {r['concat']:.1f} ({r['concat'] / f:.0f}x) | {r['grow']:.2f} |")


if __name__ == "__main__":
    main()
