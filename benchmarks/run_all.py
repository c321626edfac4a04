"""Every command whose figures the docs quote, run one after another, each output kept with a stamp.

    python benchmarks/run_all.py [--only NAME ...] [--list] [--out DIR]

Each command's output goes to ``DIR/NAME.txt`` (default ``benchmarks/results/DATE-COMMIT``),
headed by the commit (and whether the tree had uncommitted changes), the date, the machine and
its load average before and after the command: figures taken while the machine was busy say so.
The docs' tables are then copied from those files. ``tests/test_benchmark_commands.py`` checks
that every command the docs quote is in :data:`COMMANDS`, so none is left out of a full rerun.

A full run takes hours on a 2-core machine (the peer comparisons and the serving load most of it);
``--only`` picks some. Commands that need the ``compare`` extra, llama.cpp or a Redis server fail
on a machine without them; the others still run, and the failures are listed at the end.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable

#: name -> (directory it runs in, the command as the docs quote it).
COMMANDS = {
    "decode_step": (".", "python benchmarks/decode_step.py"),
    "fresh_capacity": (".", "python benchmarks/fresh_capacity.py"),
    "asv_all": ("asv_bench", "asv run --python=same -a rounds=1"),
    "asv_family_sliding": ("asv_bench", 'asv run --python=same --bench "bench_family.SinksStep|bench_family.SlidingWindowStep" -a repeat=9'),
    "asv_family_quantized": ("asv_bench", 'asv run --python=same --bench "bench_family.Quantized"'),
    "asv_demo": ("asv_bench", "asv run --python=same -a rounds=2 --bench bench_demo"),
    "asv_beams": ("asv_bench", "asv run --python=same -a rounds=3 --bench Beams"),
    "asv_beams_malloc": ("asv_bench", "MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=1000000000 asv run "
                                      "--python=same -a rounds=3 --bench bench_cache.Beams"),
    "asv_first_step": ("asv_bench", "asv run --python=same -a rounds=1 --bench FirstStepAfterPrefill"),
    "asv_peer_llama": ("asv_bench", "asv run --python=same --bench PeerGenerateLlamaRatio"),
    "asv_peer_smollm2": ("asv_bench", "asv run --python=same --quick --bench PeerSmolLM2Ratio"),
    "step_instructions": (".", 'python benchmarks/step_instructions.py "cache [t]" "sliding 64 [t]" "sliding 4096 [t]" '
                               '"sliding 64+4 sinks [t]" "sliding 4096+4 sinks [t]" "sliding 64+64 sinks [t]"'),
    "sliding_step": (".", "python benchmarks/sliding_step.py"),
    "demo": (".", "python -m lucid.demo"),
    "demo_tiny": (".", "python -m lucid.demo --model tiny"),
    "prefix_store": (".", "python benchmarks/prefix_store.py"),
    "llama_vs_transformers": (".", "python benchmarks/llama_vs_transformers.py --profile --repeats 7"),
    "smollm2_vs_peers": (".", "python benchmarks/smollm2_vs_peers.py --repeats 3"),
    "prefill_1_thread": (".", "python benchmarks/prefill.py --threads 1"),
    "prefill_2_threads": (".", "python benchmarks/prefill.py --threads 2"),
    "linear_shapes": (".", "python benchmarks/linear_shapes.py"),
    "linear_shapes_decode": (".", "python benchmarks/linear_shapes.py --tokens 1 2 8"),
    "prefill_attention": (".", "python benchmarks/prefill_attention.py"),
    "prefill_attention_2_threads": (".", "python benchmarks/prefill_attention.py --threads 2"),
    "prefill_profile": (".", "python benchmarks/prefill.py --profile 1x1024"),
    "prefill_profile_4096": (".", "python benchmarks/prefill.py --profile 1x4096"),
    "model_memory": (".", "python benchmarks/model_memory.py"),
    "paged_churn": (".", "python benchmarks/paged_churn.py"),
    "paged_attention": (".", "python benchmarks/paged_attention.py"),
    "paged_attention_unshared": (".", "python benchmarks/paged_attention.py --shared 0"),
    "asv_serving": ("asv_bench", "asv run --python=same --bench bench_serving"),
    "prompt_lookup": (".", "python benchmarks/prompt_lookup.py --rounds 3"),
    "ragged_batch": (".", "python benchmarks/ragged_batch.py --tokens 64"),
    "ragged_batch_long": (".", "python benchmarks/ragged_batch.py --requests 32 --system 512 --min-prompt 64 "
                               "--max-prompt 1024 --tokens 128 --skip-generate --transformers"),
    "serve_load_peers": (".", "python benchmarks/serve_load.py --clients 1 8 32 --requests 3 --hang-up 0 "
                              "--servers lucid llama.cpp transformers transformers-cb"),
    "serve_load": (".", "python benchmarks/serve_load.py --clients 32 --requests 20"),
    "quantized_step": (".", "python benchmarks/quantized_step.py --transformers"),
    "quantized_accuracy": (".", "python benchmarks/quantized_accuracy.py --transformers"),
    "cache_kinds": (".", "python benchmarks/cache_kinds.py"),
}


def stamp() -> str:
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain") else ""
    return (f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
            f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(name: str, out: pathlib.Path) -> bool:
    where, command = COMMANDS[name]
    argv = command.replace("python ", f"{PY} ", 1) if command.startswith("python ") else command
    before = load()
    done = subprocess.run(argv, shell=True, cwd=ROOT / where, capture_output=True, text=True)
    with open(out / f"{name}.txt", "w") as f:
        f.write(f"# {command}\n# {stamp()}\n# load average before: {before}; after: {load()}; exit {done.returncode}\n\n")
        f.write(done.stdout)
        if done.returncode:
            f.write("\n# stderr\n" + done.stderr[-20000:])
    return done.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(COMMANDS), help="run these only")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    parser.add_argument("--out", type=pathlib.Path, help="where the outputs go")
    args = parser.parse_args(argv)
    if args.list:
        for name, (where, command) in COMMANDS.items():
            print(f"{name:24s} (in {where}) {command}")
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = args.out or ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-{commit}"
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.only or COMMANDS:
        print(f"{name} ...", flush=True)
        if not run(name, out):
            failed.append(name)
    print(f"outputs in {out}" + (f"; failed: {', '.join(failed)} (their files end with the error)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
