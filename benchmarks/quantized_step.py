"""One decode step of SmolLM2-135M-Instruct at a long context, with the exact and the quantized caches.

Every cache first holds ``--context`` positions (a prefill of seeded random tokens); then each
timed call decodes ``--steps`` tokens one at a time (update and attention of all 30 layers, and
the rest of the model), in turns with the other caches. Reported: milliseconds per step
(median over ``--repeats`` calls), the ratio to the dynamic cache's step, and the bytes each
cache holds against the dynamic cache's. With ``--transformers``, transformers' own model on the
same file does the same with its ``DynamicCache`` and its quanto ``QuantizedCache`` (4 bits,
groups of 64, residual 128), in the same turns.

    python benchmarks/quantized_step.py [--context 4096] [--steps 8] [--repeats 5] [--transformers]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from timing import interleaved_medians


def lucid_runs(model, context: np.ndarray, steps: int) -> tuple[dict, dict]:
    from lucid import nn

    caches = {"lucid dynamic": nn.DynamicKVCache(),
              "lucid quantized 8-bit": nn.QuantizedKVCache(bits=8, group_size=64, residual_length=128),
              "lucid quantized 4-bit": nn.QuantizedKVCache(bits=4, group_size=64, residual_length=128)}
    runs = {}
    for name, cache in caches.items():
        logits = model.forward(context, cache=cache, logits_to_keep=1).numpy()
        state = {"next": int(logits[0, -1].argmax())}

        def run(cache=cache, state=state):
            for _ in range(steps):
                out = model.forward(np.array([[state["next"]]]), cache=cache, logits_to_keep=1).numpy()
                state["next"] = int(out[0, -1].argmax())

        runs[name] = run
    return runs, {name: cache.nbytes() for name, cache in caches.items()}


def transformers_runs(path, context: np.ndarray, steps: int) -> tuple[dict, dict]:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    caches = {"transformers dynamic": transformers.DynamicCache(config=model.config),
              "transformers quanto 4-bit": transformers.QuantizedCache(
                  backend="quanto", config=model.config, nbits=4, q_group_size=64, residual_length=128)}
    runs = {}
    for name, cache in caches.items():
        with torch.no_grad():
            logits = model(torch.tensor(context), past_key_values=cache, use_cache=True).logits
        state = {"next": int(logits[0, -1].argmax())}

        def run(cache=cache, state=state):
            with torch.no_grad():
                for _ in range(steps):
                    out = model(torch.tensor([[state["next"]]]), past_key_values=cache, use_cache=True).logits
                    state["next"] = int(out[0, -1].argmax())

        runs[name] = run
    return runs, {}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="threads of every library (default 2)")
    parser.add_argument("--transformers", action="store_true", help="transformers' caches too (the compare extra)")
    args = parser.parse_args(argv)
    os.environ["LUCID_NUM_THREADS"] = str(args.threads)
    import threadpoolctl

    from lucid.models import download, load_pretrained

    threadpoolctl.threadpool_limits(args.threads)
    path = download()
    model = load_pretrained(path)
    context = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(1, args.context))
    runs, sizes = lucid_runs(model, context, args.steps)
    if args.transformers:
        import torch

        torch.set_num_threads(args.threads)
        theirs, _ = transformers_runs(path, context, args.steps)
        runs.update(theirs)
    seconds = interleaved_medians(runs, args.repeats)
    print(f"SmolLM2-135M-Instruct, {args.context} positions of context, {args.steps} steps per call, median of "
          f"{args.repeats} calls in turns, {args.threads} thread(s)")
    print("| cache | ms per step | / dynamic | bytes / dynamic |")
    print("|---|---:|---:|---:|")
    for name, value in seconds.items():
        base = seconds[name.split(" ")[0] + " dynamic"]
        size = f"{sizes[name] / sizes['lucid dynamic']:.2f}x" if name in sizes else ""
        print(f"| {name} | {value / args.steps * 1e3:.1f} | {value / base:.2f}x | {size} |")


if __name__ == "__main__":
    sys.exit(main())
