"""The matrix products of a SmolLM2 layer on NumPy's BLAS and on torch's, one thread each.

    pip install -e ".[compare]"
    python benchmarks/linear_shapes.py [--repeats 15] [--tokens 128 1024]
    python benchmarks/linear_shapes.py --tokens 1 2 8    # a decode step's rows

For each projection of SmolLM2-135M (hidden 576, intermediate 1536; the MLP's gate and up as
one product of 3072 columns, as lucid runs them) and each number of tokens (the rows of ``x``;
by default a prefill's 128 and 1024): the median time of ``x @ w`` in NumPy (OpenBLAS, as
NumPy's wheels ship it) and of ``torch.nn.functional.linear`` (torch's CPU wheels: oneMKL),
float32 on random values, and the rate of each in GFLOP/s. A prefill's projections are most of
its time, so this is the floor either library's prefill stands on. With a decode step's few
rows (``--tokens 1 2 8``), one row's product (a matrix-vector product) against a few rows' shows
what a batch's decode step costs beyond reading the weights.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from timing import median_seconds

from lucid.cli import positive_int

SHAPES = [("q, o", 576, 576), ("k, v", 576, 192), ("gate + up", 576, 3072), ("down", 1536, 576)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[128, 1024], help="rows of x (default 128 1024)")
    args = parser.parse_args(argv)
    import threadpoolctl
    import torch

    threadpoolctl.threadpool_limits(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"one thread each; numpy {np.__version__}, torch {torch.__version__}; median of {args.repeats}")
    print("| tokens | product | in x out | numpy ms | GFLOP/s | torch ms | GFLOP/s | numpy / torch time |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for tokens in args.tokens:
        for name, rows, cols in SHAPES:
            x = rng.standard_normal((tokens, rows)).astype(np.float32)
            w = rng.standard_normal((rows, cols)).astype(np.float32)
            tx, tw = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
            ours = 1e3 * median_seconds(lambda x=x, w=w: x @ w, args.repeats)
            theirs = 1e3 * median_seconds(lambda tx=tx, tw=tw: torch.nn.functional.linear(tx, tw), args.repeats)
            flop = 2 * tokens * rows * cols / 1e6
            print(f"| {tokens} | {name} | {rows} x {cols} | {ours:.3f} | {flop / ours:.0f} | {theirs:.3f} | "
                  f"{flop / theirs:.0f} | {ours / theirs:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
