"""Memory of loading SmolLM2-135M-Instruct (the GGUF ``lucid.models.download`` fetches).

    python benchmarks/model_memory.py [--batch 8 --prompt 1024 --new 32]

Prints the float32 weights the model ends with, the peak of the allocations made while
loading (``tracemalloc``, which NumPy reports its arrays to) and its ratio to the weights, and
the process's resident memory before, after and at its peak (which also counts the pages of
the memory-mapped GGUF file that were read). Run it in a fresh process: the parsed metadata is
cached per process, and a second load would not parse it again.

Then decoding: ``generate`` of ``--new`` greedy tokens after a random prompt of ``--prompt``
tokens for ``--batch`` rows, with the dynamic cache ``generate`` makes (``make_cache``). It
prints the bytes the cache holds against the bytes of the positions it ends with, and the
peak of the allocations made while decoding plus the weights, against the weights plus those
live positions.
"""
import argparse
import os
import resource
import time
import tracemalloc


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def weight_bytes(model) -> int:
    """Bytes of the arrays that own the model's weights (a view counts with what it views)."""
    arrays = [model.embed, model.norm, model.unembed]
    arrays += [t for layer in model.layers for t in layer.values() if t is not None]
    owners = {}
    for t in arrays:
        owner = t.array
        while getattr(owner, "base", None) is not None:
            owner = owner.base
        owners[id(owner)] = owner
    return sum(owner.nbytes for owner in owners.values())


def measure(path) -> dict:
    """Load ``path`` under ``tracemalloc``: seconds, weight bytes, peak and retained allocations."""
    from lucid.models import load_pretrained

    tracemalloc.start()
    start = time.perf_counter()
    model = load_pretrained(path)
    seconds = time.perf_counter() - start
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "weights": weight_bytes(model), "peak": peak, "retained": current}


def measure_decode(model, batch: int, prompt: int, new: int) -> dict:
    """Decode under ``tracemalloc``: the cache's bytes held and live, and the peak allocations."""
    import numpy as np

    from lucid.generation import generate, make_cache

    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch, prompt))
    cache = make_cache("dynamic", model, prompt + new)  # what generate makes for cache="dynamic"
    tracemalloc.start()
    generate(model, ids, new, cache=cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    live = sum(layer.length * (layer.keys[:, :, :1].nbytes + layer.values[:, :, :1].nbytes) for layer in cache.layers)
    return {"held": cache.nbytes(), "live": live, "peak": peak}


def main():
    from lucid.models import download, load_pretrained

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=32)
    args = parser.parse_args()
    path = download()
    before = resident()
    got = measure(path)
    mib, weights = 2**20, got["weights"]
    print(f"{path.name}: loaded in {got['seconds']:.1f} s; weights {weights / mib:.0f} MiB (float32); peak "
          f"allocations while loading {got['peak'] / mib:.0f} MiB = {got['peak'] / weights:.2f}x the weights, "
          f"{got['retained'] / mib:.0f} MiB still allocated after it; resident {before / mib:.0f} MiB before, "
          f"{resident() / mib:.0f} MiB after, {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"at the peak (with the file's pages; file {path.stat().st_size / mib:.0f} MiB)")
    decode = measure_decode(load_pretrained(path), args.batch, args.prompt, args.new)
    need = weights + decode["live"]
    print(f"decoding {args.new} tokens after {args.prompt} for {args.batch} rows: the cache holds "
          f"{decode['held'] / mib:.0f} MiB for {decode['live'] / mib:.0f} MiB of live positions "
          f"({decode['held'] / decode['live']:.2f}x); weights + peak allocations while decoding "
          f"{(weights + decode['peak']) / mib:.0f} MiB = {(weights + decode['peak']) / need:.2f}x the weights + live "
          f"positions ({need / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
