"""``python -m lucid.demo``: decode with each cache on the selected backend and check it against no cache.

For each run (greedy with the dynamic cache, greedy with the static cache, beam
search, sliding window) it times cached decoding, then recomputes every step
without a cache and checks that the tokens are the same and the logits agree
within ``--tolerance``. Prints a table; exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lucid.cli import activate_backend, positive_int, tolerance
from lucid.generation import generate
from lucid.models import DecoderConfig, TinyDecoder


class Progress:
    """A one-line text progress bar on stderr (redrawn on a terminal, printed once when done otherwise)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.width, self.shown = total, label, 30, -1
        self.live = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        filled = self.width * done // self.total
        if filled == self.shown and done != self.total or (not self.live and done != self.total):
            return
        self.shown = filled
        sys.stderr.write(f"\r{self.label:<28s} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}")
        if done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lucid.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=300, help="new tokens per run (default 300)")
    parser.add_argument("--batch", type=positive_int, default=2, help="prompts decoded together (default 2)")
    parser.add_argument("--beams", type=positive_int, default=4, help="beams for the beam-search run (default 4)")
    parser.add_argument("--window", type=positive_int, default=64,
                        help="window of the sliding-window run (default 64)")
    parser.add_argument("--prompt-len", type=positive_int, default=16, help="prompt tokens (default 16)")
    parser.add_argument("--cache", choices=["dynamic", "static", "both"], default="both")
    parser.add_argument("--backend", choices=["numpy", "cupy", "auto"], help="overrides LUCID_BACKEND")
    parser.add_argument("--layers", type=positive_int, default=4, help="decoder layers (default 4)")
    parser.add_argument("--tolerance", type=tolerance, default=1e-4,
                        help="largest logit difference allowed (default 1e-4)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = activate_backend(args.backend)
    model = TinyDecoder(DecoderConfig(num_layers=args.layers))
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(args.batch, args.prompt_len))
    kinds = ["dynamic", "static"] if args.cache == "both" else [args.cache]
    runs = [(f"greedy, {kind}", kind, {}) for kind in kinds]
    runs.append((f"beams={args.beams}, {kinds[0]}", kinds[0], {"num_beams": args.beams}))
    runs.append((f"window={args.window}, {kinds[0]}", kinds[0], {"window": args.window}))
    print(f"lucid demo on {backend.name} ({backend.device}): {args.layers}-layer decoder, batch {args.batch}, "
          f"prompt {args.prompt_len}, {args.tokens} new tokens per run")
    rows, all_ok = [], True
    for label, kind, options in runs:
        start = time.perf_counter()
        cached = generate(model, prompt, args.tokens, cache=kind,
                          on_step=Progress(args.tokens, label), **options)
        seconds = time.perf_counter() - start
        plain = generate(model, prompt, args.tokens, cache="none",
                         on_step=Progress(args.tokens, label + " (no cache)"), **options)
        same = bool(np.array_equal(cached.tokens, plain.tokens))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(cached.step_logits, plain.step_logits))
        ok = same and diff <= args.tolerance
        all_ok &= ok
        rows.append((label, args.batch * args.tokens / seconds, cached.cache_bytes / 2**20, same, diff, ok))
    print("\n| run | tokens/s | cache MiB | same tokens | max logit diff | check |")
    print("|---|---:|---:|:---:|---:|:---:|")
    for label, rate, mib, same, diff, ok in rows:
        print(f"| {label} | {rate:,.0f} | {mib:.2f} | {'yes' if same else 'NO'} | {diff:.1e} | {'ok' if ok else 'FAILED'} |")
    print("\nall checks passed" if all_ok else "\nCHECK FAILED: cached decoding differs from recomputation")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
