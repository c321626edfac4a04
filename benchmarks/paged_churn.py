"""Memory a PagedKVCache holds against the positions its sequences hold, under churn: requests of
random lengths arrive, grow by decode steps, and finish at random times.

    python benchmarks/paged_churn.py                       # 200 requests of 16-2048 tokens
    python benchmarks/paged_churn.py --requests 500 --block-size 32

Memory held is the blocks in use times their positions; live is the sum of the sequences'
lengths. The ratio is sampled after every arrival and departure; the median and the worst are
printed, with the same for a DynamicKVCache per request (its buffers grow by half).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

import lucid
import lucid.nn as nn
from lucid.cli import activate_backend, positive_int


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=positive_int, default=200)
    parser.add_argument("--block-size", type=positive_int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    activate_backend(None)
    rng = np.random.default_rng(args.seed)
    paged = nn.PagedKVCache(num_blocks=args.requests * 2048 // args.block_size, block_size=args.block_size)
    dynamic: dict[int, nn.DynamicKVCache] = {}
    live: dict[int, int] = {}
    paged_ratios, dynamic_ratios = [], []
    for _ in range(args.requests):
        seq = paged.add_sequence()
        paged.batch = [seq]
        length = int(rng.integers(16, 2049))
        prompt = int(rng.integers(8, length + 1))  # a prefill, then one-token decode steps up to the length
        k = lucid.zeros(1, 1, 1, 1)
        paged.update(lucid.zeros(1, 1, prompt, 1), lucid.zeros(1, 1, prompt, 1), 0)
        dynamic[seq] = nn.DynamicKVCache()
        dynamic[seq].update(lucid.zeros(1, 1, prompt, 1), lucid.zeros(1, 1, prompt, 1), 0)
        for _ in range(length - prompt):
            paged.update(k, k, 0)
            dynamic[seq].update(k, k, 0)
        live[seq] = length
        if len(live) > 1 and rng.random() < 0.5:  # a request finishes
            gone = int(rng.choice(list(live)))
            paged.remove_sequence(gone)
            del live[gone], dynamic[gone]
        held = paged.blocks_used() * args.block_size
        paged_ratios.append(held / sum(live.values()))
        dynamic_ratios.append(sum(c.layers[0].capacity for c in dynamic.values()) / sum(live.values()))
    print(f"{args.requests} requests of 16-2048 tokens, blocks of {args.block_size}; memory held / positions live, "
          "sampled after each arrival and departure:")
    print(f"- PagedKVCache: median {statistics.median(paged_ratios):.3f}, worst {max(paged_ratios):.3f}")
    print(f"- a DynamicKVCache per request: median {statistics.median(dynamic_ratios):.3f}, "
          f"worst {max(dynamic_ratios):.3f}")


if __name__ == "__main__":
    main()
