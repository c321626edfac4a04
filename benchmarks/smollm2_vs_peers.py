"""SmolLM2-135M-Instruct (the GGUF that ``lucid.models.download`` fetches) on lucid, transformers and
llama.cpp: prefill and decode tokens/s, side by side in one process.

    pip install -e ".[compare]"
    python benchmarks/smollm2_vs_peers.py [--new-tokens 32] [--repeats 3] [--threads 1]
    # llama.cpp too (optional; built from source with AMX off: llama-cpp-python 0.3.36 built for
    # the native CPU crashes at its first decode on this machine's AMX-capable Xeon):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
      -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
      pip install --no-cache-dir llama-cpp-python

Every library runs on ``--threads`` threads (BLAS, torch, llama.cpp and lucid's own pool alike).
lucid and transformers compute in float32 on the weights dequantized from the Q4_1 file (both
load the same file); llama.cpp computes on the 4-bit weights themselves, so its figures are
not the same computation: they are shown beside the others, not divided by them.

For each batch and prompt length: the prefill (the prompt and the first token) and a decode of
``--new-tokens`` tokens, each the median of ``--repeats`` calls taken in turns. Prefill
tokens/s counts every prompt token of every row; decode tokens/s counts the tokens after the
first, of every row: ``batch * (new - 1) / (time of the decode - time of the prefill)``.
llama.cpp runs batch 1 only (its Python API decodes one sequence).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from smollm2_pair import load_smollm2_pair
from timing import interleaved_medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="1x128,1x1024,8x128,8x1024",
                        help="batch x prompt length, comma-separated (default 1x128,1x1024,8x128,8x1024)")
    args = parser.parse_args(argv)
    path, ours, theirs, torch, transformers = load_smollm2_pair(args.threads)
    from lucid.generation import generate

    llama = _llama_cpp(path, args.threads)
    print(f"SmolLM2-135M-Instruct ({path.name}), {args.threads} thread(s), {args.new_tokens} new tokens, median "
          f"of {args.repeats} in turns; transformers {transformers.__version__}, torch {torch.__version__}; "
          f"llama.cpp: {llama[1]}")
    print("| batch | prompt | prefill tok/s: lucid | transformers | lucid / tf | decode tok/s: lucid | transformers "
          "| lucid / tf | llama.cpp prefill | llama.cpp decode |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for row in args.rows.split(","):
        batch, length = (int(x) for x in row.split("x"))
        prompt = rng.integers(100, ours.config.vocab_size, size=(batch, length))

        def lucid_run(new, p=prompt):
            return lambda: generate(ours, p, new, cache="dynamic")

        def their_run(new, p=prompt):
            def run():
                with torch.no_grad():
                    theirs.generate(torch.tensor(p), do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                    pad_token_id=0)
            return run

        runs = {"lucid 1": lucid_run(1), "tf 1": their_run(1), "lucid n": lucid_run(args.new_tokens),
                "tf n": their_run(args.new_tokens)}
        if llama[0] is not None and batch == 1:
            runs["cpp 1"] = lambda p=prompt: _cpp_generate(llama[0], p[0], 1)
            runs["cpp n"] = lambda p=prompt: _cpp_generate(llama[0], p[0], args.new_tokens)
        t = interleaved_medians(runs, args.repeats)
        decoded = batch * (args.new_tokens - 1)
        rates = {name: (batch * length / t[f"{name} 1"], decoded / max(1e-9, t[f"{name} n"] - t[f"{name} 1"]))
                 for name in ("lucid", "tf", "cpp") if f"{name} 1" in t}
        cpp = rates.get("cpp")
        print(f"| {batch} | {length} | {rates['lucid'][0]:,.0f} | {rates['tf'][0]:,.0f} | "
              f"{rates['lucid'][0] / rates['tf'][0]:.2f}x | {rates['lucid'][1]:,.1f} | {rates['tf'][1]:,.1f} | "
              f"{rates['lucid'][1] / rates['tf'][1]:.2f}x | {f'{cpp[0]:,.0f}' if cpp else 'n/a'} | "
              f"{f'{cpp[1]:,.1f}' if cpp else 'n/a'} |", flush=True)


def _llama_cpp(path, threads: int):
    """``(Llama or None, what to print about it)``."""
    try:
        from llama_cpp import Llama, __version__
    except ImportError:
        return None, "not installed (see this script's docstring for the build without AMX)"
    model = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=2048,
                  verbose=False)
    return model, f"llama-cpp-python {__version__} on the Q4_1 weights"


def _cpp_generate(model, prompt, new: int) -> None:
    model.reset()
    model.eval([int(t) for t in prompt])
    for _ in range(new):
        token = int(np.argmax(model.scores[model.n_tokens - 1]))
        if _ == new - 1:
            break
        model.eval([token])


if __name__ == "__main__":
    sys.exit(main())
