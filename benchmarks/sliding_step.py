"""One-token steps of the sliding-window cache against the floor, at every window and sink count.

    python benchmarks/sliding_step.py [--lengths 1024 8192 32768] [--repeats 9]

What asv's ``SlidingWindowStep`` and ``SinksStep`` time, as one table: after a prefill of each
length, 1,000 steps of ``update(k, v, 0, cache_position=[t])`` (B=1, H=8, D=64, float32) for a
``SlidingWindowKVCache`` of window 64, 4,096 and 65,536 with 0, 4 and 64 sinks, beside the floor
(two bare slice writes and two views, asv's ``Floor``) and the dynamic cache. Every variant
runs its 1,000 steps in turn within each repeat; the table gives medians over the repeats, in
microseconds per step, and the ratio to the floor's median.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asv_bench" / "benchmarks"))
from common import Floor, raw, tokens  # noqa: E402 - asv's floor and token tensors

import lucid.nn as nn  # noqa: E402

STEPS = 1000
WINDOWS = (64, 4096, 65536)
SINKS = (0, 4, 64)


def variants(length: int, repeats: int) -> dict:
    """name -> step(t), each prefilled with ``length`` tokens."""
    k, prefill = tokens("B1-H8-D64", 1), tokens("B1-H8-D64", length)
    kd = raw(k)
    floor = Floor(kd, length + repeats * STEPS + 1)
    floor.update(raw(prefill), raw(prefill))
    steps = {"floor": lambda t: floor.update(kd, kd)}
    caches = {"dynamic": nn.DynamicKVCache()}
    caches.update({f"window {w}, {s} sinks": nn.SlidingWindowKVCache(w, sink_tokens=s) for w in WINDOWS for s in SINKS})
    for name, cache in caches.items():
        cache.update(prefill, prefill, 0)
        steps[name] = lambda t, update=cache.update: update(k, k, 0, cache_position=[t])
    return steps


def measure(length: int, repeats: int) -> dict:
    """name -> median microseconds per step, every variant in turn within each repeat."""
    steps, samples = variants(length, repeats), {}
    for rep in range(repeats):
        for name, step in steps.items():
            first = length + rep * STEPS
            start = time.perf_counter()
            for t in range(first, first + STEPS):
                step(t)
            samples.setdefault(name, []).append((time.perf_counter() - start) / STEPS * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    results = {length: measure(length, args.repeats) for length in args.lengths}
    print("| cache | " + " | ".join(f"after {length:,} tokens" for length in args.lengths) + " |")
    print("|---|" + "---:|" * len(args.lengths))
    for name in results[args.lengths[0]]:
        cells = [f"{results[n][name]:.2f} us ({results[n][name] / results[n]['floor']:.2f}x)" for n in args.lengths]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
