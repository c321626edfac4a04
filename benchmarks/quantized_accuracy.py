"""How far the quantized caches take SmolLM2-135M-Instruct from exact decoding, per chat prompt.

For each prompt: 64 greedy tokens with the exact (dynamic) cache; then, for each quantized
setting, the step at which greedy decoding with it first picks another token, and the largest
logit error over the 64 steps when it is fed the exact tokens (so every step compares the same
context). Optionally the same for transformers' quantized caches (quanto, HQQ) on the same file.

    python benchmarks/quantized_accuracy.py [--steps 64] [--json out.json] [--transformers]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import lucid
from lucid import nn
from lucid.generation import make_cache
from lucid.models import download, load_pretrained, load_tokenizer

LONG = " ".join(f"Item {i}: the {w} of the {v} is important for the {u}." for i, (w, v, u) in enumerate(
    zip(["colour", "weight", "speed", "price", "shape"] * 12, ["car", "boat", "house", "tree", "river"] * 12,
        ["owner", "city", "buyer", "painter", "farmer"] * 12)))
#: The six chat prompts (the last one over 400 tokens).
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
    [{"role": "system", "content": "You answer like a pirate."},
     {"role": "user", "content": "Explain how a rainbow forms."}],
    [{"role": "user", "content": "List five uses of Python, one per line."},
     {"role": "assistant", "content": "1. Web servers\n2. Data science"},
     {"role": "user", "content": "Continue the list with three more."}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Summarise the following list in one paragraph:\n" + LONG}],
]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    path = download("smollm2-135m-instruct")
    model, tokenizer = load_pretrained(path), load_tokenizer(path)
    settings = {kind: (lambda kind=kind: make_cache(kind, model, 0)) for kind in ("quantized-8", "quantized-4")}
    print(f"settings: {make_cache('quantized-8', model, 0).prototype!r} (8 and 4 bits)", flush=True)
    results = []
    for chat in CHATS:
        ids = tokenizer.apply_chat_template(chat)
        row = measure(model, ids, args.steps, settings)
        results.append(row)
        cells = "  ".join(f"{k}: diverges at {v['first_divergence']}, logit error {v['max_logit_error']:.3f}"
                          for k, v in row["lucid"].items())
        print(f"{len(ids):4d} tokens  {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
