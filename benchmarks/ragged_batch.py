"""Requests of different lengths decoded together (one paged cache, each row at its own position:
``generate`` with a list of prompts, and the continuous-batching ``Engine`` with all requests
queued at once) against the same requests one after another, on the real model; optionally
transformers' continuous batching (``generate_batch``, its paged cache) on the same weights.

    python benchmarks/ragged_batch.py                     # 8 prompts: a 128-token system prompt + 64-384
    python benchmarks/ragged_batch.py --requests 32 --system 512 --min-prompt 64 --max-prompt 1024 \\
        --tokens 128 --skip-generate --transformers      # the many-requests issue's workload

Reports aggregate new tokens per second each way, checks that every request's greedy tokens are
the same each way (transformers': how many agree), and the engine's KV memory: positions its
blocks hold over the distinct positions of the live requests (the system prompt once), the
worst over its steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lucid.cli import activate_backend, positive_int
from lucid.generation import generate
from lucid.models import download, load_pretrained
from lucid.serving import Engine


def run_engine(model, prompts: list, tokens: int, system: int):
    """The engine with every request queued at once: seconds, tokens per request, worst
    held/distinct, and each step as ``(whether it prefilled a prompt chunk, decoding rows, seconds)``."""
    engine = Engine(model, num_blocks=sum(-(-(len(p) + tokens) // 16) for p in prompts) + len(prompts))
    start, worst, steps = time.perf_counter(), 0.0, []
    ids = [engine.add_request(prompt, max_new_tokens=tokens) for prompt in prompts]
    while engine.has_unfinished():
        chunk, rows, began = bool(engine.waiting), len(engine.running), time.perf_counter()
        engine.step()
        steps.append((chunk, rows, time.perf_counter() - began))
        lengths = [engine.cache.lengths[r.sequence][0] for r in engine.running + list(engine.waiting)
                   if r.sequence is not None and engine.cache.lengths[r.sequence]]
        if lengths:
            distinct = min(system, max(lengths)) + sum(max(0, n - system) for n in lengths)
            worst = max(worst, engine.cache.blocks_used() * engine.cache.block_size / distinct)
    return time.perf_counter() - start, [engine.tokens(i) for i in ids], worst, steps


def step_summary(steps: list, requests: int) -> str:
    """Where the engine's time went: steps with a prompt chunk, decode-only steps, and the
    median decode-only step while every request decodes."""
    chunks = [s for chunk, _, s in steps if chunk]
    decodes = [s for chunk, _, s in steps if not chunk]
    full = [s for chunk, rows, s in steps if not chunk and rows == requests]
    text = (f"{len(chunks)} steps with a prompt chunk ({sum(chunks):.1f} s), {len(decodes)} decode-only "
            f"({sum(decodes):.1f} s)")
    if full:
        text += f"; a decode-only step of all {requests} requests: median {1e3 * float(np.median(full)):.0f} ms"
    return text


def run_transformers(path: str, prompts: list, tokens: int, threads: int):
    """transformers' ``generate_batch`` on the GGUF's weights (dequantized, float32): seconds, tokens."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.set_num_threads(threads)
    folder, name = str(path.parent), path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    start = time.perf_counter()
    out = model.generate_batch(inputs=prompts, generation_config=config)
    seconds = time.perf_counter() - start
    ordered = sorted(out.values(), key=lambda o: prompts.index(list(o.prompt_ids)))
    return seconds, [list(o.generated_tokens) for o in ordered]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=positive_int, default=8)
    parser.add_argument("--tokens", type=positive_int, default=32)
    parser.add_argument("--system", type=positive_int, default=128, help="tokens of the shared system prompt")
    parser.add_argument("--min-prompt", type=positive_int, default=64, help="fewest tokens after the system prompt")
    parser.add_argument("--max-prompt", type=positive_int, default=384, help="most tokens after the system prompt")
    parser.add_argument("--skip-generate", action="store_true", help="leave out generate(model, prompts)")
    parser.add_argument("--transformers", action="store_true", help="also transformers' generate_batch")
    args = parser.parse_args(argv)
    backend = activate_backend(None)
    path = download("smollm2-135m-instruct")
    model = load_pretrained(path)
    rng = np.random.default_rng(0)
    system = rng.integers(0, model.config.vocab_size, size=args.system).tolist()
    prompts = [system + rng.integers(0, model.config.vocab_size, size=int(n)).tolist()
               for n in rng.integers(args.min_prompt, args.max_prompt + 1, size=args.requests)]
    new = args.tokens * args.requests
    lengths = sorted(len(p) for p in prompts)
    print(f"SmolLM2-135M-Instruct, {args.requests} prompts of {lengths[0]}-{lengths[-1]} tokens (a shared "
          f"{args.system}-token system prompt), {args.tokens} new tokens each")
    start = time.perf_counter()
    alone = [generate(model, [prompt], args.tokens).new_tokens[0] for prompt in prompts]
    sequential = time.perf_counter() - start
    print(f"- one after another: {new / sequential:.1f} new tokens/s ({sequential:.1f} s)", flush=True)
    if not args.skip_generate:
        start = time.perf_counter()
        together = generate(model, prompts, args.tokens)
        batched = time.perf_counter() - start
        same = all(a == b for a, b in zip(alone, together.new_tokens))
        print(f"- together, one paged cache: {new / batched:.1f} new tokens/s ({batched:.1f} s; "
              f"{sequential / batched:.2f}x); identical tokens: {same}", flush=True)
    served, tokens, worst, steps = run_engine(model, prompts, args.tokens, args.system)
    same = all(a == b for a, b in zip(alone, tokens))
    print(f"- the Engine, all queued at once: {new / served:.1f} new tokens/s ({served:.1f} s; "
          f"{sequential / served:.2f}x); identical tokens: {same}; KV positions held / distinct live "
          f"positions, worst step: {worst:.3f}", flush=True)
    print(f"  engine steps: {step_summary(steps, len(prompts))}", flush=True)
    if args.transformers:
        seconds, theirs = run_transformers(path, prompts, args.tokens, backend.threads())
        agree = sum(a == b for a, b in zip(alone, theirs))
        print(f"- transformers generate_batch: {new / seconds:.1f} new tokens/s ({seconds:.1f} s); the Engine / "
              f"transformers: {seconds / served:.2f}x; requests with the same tokens as lucid: {agree} of "
              f"{len(prompts)}")


if __name__ == "__main__":
    main()
