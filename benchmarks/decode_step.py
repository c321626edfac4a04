"""Median cost of one decode-step ``update`` next to the floor, on the path models take.

    python benchmarks/decode_step.py [--lengths 128 1024 4096 16384] [--samples 101] [--number 20]
    LUCID_BACKEND=cupy python benchmarks/decode_step.py

One token (B=1, H=8, D=64, float32) is written to layer 0 of a cache that starts with T
tokens, and the two views of the layer come back. Two ways of calling ``update``:

* ``cache_position=[t]``: what a model sends every step (lucid's decoder, Hugging Face's);
* ``cache_position=None``: a plain append.

The floor writes the same bytes at the same advancing positions with two in-place slice
assignments into preallocated buffers whose pages are already touched, and makes the two
views of the live tokens that a cache returns: no checks, no wrappers. The caches touch
their buffers when they allocate them (the static cache at its first write, the dynamic
cache when it grows), so that cost is not in the steps; the last column includes it.

Every variant runs ``--number`` consecutive steps per sample; samples of the variants are
interleaved, in an order that rotates from sample to sample, so they share the machine's
noise and none is favoured by going first; each figure is the median over samples, per step.
The steps advance from T to T + samples x number (no reset between samples: a reset would
move megabytes and evict the CPU caches the next steps use).

Each cache kind is interleaved with a floor of its own, not with the other kind. Both kinds'
layers share one ``update`` method, and CPython (3.11 on) specializes each attribute access in
it for the class it last saw: alternating a dynamic and a static cache every few steps keeps
those specializations missing (about 0.2 us a step here), which no model does.

The last column appends T tokens one by one to an empty DynamicKVCache and reports the mean
per step: the amortized cost with every reallocation included.
"""
from __future__ import annotations

import argparse
import statistics
import time

import lucid
import lucid.nn as nn
from lucid.cli import activate_backend

B, H, D = 1, 8, 64


def make_variants(kind: str, length: int, steps: int, k, v) -> dict:
    """name -> a function doing the decode step that writes position ``t``: the floor and
    ``kind``'s two ways of calling ``update``."""
    xp = lucid.get_backend().xp
    capacity = length + steps + 1
    floor_k = xp.ones((B, H, capacity, D), dtype=xp.float32)  # ones: every page touched
    floor_v = xp.ones((B, H, capacity, D), dtype=xp.float32)
    kd, vd = k.array, v.array

    def floor(t):
        end = t + 1
        floor_k[..., t:end, :] = kd
        floor_v[..., t:end, :] = vd
        return floor_k[..., :end, :], floor_v[..., :end, :]

    variants = {"floor": floor}
    prefill_k, prefill_v = lucid.randn(B, H, length, D), lucid.randn(B, H, length, D)
    for mode in ("[t]", "None"):
        cache = nn.DynamicKVCache() if kind == "dynamic" else nn.StaticKVCache(capacity, 1)
        cache.update(prefill_k, prefill_v, 0)
        update = cache.update
        if mode == "None":
            variants[f"{kind}, None"] = lambda t, update=update: update(k, v, 0)
        else:
            variants[f"{kind}, [t]"] = lambda t, update=update: update(k, v, 0, cache_position=[t])
    return variants


def measure(kind: str, length: int, number: int, samples: int) -> dict:
    """Median seconds per step of the floor and of ``kind``'s variants, interleaved."""
    sync = lucid.get_backend().synchronize
    k, v = lucid.randn(B, H, 1, D), lucid.randn(B, H, 1, D)
    variants = make_variants(kind, length, number * samples, k, v)
    names = list(variants)
    times = {name: [] for name in names}
    for sample in range(samples):
        positions = range(length + sample * number, length + (sample + 1) * number)
        turn = sample % len(names)  # rotate the order: the variant run first has warmer CPU caches
        for name in names[turn:] + names[:turn]:
            step = variants[name]
            sync()
            start = time.perf_counter()
            for t in positions:
                step(t)
            sync()
            times[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(t) for name, t in times.items()}


def grow_mean(length: int) -> float:
    """Mean seconds per step appending ``length`` tokens one by one to an empty DynamicKVCache
    (median of 5 runs)."""
    sync = lucid.get_backend().synchronize
    k, v = lucid.randn(B, H, 1, D), lucid.randn(B, H, 1, D)

    def grow():
        cache = nn.DynamicKVCache()
        sync()
        start = time.perf_counter()
        for _ in range(length):
            cache.update(k, v, 0)
        sync()
        return (time.perf_counter() - start) / length

    return statistics.median(grow() for _ in range(5))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096, 16384])
    parser.add_argument("--number", type=int, default=20, help="steps per sample")
    parser.add_argument("--samples", type=int, default=101)
    args = parser.parse_args(argv)
    backend = activate_backend(None)  # a backend that cannot run: one line, exit status 2
    print(f"backend {backend.name} ({backend.device}); B={B} H={H} D={D} float32, one token per step; "
          f"median of {args.samples} interleaved samples x {args.number} steps; us per step (x floor)")
    print("| T | cache | floor | `cache_position=[t]` | `cache_position=None` | dynamic from empty, mean |")
    print("|---:|---|---:|---:|---:|---:|")
    for length in args.lengths:
        for kind in ("dynamic", "static"):
            r = {key: value * 1e6 for key, value in measure(kind, length, args.number, args.samples).items()}
            f = r["floor"]
            cells = " | ".join(f"{r[f'{kind}, {mode}']:.2f} ({r[f'{kind}, {mode}'] / f:.2f}x)" for mode in ("[t]", "None"))
            grow = f"{grow_mean(length) * 1e6:.2f}" if kind == "dynamic" else ""
            print(f"| {length} | {kind} | {f:.2f} | {cells} | {grow} |")


if __name__ == "__main__":
    main()
