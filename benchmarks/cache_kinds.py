"""Each cache kind side by side: bytes held and the cost of a decode step at 1k, 8k and 32k tokens.

    python benchmarks/cache_kinds.py [--lengths 1024 8192 32768] [--steps 41]

One layer shaped like SmolLM2-135M-Instruct's (9 query and 3 key/value heads of 64, float32,
batch 1). Each cache first holds T positions (one prefill update), then each decode step writes
one token with ``cache_position=[t]`` and runs attention of one query over what ``update``
returns, as a model's layer does. Reported per kind and T: the bytes the cache holds per
position it was given (``nbytes() / T``; a sliding window's fall as T grows past its window) and
the median step in microseconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

HEADS, KV_HEADS, DIM = 9, 3, 64


def kinds(length: int, steps: int) -> dict:
    """name -> a fresh cache of that kind, able to hold ``length + steps`` positions."""
    total = length + steps
    return {
        "dynamic": lambda: nn.DynamicKVCache(),
        "static": lambda: nn.StaticKVCache(max_cache_len=total, num_layers=1),
        "paged (blocks of 16)": lambda: nn.PagedKVCache(num_blocks=-(-total // 16) + 1, block_size=16),
        "sliding, window 4096 + 4 sinks": lambda: nn.SlidingWindowKVCache(4096, sink_tokens=4),
        "quantized 8-bit": lambda: nn.QuantizedKVCache(bits=8, group_size=64, residual_length=128),
        "quantized 4-bit": lambda: nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128),
    }


def measure(make, length: int, steps: int) -> tuple[float, float]:
    """(bytes per position after the prefill, median decode step in microseconds)."""
    cache = make()
    if isinstance(cache, nn.PagedKVCache):
        cache.add_sequence()
    prompt = lucid.randn(1, KV_HEADS, length, DIM)
    cache.update(prompt, prompt, 0)
    held = cache.nbytes() / length
    k, q = lucid.randn(1, KV_HEADS, 1, DIM), lucid.randn(1, HEADS, 1, DIM)
    times = []
    for t in range(length, length + steps):
        start = time.perf_counter()
        keys, values = cache.update(k, k, 0, cache_position=[t])
        F.scaled_dot_product_attention(q, keys, values)
        times.append(time.perf_counter() - start)
    return held, statistics.median(times[1:]) * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768])
    parser.add_argument("--steps", type=int, default=41)
    args = parser.parse_args(argv)
    lucid.manual_seed(0)
    rows = {}
    for length in args.lengths:
        for name, make in kinds(length, args.steps).items():
            rows.setdefault(name, []).append(measure(make, length, args.steps))
    heads = " | ".join(f"bytes/position at {n:,}" for n in args.lengths)
    steps = " | ".join(f"step at {n:,} (us)" for n in args.lengths)
    print(f"| cache | {heads} | {steps} |")
    print("|---|" + "---:|" * (2 * len(args.lengths)))
    for name, cells in rows.items():
        held = " | ".join(f"{h:,.0f}" for h, _ in cells)
        cost = " | ".join(f"{s:,.0f}" for _, s in cells)
        print(f"| {name} | {held} | {cost} |")


if __name__ == "__main__":
    main()
