"""CPU instructions per decode-step ``update``, next to the floor: a count that does not drift.

    python benchmarks/step_instructions.py             # needs valgrind (Debian: apt-get install valgrind)
    python benchmarks/step_instructions.py "cache [t]"  # the floor and the variants named

The same step as ``decode_step.py`` (one token, B=1, H=8, D=64, float32, into a static cache of
1024 tokens; the two views come back), counted with ``valgrind --tool=callgrind`` instead of
timed: each variant runs 1,000 and then 6,000 steps in a fresh interpreter, and the difference
over 5,000 is the count of one step, start-up and set-up cancelled. OpenBLAS is held to one
thread and the hash seed fixed, so that the counts repeat exactly.

Variants: the floor (two slice assignments, two views); ``update`` through the cache with
``cache_position=[t]`` (the model's path) and with none; the layer's own ``update`` with
``[t]`` (the cache's dispatch is the difference); sliding windows of 64 and 4096 without sinks
and with 4, and of 64 with 64 sinks (the same count at any window and any number of sinks is
the point).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

STEPS = (1_000, 6_000)
#: Sliding-window variants: (window, sinks).
SLIDING = {"sliding 64 [t]": (64, 0), "sliding 4096 [t]": (4096, 0), "sliding 64+4 sinks [t]": (64, 4),
           "sliding 4096+4 sinks [t]": (4096, 4), "sliding 64+64 sinks [t]": (64, 64)}
VARIANTS = ("floor", "cache [t]", "cache None", "layer [t]", *SLIDING)


def run(variant: str, steps: int) -> None:
    """The steps themselves (in the interpreter valgrind watches)."""
    import lucid
    import lucid.nn as nn

    batch, heads, dim, length = 1, 8, 64, 1024
    xp = lucid.get_backend().xp
    k, v = lucid.randn(batch, heads, 1, dim), lucid.randn(batch, heads, 1, dim)
    kd, vd = k.array, v.array
    capacity = length + steps + 1
    floor_k = xp.ones((batch, heads, capacity, dim), dtype=xp.float32)
    floor_v = xp.ones((batch, heads, capacity, dim), dtype=xp.float32)
    cache = nn.StaticKVCache(capacity, 1)
    cache.update(lucid.randn(batch, heads, length, dim), lucid.randn(batch, heads, length, dim), 0)
    layer, update = cache.layers[0], cache.update

    def floor(t):
        end = t + 1
        floor_k[..., t:end, :] = kd
        floor_v[..., t:end, :] = vd
        return floor_k[..., :end, :], floor_v[..., :end, :]

    def sliding(window, sinks):  # prefilled past the window: every counted step slides it
        target = nn.SlidingWindowKVCache(window, sink_tokens=sinks)
        target.update(lucid.randn(batch, heads, length, dim), lucid.randn(batch, heads, length, dim), 0)
        target.update(lucid.randn(batch, heads, window, dim), lucid.randn(batch, heads, window, dim), 0)
        return lambda t: target.update(k, v, 0, cache_position=[t + window])

    if variant in SLIDING:
        step = sliding(*SLIDING[variant])
    else:
        step = {"floor": floor, "cache [t]": lambda t: update(k, v, 0, cache_position=[t]),
                "cache None": lambda t: update(k, v, 0), "layer [t]": lambda t: layer.update(k, v, [t])}[variant]
    for t in range(length, length + steps):
        step(t)


def instructions(variant: str, steps: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--run", variant, str(steps)],
        env=env, capture_output=True, text=True, check=True)
    line = next(line for line in result.stderr.splitlines() if "Collected" in line)
    return int(line.split()[-1])


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: install it (Debian: apt-get install valgrind)")
    wanted = [v for v in VARIANTS if v == "floor" or not sys.argv[1:] or v in sys.argv[1:]]
    print(f"instructions per step (callgrind, ({STEPS[1]:,} - {STEPS[0]:,} steps) / {STEPS[1] - STEPS[0]:,})")
    floor = None
    for variant in wanted:
        low, high = (instructions(variant, steps) for steps in STEPS)
        per_step = (high - low) / (STEPS[1] - STEPS[0])
        floor = floor or per_step
        print(f"- {variant}: {per_step:,.0f} ({per_step / floor:.2f}x the floor)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        run(sys.argv[2], int(sys.argv[3]))
    else:
        main()
