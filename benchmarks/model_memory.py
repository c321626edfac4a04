"""Memory of loading SmolLM2-135M-Instruct (the GGUF ``lucid.models.download`` fetches).

    python benchmarks/model_memory.py

Prints the float32 weights the model ends with, the peak of the allocations made while
loading (``tracemalloc``, which NumPy reports its arrays to) and its ratio to the weights, and
the process's resident memory before, after and at its peak (which also counts the pages of
the memory-mapped GGUF file that were read).
"""
import os
import resource
import time
import tracemalloc


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main():
    from lucid.models import download, load_pretrained

    path = download()
    before = resident()
    tracemalloc.start()
    start = time.perf_counter()
    model = load_pretrained(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrays = [model.embed, model.norm, model.unembed]
    arrays += [t for layer in model.layers for t in layer.values() if t is not None]
    owners = {}  # the arrays that own memory (a tied output projection is a view of the embedding)
    for t in arrays:
        owner = t.array
        while getattr(owner, "base", None) is not None:
            owner = owner.base
        owners[id(owner)] = owner
    weights = sum(owner.nbytes for owner in owners.values())
    mib = 2**20
    print(f"{path.name}: loaded in {seconds:.1f} s; weights {weights / mib:.0f} MiB (float32); peak allocations while "
          f"loading {peak / mib:.0f} MiB = {peak / weights:.2f}x the weights; resident {before / mib:.0f} MiB before, "
          f"{resident() / mib:.0f} MiB after, {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"at the peak (with the file's pages; file {path.stat().st_size / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
