"""SmolLM2-135M-Instruct loaded by lucid and by transformers from the same GGUF file, both on a
given number of threads: the setup the side-by-side SmolLM2 benchmarks share."""
from __future__ import annotations

import os


def load_smollm2_pair(threads: int):
    """``(path, lucid model, transformers model, torch, transformers)`` with BLAS, torch and
    lucid's own pool on ``threads`` threads (lucid reads its setting when its pool starts, so
    call this before anything of lucid's runs)."""
    os.environ["LUCID_NUM_THREADS"] = str(threads)
    import threadpoolctl
    import torch
    import transformers

    from lucid.models import download, load_pretrained

    threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)
    path = download()
    ours = load_pretrained(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                               dtype=torch.float32).eval()
    return path, ours, theirs, torch, transformers
