"""Prefill tokens/s of lucid and transformers on SmolLM2-135M-Instruct, side by side.

    pip install -e ".[compare]"
    python benchmarks/prefill.py [--threads 1] [--rows 1x128,1x1024,1x4096,8x128,8x1024,8x4096] [--repeats 3]

Both libraries load the GGUF file that ``lucid.models.download`` fetches (float32 weights
dequantized at load) and run on ``--threads`` threads (BLAS, torch and lucid's own pool).
A prefill is one forward over a batch of random prompts into a new cache, keeping the logits
of the last position only (what generation does before its first token): lucid's
``model.forward(ids, cache=DynamicKVCache(), logits_to_keep=1)``, transformers'
``model(ids, use_cache=True, logits_to_keep=1)``. Each figure is the median of ``--repeats``
calls, the two libraries taken in turns (after a warm-up call each, but for the rows of more
than 8,192 tokens); tokens/s counts every prompt token of every row.
The number of threads is fixed when the libraries start: run the script once per setting.
``--profile 1x1024`` prints instead where lucid's prefill of that row spends its time.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from smollm2_pair import load_smollm2_pair
from timing import interleaved_medians


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="1x128,1x1024,1x4096,8x128,8x1024,8x4096",
                        help="batch x prompt length, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", metavar="BxT",
                        help="instead of the table: where lucid's prefill of this row spends its time (cProfile, "
                             "the functions with the most time of their own)")
    args = parser.parse_args(argv)
    path, ours, theirs, torch, transformers = load_smollm2_pair(args.threads)
    import lucid.nn as nn

    if args.profile:
        return _profile(ours, nn, *(int(x) for x in args.profile.split("x")))
    print(f"SmolLM2-135M-Instruct prefill, {args.threads} thread(s), median of {args.repeats} in turns; "
          f"transformers {transformers.__version__}, torch {torch.__version__}")
    print("| batch | prompt | lucid tok/s | transformers tok/s | lucid / transformers |")
    print("|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for row in args.rows.split(","):
        batch, length = (int(x) for x in row.split("x"))
        ids = rng.integers(100, ours.config.vocab_size, size=(batch, length))
        their_ids = torch.tensor(ids)

        def lucid_prefill(ids=ids):
            ours.forward(ids, cache=nn.DynamicKVCache(), logits_to_keep=1)

        def their_prefill(their_ids=their_ids):
            with torch.no_grad():
                theirs(their_ids, use_cache=True, logits_to_keep=1)

        if batch * length <= 8192:  # a warm-up (first-call allocations); the longest rows take minutes
            lucid_prefill(), their_prefill()
        t = interleaved_medians({"lucid": lucid_prefill, "transformers": their_prefill}, args.repeats)
        ours_rate, their_rate = batch * length / t["lucid"], batch * length / t["transformers"]
        print(f"| {batch} | {length} | {ours_rate:,.0f} | {their_rate:,.0f} | {ours_rate / their_rate:.2f}x |",
              flush=True)
    return 0


def _profile(model, nn, batch: int, length: int) -> int:
    import cProfile
    import pstats

    ids = np.random.default_rng(0).integers(100, model.config.vocab_size, size=(batch, length))
    model.forward(ids, cache=nn.DynamicKVCache(), logits_to_keep=1)  # warm-up
    profiler = cProfile.Profile()
    profiler.runcall(model.forward, ids, cache=nn.DynamicKVCache(), logits_to_keep=1)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
