"""How far the quantized caches take SmolLM2-135M-Instruct from exact decoding, per chat prompt.

For each prompt: 64 greedy tokens with the exact (dynamic) cache; then, for each quantized
setting, the step at which greedy decoding with it first picks another token, and the largest
logit error over the 64 steps when it is fed the exact tokens (so every step compares the same
context). Optionally the same for transformers' quantized caches (quanto, HQQ) on the same file.

    python benchmarks/quantized_accuracy.py [--steps 64] [--json out.json] [--transformers]

transformers' quantized caches need ``optimum-quanto`` and ``hqq`` (``pip install optimum-quanto hqq``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import lucid
from lucid import nn
from lucid.generation import make_cache
from lucid.models import download, load_pretrained, load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chats import CHATS  # noqa: E402 - the six chat prompts the tests check

def decode(model, ids: list, steps: int, cache, forced: list | None = None) -> tuple[list, list]:
    """Greedy tokens and each step's logits; with ``forced``, those tokens are fed instead."""
    tokens, logits = [], []
    step_input = np.array([ids])
    for i in range(steps):
        out = model.forward(step_input, cache=cache, logits_to_keep=1).numpy()[0, -1]
        logits.append(out)
        tokens.append(int(out.argmax()))
        step_input = np.array([[forced[i] if forced else tokens[-1]]])
    return tokens, logits


def first_divergence(got: list, want: list) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)


def measure(model, ids: list, steps: int, settings: dict) -> dict:
    exact, exact_logits = decode(model, ids, steps, nn.DynamicKVCache())
    rows = {}
    for name, make in settings.items():
        free, _ = decode(model, ids, steps, make())
        _, forced = decode(model, ids, steps, make(), forced=exact)
        rows[name] = {"first_divergence": first_divergence(free, exact),
                      "max_logit_error": float(max(np.abs(a - b).max() for a, b in zip(forced, exact_logits)))}
    return {"prompt_tokens": len(ids), "lucid": rows}


def transformers_measure(model, ids: list, steps: int) -> dict:
    """The same for transformers' quantized caches on transformers' own model: quanto (4 and 2
    bits, its only widths) and HQQ (8 and 4 bits); groups of 64, residual 32, each backend's
    default axes."""
    import torch
    import transformers

    def run(cache, forced=None):
        tokens, logits, step_input = [], [], torch.tensor([ids])
        with torch.no_grad():
            for i in range(steps):
                out = model(step_input, past_key_values=cache, use_cache=True).logits[0, -1].numpy()
                logits.append(out)
                tokens.append(int(out.argmax()))
                step_input = torch.tensor([[forced[i] if forced else tokens[-1]]])
        return tokens, logits

    exact, exact_logits = run(transformers.DynamicCache(config=model.config))
    rows = {}
    for backend, bits in (("quanto", 4), ("quanto", 2), ("hqq", 8), ("hqq", 4)):
        def make():
            return transformers.QuantizedCache(backend=backend, config=model.config, nbits=bits, q_group_size=64,
                                               residual_length=32)
        free, _ = run(make())
        _, forced = run(make(), forced=exact)
        rows[f"{backend}-{bits}"] = {"first_divergence": first_divergence(free, exact),
                                     "max_logit_error": float(max(np.abs(a - b).max()
                                                                  for a, b in zip(forced, exact_logits)))}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--transformers", action="store_true", help="transformers' quanto and HQQ caches too (compare extra)")
    args = parser.parse_args()
    path = download("smollm2-135m-instruct")
    model, tokenizer = load_pretrained(path), load_tokenizer(path)
    theirs = None
    if args.transformers:
        import torch
        import transformers

        theirs = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                   dtype=torch.float32).eval()
    settings = {kind: (lambda kind=kind: make_cache(kind, model, 0)) for kind in ("quantized-8", "quantized-4")}
    print(f"settings: {make_cache('quantized-8', model, 0).prototype!r} (8 and 4 bits)", flush=True)
    results = []
    for chat in CHATS:
        ids = tokenizer.apply_chat_template(chat)
        row = measure(model, ids, args.steps, settings)
        if theirs is not None:
            row["transformers"] = transformers_measure(theirs, ids, args.steps)
        results.append(row)
        cells = "  ".join(f"{k}: diverges at {v['first_divergence']}, logit error {v['max_logit_error']:.3f}"
                          for part in ("lucid", "transformers") for k, v in row.get(part, {}).items())
        print(f"{len(ids):4d} tokens  {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
