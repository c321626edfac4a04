"""One decode step's attention over a paged cache: the blocks read where they lie against the
keys gathered into one array first (what every step did before), in one process, in turns.

    python benchmarks/paged_attention.py [--rows 32] [--min-len 576] [--max-len 1507] [--shared 512] [--repeats 15]

One layer of SmolLM2-135M's shape (9 query and 3 key/value heads of 64, float32), a
``PagedKVCache`` with blocks of 16 holding ``--rows`` sequences of seeded random lengths (the
many-requests workload: 576-1507 positions, the first ``--shared`` of them one system prompt
that every row holds on the same blocks, forks of one sequence); each step writes one token per row with its own
``cache_position`` and runs attention of one query per row with the model's mask. "in place":
``scaled_dot_product_attention`` over what ``update`` returns; "gathered": the same after
reading the returned tensors' arrays (the rows laid out in order, zeros past each row's
length). Medians over ``--repeats`` steps of each, taken in turns, in milliseconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import lucid
import lucid.nn as nn
from lucid.nn.functional import attention_mask, scaled_dot_product_attention

HEADS, KV_HEADS, DIM, BLOCK = 9, 3, 64, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--min-len", type=int, default=576)
    parser.add_argument("--max-len", type=int, default=1507)
    parser.add_argument("--shared", type=int, default=512, help="positions all rows share (0: none)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.min_len, args.max_len + 1, size=args.rows)
    steps = 2 * args.repeats + 2
    cache = nn.PagedKVCache(int(sum(-(-(n + steps) // BLOCK) for n in lengths)) + args.rows, block_size=BLOCK)
    shared = min(args.shared, int(lengths.min()) - 1)
    prompt = cache.add_sequence()
    if shared:
        k = lucid.Tensor(rng.standard_normal((1, KV_HEADS, shared, DIM), dtype=np.float32))
        cache.update(k, k, 0)
    seqs = []
    for n in lengths:
        cache.batch = []
        seqs.append(cache.fork(prompt))
        k = lucid.Tensor(rng.standard_normal((1, KV_HEADS, int(n) - shared, DIM), dtype=np.float32))
        cache.update(k, k, 0, cache_position=list(range(shared, int(n))))
    cache.remove_sequence(prompt)
    cache.batch = seqs
    new = lucid.Tensor(rng.standard_normal((args.rows, KV_HEADS, 1, DIM), dtype=np.float32))
    query = lucid.Tensor(rng.standard_normal((args.rows, HEADS, 1, DIM), dtype=np.float32))
    state = {"at": lengths.copy()}

    def step(gathered: bool) -> float:
        start = time.perf_counter()
        at = state["at"]
        keys, values = cache.update(new, new, 0, cache_position=lucid.Tensor(at[:, None]))
        if gathered:
            keys, values = lucid.Tensor.wrap(keys.array, keys.backend), lucid.Tensor.wrap(values.array, values.backend)
        mask = attention_mask(lucid.Tensor(at[:, None]), cache.key_positions(0))[:, None, ...]
        scaled_dot_product_attention(query, keys, values, attn_mask=mask)
        state["at"] = at + 1
        return (time.perf_counter() - start) * 1e3

    step(False), step(True)  # warm up
    times = {"in place": [], "gathered": []}
    for _ in range(args.repeats):
        times["in place"].append(step(False))
        times["gathered"].append(step(True))
    place, gathered = (statistics.median(times[name]) for name in ("in place", "gathered"))
    print(f"{args.rows} rows of {lengths.min()}-{lengths.max()} positions (the first {shared} shared), blocks of {BLOCK}, one layer "
          f"({HEADS} query / {KV_HEADS} key-value heads of {DIM}), threads: {lucid.get_backend().threads()}")
    print(f"- blocks in place: {place:.2f} ms per step (update + attention)")
    print(f"- gathered first:  {gathered:.2f} ms per step ({gathered / place:.2f}x in place)")


if __name__ == "__main__":
    main()
