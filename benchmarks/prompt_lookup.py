"""Prompt-lookup decoding against plain greedy decoding on the real model, on an answer that
quotes its prompt: tokens per second of each, forward passes, and whether the tokens agree.

    python benchmarks/prompt_lookup.py            # SmolLM2-135M-Instruct, fetched once
    python benchmarks/prompt_lookup.py --draft 8 --tokens 128 --rounds 3

The chat asks the model to repeat a paragraph; plain and prompt-lookup decoding run in turns
(``--rounds`` each, the median time reported), one NumPy thread per BLAS call as configured by
the environment.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import lucid.nn as nn
from lucid.cli import activate_backend, positive_int
from lucid.generation import generate
from lucid.models import download, load_pretrained, load_tokenizer

PARAGRAPH = ("The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of oil "
             "and a cloth. He cleaned the great lens until it shone, trimmed the wick, and lit the lamp. "
             "Ships far out at sea saw the beam sweep across the water and knew that the rocks were near.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draft", type=positive_int, default=8, help="most tokens drafted a step (default 8)")
    parser.add_argument("--tokens", type=positive_int, default=96, help="new tokens (default 96)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="runs of each, in turns (default 3)")
    args = parser.parse_args(argv)
    activate_backend(None)
    path = download("smollm2-135m-instruct")
    model, tokenizer = load_pretrained(path), load_tokenizer(path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": f"Repeat this paragraph exactly:\n\n{PARAGRAPH}"}],
                                        add_generation_prompt=True)
    prompt = np.array([ids])
    times = {"greedy": [], f"prompt lookup ({args.draft})": []}
    outputs = {}
    for _ in range(args.rounds):
        for name in times:
            steps = []
            start = time.perf_counter()
            out = generate(model, prompt, args.tokens, cache=nn.DynamicKVCache(), stop_token_ids=tokenizer.stop_token_ids,
                           prompt_lookup=0 if name == "greedy" else args.draft, on_step=steps.append)
            times[name].append(time.perf_counter() - start)
            outputs[name] = (out.new_tokens[0], len(steps))
    same = len({tuple(tokens) for tokens, _ in outputs.values()}) == 1
    print(f"SmolLM2-135M-Instruct, prompt {prompt.shape[1]} tokens, {len(outputs['greedy'][0])} new tokens; "
          f"median of {args.rounds} runs each, in turns; identical tokens: {same}")
    base = statistics.median(times["greedy"])
    for name, runs in times.items():
        tokens, passes = outputs[name]
        seconds = statistics.median(runs)
        print(f"- {name}: {len(tokens) / seconds:.1f} tokens/s ({seconds:.2f} s, {passes} forward passes, the "
              f"prefill's included; {base / seconds:.2f}x greedy)")
    print("answer:", repr(tokenizer.decode(outputs["greedy"][0])[:120]), "...")


if __name__ == "__main__":
    main()
