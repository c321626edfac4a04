"""Tokens per second of lucid and transformers on the same Llama checkpoint, side by side.

    pip install -e ".[compare]"
    python benchmarks/llama_vs_transformers.py [--new-tokens 32] [--repeats 3] [--profile]

transformers writes a random ``LlamaForCausalLM`` (hidden 256, 4 layers, 8 query / 4 key-value
heads of 32, vocabulary 2048, float32) with ``save_pretrained``; lucid loads those files. Each
row decodes ``--new-tokens`` greedy tokens after a prompt (prefill included) with lucid
(``generate`` with a DynamicKVCache, NumPy backend) and with transformers (``generate``,
``do_sample=False``, torch CPU), both on the same number of threads; tokens/s counts every
batch row; the figure is the median of ``--repeats`` calls, lucid's and transformers' taken
in turns. ``--profile`` prints where lucid's time goes (cProfile, grouped into attention, the
rest of the model, the cache and the generation loop) for the largest row, and each row's
prefill time for both libraries.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile

import numpy as np
from timing import interleaved_medians


def build_checkpoint(directory, torch, transformers):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                                      eos_token_id=None, bos_token_id=None, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(directory)
    return model



def side_by_side(torch, ours, theirs, repeats: int):
    """Median seconds of lucid's and transformers' runs, taken in turns."""
    def theirs_without_grad():
        with torch.no_grad():
            theirs()

    times = interleaved_medians({"lucid": ours, "transformers": theirs_without_grad}, repeats)
    return times["lucid"], times["transformers"]


def profile_groups(run) -> dict:
    """Wall seconds of ``run`` by where they went, from the cumulative times of the calls that
    own each part (blocks of work run on worker threads, which cProfile does not see: the call
    that waits for them does). The model's forward holds attention and the cache; the rest of
    its time is the rest of the model."""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats
    total = max(cumulative for (_, _, _, cumulative, _) in stats.values())

    def seconds(file_part, function):
        return sum(row[3] for (filename, _, name), row in stats.items()
                   if file_part in filename and name == function)

    attention = seconds("functional.py", "scaled_dot_product_attention") + seconds("functional.py", "attention_mask")
    cache = seconds("kv_cache.py", "update") + seconds("kv_cache.py", "key_positions")
    model = seconds("llama.py", "forward")
    return {
        "attention (masks, scores, softmax, weights)": attention,
        "the rest of the model (embedding, norms, projections, rotary embedding, MLP, logits)":
            model - attention - cache,
        "the cache (update, key positions)": cache,
        "the generation loop (choosing tokens, host work)": total - model,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    import torch
    import transformers

    from lucid.generation import generate
    from lucid.models import load_pretrained

    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    directory = tempfile.mkdtemp()
    reference = build_checkpoint(directory, torch, transformers)
    model = load_pretrained(directory)
    print(f"Llama (hidden 256, 4 layers, vocab 2048), float32, {threads} threads, {args.new_tokens} new tokens, "
          f"median of {args.repeats}; transformers {transformers.__version__}, torch {torch.__version__}")
    print("| batch | prompt | lucid tokens/s | transformers tokens/s | lucid / transformers |")
    print("|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    prompts = []
    for batch in (1, 8):
        for prompt_len in (128, 1024):
            prompt = rng.integers(1, 2048, size=(batch, prompt_len))
            ours, theirs = side_by_side(torch, lambda p=prompt: generate(model, p, args.new_tokens, cache="dynamic"),
                                        lambda p=prompt: reference.generate(torch.tensor(p), do_sample=False,
                                                                            max_new_tokens=args.new_tokens),
                                        args.repeats)
            tokens = batch * args.new_tokens
            print(f"| {batch} | {prompt_len} | {tokens / ours:,.0f} | {tokens / theirs:,.0f} | {theirs / ours:.2f}x |")
            prompts.append(prompt)
    if args.profile:
        largest = prompts[-1]
        groups = profile_groups(lambda: generate(model, largest, args.new_tokens, cache="dynamic"))
        total = sum(groups.values())
        print(f"\nwhere lucid's time goes (batch {largest.shape[0]}, prompt {largest.shape[1]}, cProfile):")
        for name, seconds in groups.items():
            print(f"- {name}: {seconds:.2f} s ({seconds / total:.0%})")
        print("\nprefill alone (the prompt and one token), ms:")
        for prompt in prompts:
            ours, theirs = side_by_side(torch, lambda p=prompt: generate(model, p, 1, cache="dynamic"),
                                        lambda p=prompt: reference.generate(torch.tensor(p), do_sample=False,
                                                                            max_new_tokens=1),
                                        args.repeats)
            print(f"- batch {prompt.shape[0]}, prompt {prompt.shape[1]}: lucid {ours * 1e3:.0f}, "
                  f"transformers {theirs * 1e3:.0f}")


if __name__ == "__main__":
    main()
