"""Requests of different lengths decoded together (one paged cache, each row at its own position:
``generate`` with a list of prompts, and the continuous-batching ``Engine`` with all requests
queued at once) against the same requests one after another, on the real model.

    python benchmarks/ragged_batch.py                     # 8 prompts of 192-512 tokens, 32 new tokens
    python benchmarks/ragged_batch.py --requests 16 --tokens 64

Prompts share a 128-token system prompt (its blocks are computed once and shared). Reports
aggregate new tokens per second both ways, and checks that every request's greedy tokens are
the same both ways.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lucid.cli import activate_backend, positive_int
from lucid.generation import generate
from lucid.models import download, load_pretrained
from lucid.serving import Engine


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=positive_int, default=8)
    parser.add_argument("--tokens", type=positive_int, default=32)
    args = parser.parse_args(argv)
    activate_backend(None)
    model = load_pretrained(download("smollm2-135m-instruct"))
    rng = np.random.default_rng(0)
    system = rng.integers(0, model.config.vocab_size, size=128).tolist()
    prompts = [system + rng.integers(0, model.config.vocab_size, size=int(n)).tolist()
               for n in rng.integers(64, 385, size=args.requests)]  # 192 to 512 tokens in all
    start = time.perf_counter()
    alone = [generate(model, [prompt], args.tokens).tokens[0] for prompt in prompts]
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    together = generate(model, prompts, args.tokens)
    batched = time.perf_counter() - start
    engine = Engine(model, num_blocks=sum(-(-(len(p) + args.tokens) // 16) for p in prompts) + len(prompts))
    start = time.perf_counter()
    ids = [engine.add_request(prompt, max_new_tokens=args.tokens) for prompt in prompts]
    while engine.has_unfinished():
        engine.step()
    served = time.perf_counter() - start
    same = all(np.array_equal(a, b) for a, b in zip(alone, together.tokens))
    same &= all(engine.tokens(i) == a[len(p):].tolist() for i, a, p in zip(ids, alone, prompts))
    new = args.tokens * args.requests
    lengths = sorted(len(p) for p in prompts)
    print(f"SmolLM2-135M-Instruct, {args.requests} prompts of {lengths[0]}-{lengths[-1]} tokens (a shared 128-token "
          f"system prompt), {args.tokens} new tokens each; identical tokens: {same}")
    print(f"- one after another: {new / sequential:.1f} new tokens/s ({sequential:.1f} s)")
    print(f"- together, one paged cache: {new / batched:.1f} new tokens/s ({batched:.1f} s; "
          f"{sequential / batched:.2f}x)")
    print(f"- the Engine, all queued at once: {new / served:.1f} new tokens/s ({served:.1f} s; "
          f"{sequential / served:.2f}x)")


if __name__ == "__main__":
    main()
