"""Memory of loading SmolLM2-135M-Instruct (the GGUF ``lucid.models.download`` fetches).

    python benchmarks/model_memory.py

Prints the float32 weights the model ends with, the peak of the allocations made while
loading (``tracemalloc``, which NumPy reports its arrays to) and its ratio to the weights, and
the process's resident memory before, after and at its peak (which also counts the pages of
the memory-mapped GGUF file that were read). Run it in a fresh process: the parsed metadata is
cached per process, and a second load would not parse it again.
"""
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


def main():
    from lucid.models import download

    path = download()
    before = resident()
    got = measure(path)
    mib, weights = 2**20, got["weights"]
    print(f"{path.name}: loaded in {got['seconds']:.1f} s; weights {weights / mib:.0f} MiB (float32); peak "
          f"allocations while loading {got['peak'] / mib:.0f} MiB = {got['peak'] / weights:.2f}x the weights, "
          f"{got['retained'] / mib:.0f} MiB still allocated after it; resident {before / mib:.0f} MiB before, "
          f"{resident() / mib:.0f} MiB after, {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"at the peak (with the file's pages; file {path.stat().st_size / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
