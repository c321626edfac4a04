"""What a repeat into new buffers of the layer's capacity costs in bare NumPy, next to the floor.

    python benchmarks/fresh_capacity.py [--repeats 15]

``asv``'s ``Beams`` benchmark compares ``batch_repeat_interleave(4)`` on 12 layers of 1024
tokens (B=1, H=8, D=64, float32) with a floor that gathers the same rows into arrays of just
the live tokens (``np.take``). A static cache made without ``max_batch_size`` must put the four
rows into new buffers of its whole capacity (2048 positions here). This script times the least
that takes, with no cache code at all: ``np.empty`` of the capacity and one slice copy per row,
for the 24 buffers, against the floor's ``take``, calls taken in turns. On a machine whose
kernel backs large arrays with huge pages, the first has the kernel zero-fill twice the floor's
bytes, which no cache code can avoid; reserving the rows up front (``max_batch_size``) does.
"""
import argparse

import numpy as np

from timing import interleaved_medians

LAYERS, LIVE, CAPACITY, BEAMS = 12, 1024, 2048, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="calls of each, in turns (default 15)")
    args = parser.parse_args()
    live = [np.ones((1, 8, LIVE, 64), np.float32) for _ in range(2 * LAYERS)]
    held = [np.ones((1, 8, CAPACITY, 64), np.float32) for _ in range(2 * LAYERS)]
    rows = [0] * BEAMS

    def floor():
        return [np.take(a, np.asarray(rows), axis=0) for a in live]

    def into_capacity():
        out = []
        for a in held:
            new = np.empty((BEAMS, 8, CAPACITY, 64), np.float32)
            for i, row in enumerate(rows):
                new[i, :, :LIVE] = a[row, :, :LIVE]
            out.append(new)
        return out

    times = interleaved_medians({"floor": floor, "capacity": into_capacity}, args.repeats, pause=0.05)
    print(f"repeat 1 -> {BEAMS} rows, {LAYERS} layers x keys and values, {LIVE} live of {CAPACITY} positions:")
    print(f"floor (np.take of the live tokens): {times['floor'] * 1e3:.1f} ms")
    print(f"np.empty of the capacity + row copies: {times['capacity'] * 1e3:.1f} ms "
          f"({times['capacity'] / times['floor']:.2f}x)")


if __name__ == "__main__":
    main()
