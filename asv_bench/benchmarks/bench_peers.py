"""transformers on torch CPU for the same workloads as lucid: its DynamicCache and StaticCache,
and whole-model generation on one Llama checkpoint.

Runs only where ``torch`` and ``transformers`` import (``pip install -e ".[compare]"``);
asv skips it otherwise. Compare the caches with bench_cache.DecodeStep (numpy, B1-H8-D64,
float32; transformers' StaticCache is given ``cache_position`` every step, as models do)
and bench_cache.Beams.
"""
STEPS = 100


def _import():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise NotImplementedError(f"peer comparison needs torch and transformers: {exc}") from exc
    return torch, transformers


def _static(transformers, layers, capacity):
    config = transformers.LlamaConfig(num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                                      hidden_size=512, head_dim=64)
    return transformers.StaticCache(config=config, max_cache_len=capacity)


class PeerDecodeStep:
    """100 consecutive decode steps (B=1, H=8, D=64, float32) from a cache of ``length`` tokens.
    """

    params = [["DynamicCache", "StaticCache"], [128, 1024, 4096, 16384]]
    param_names = ["cache", "length"]
    number = 1
    warmup_time = 0

    def setup(self, cache, length):
        """n/a on the dashboard: the compare extra (torch, transformers) is not installed where asv ran."""
        torch, transformers = _import()
        torch.set_num_threads(1)
        self.k = torch.randn(1, 8, 1, 64)
        prefill = torch.randn(1, 8, length, 64)
        if cache == "DynamicCache":
            self.cache = transformers.DynamicCache()
            self.cache.update(prefill, prefill, 0)
            self.step = lambda: self.cache.update(self.k, self.k, 0)
        else:
            self.cache = _static(transformers, 1, length + 2 * STEPS)
            self.cache.update(prefill, prefill, 0, {"cache_position": torch.arange(length)})
            self.at = length

            def step():
                self.cache.update(self.k, self.k, 0, {"cache_position": torch.tensor([self.at])})
                self.at += 1

            self.step = step

    def time_100_updates(self, *params):
        step = self.step
        for _ in range(STEPS):
            step()


class PeerBeams:
    """Beam bookkeeping over 12 layers of 1024 tokens: expand to 4 beams, or reorder 4 beams.

    DynamicCache only: transformers' StaticCache layers have no ``batch_repeat_interleave``.
    Compare with bench_cache.Beams.
    """

    params = [["DynamicCache"], ["repeat", "reorder"]]
    param_names = ["cache", "operation"]
    number = 1
    warmup_time = 0

    def setup(self, cache, operation):
        """n/a on the dashboard: the compare extra (torch, transformers) is not installed where asv ran."""
        torch, transformers = _import()
        torch.set_num_threads(1)
        k = torch.randn(1, 8, 1024, 64)
        self.cache = transformers.DynamicCache()
        for layer in range(12):
            self.cache.update(k, k, layer)
        if operation == "reorder":
            self.cache.batch_repeat_interleave(4)
            order = torch.tensor([3, 1, 0, 2])
            self.run = lambda: self.cache.reorder_cache(order)
        else:
            self.run = lambda: self.cache.batch_repeat_interleave(4)

    def time_batch_operation(self, *params):
        self.run()


def _scripts():
    """The repository's ``benchmarks/`` scripts, importable: the Llama checkpoint and the timing
    in turns are theirs (asv reads this suite from the working tree, beside them)."""
    import pathlib
    import sys

    scripts = str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)


def _ratio_in_turns(runs: dict, turns: int) -> float:
    """transformers' median seconds over lucid's, the two ``runs`` timed in turns."""
    _scripts()
    from timing import interleaved_medians

    times = interleaved_medians(runs, turns)
    return times["transformers"] / times["lucid"]


def _llama_runs(batch, prompt):
    """``{"lucid": run, "transformers": run}``: 32 greedy tokens after a ``batch`` x ``prompt``
    prompt, prefill included, float32, on the Llama checkpoint of
    ``benchmarks/llama_vs_transformers.py`` (written by transformers); lucid on NumPy with a
    DynamicKVCache, transformers' ``generate`` on torch CPU with as many threads."""
    import os
    import tempfile

    import numpy as np

    from lucid.generation import generate
    from lucid.models import load_pretrained

    torch, transformers = _import()
    _scripts()
    from llama_vs_transformers import build_checkpoint

    torch.set_num_threads(os.cpu_count())
    directory = tempfile.mkdtemp()
    reference = build_checkpoint(directory, torch, transformers)
    model = load_pretrained(directory)
    ids = np.random.default_rng(0).integers(1, 2048, size=(batch, prompt))
    tensor = torch.tensor(ids)

    def theirs():
        with torch.no_grad():
            reference.generate(tensor, max_new_tokens=32, do_sample=False)

    return {"lucid": lambda: generate(model, ids, 32, cache="dynamic"), "transformers": theirs}


class PeerGenerateLlama:
    """Seconds for lucid and for transformers to generate on one Llama checkpoint (see
    ``_llama_runs``; ``benchmarks/llama_vs_transformers.py`` gives the same rows as a table with
    a profile). Each implementation is timed on its own: for their ratio, read
    ``PeerGenerateLlamaRatio``, which takes both in turns.
    """

    params = [["lucid", "transformers"], [1, 8], [128, 1024]]
    param_names = ["implementation", "batch", "prompt"]
    number = 1
    warmup_time = 0
    repeat = (1, 3, 60.0)
    timeout = 600

    def setup(self, implementation, batch, prompt):
        """n/a on the dashboard: the compare extra (torch, transformers) is not installed where asv ran."""
        self.run = _llama_runs(batch, prompt)[implementation]

    def time_generate_32_tokens(self, *params):
        self.run()


class PeerGenerateLlamaRatio:
    """lucid's tokens per second over transformers' on one Llama checkpoint (see ``_llama_runs``),
    the goal's figure (1.5 or more), measured in one run.

    The two are timed in turns, 5 calls each after one warm-up call each, with a pause between
    calls (torch's threads spin for a while after a call), and the ratio of their medians is
    recorded. Timed apart, as ``PeerGenerateLlama`` does, they would fall on different moments
    of a machine whose speed drifts, and their ratio with them.
    """

    params = [[1, 8], [128, 1024]]
    param_names = ["batch", "prompt"]
    unit = "lucid / transformers tokens per second"
    timeout = 600
    turns = 5

    def setup(self, batch, prompt):
        """n/a on the dashboard: the compare extra (torch, transformers) is not installed where asv ran."""
        self.runs = _llama_runs(batch, prompt)
        for run in self.runs.values():
            run()

    def track_tokens_per_second_ratio(self, *params):
        return _ratio_in_turns(self.runs, self.turns)


def _smollm2_runs(batch, prompt, new_tokens):
    """``{"lucid": run, "transformers": run}``: ``new_tokens`` greedy tokens after a ``batch`` x
    ``prompt`` prompt (prefill included) on SmolLM2-135M-Instruct, both libraries loading the same
    GGUF file (``lucid.models.download``), float32, one thread each (BLAS, torch, lucid's pool)."""
    import os

    import numpy as np
    import threadpoolctl

    from lucid.generation import generate
    from lucid.models import download, load_pretrained
    from lucid.models.hub import DownloadError

    os.environ["LUCID_NUM_THREADS"] = "1"  # read when lucid's pool is first used: asv runs each in a new process

    torch, transformers = _import()
    try:
        import accelerate  # noqa: F401 - transformers reads GGUF files only with it
        path = download(quiet=True)
    except (ImportError, DownloadError) as exc:
        raise NotImplementedError(f"the SmolLM2 comparison needs accelerate and the model: {exc}") from exc
    threadpoolctl.threadpool_limits(1)
    torch.set_num_threads(1)
    model = load_pretrained(path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    ids = np.random.default_rng(0).integers(100, model.config.vocab_size, size=(batch, prompt))
    tensor = torch.tensor(ids)

    def theirs():
        with torch.no_grad():
            reference.generate(tensor, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               pad_token_id=0)

    return {"lucid": lambda: generate(model, ids, new_tokens, cache="dynamic"), "transformers": theirs}


class PeerSmolLM2Ratio:
    """lucid's tokens per second over transformers' on the trained SmolLM2-135M-Instruct (the
    GGUF the demo runs), one thread each, timed in turns (3 calls each after a warm-up): the
    prefill (``new_tokens=1``) and a 16-token decode. ``benchmarks/smollm2_vs_peers.py`` gives the
    same comparison as a table, with llama.cpp beside it.
    """

    params = [[1, 8], [128, 1024], [1, 16]]
    param_names = ["batch", "prompt", "new_tokens"]
    unit = "lucid / transformers tokens per second"
    timeout = 900
    turns = 3

    def setup(self, batch, prompt, new_tokens):
        """n/a on the dashboard: the compare extra (torch, transformers) is not installed where asv ran,
        or the model could not be fetched."""
        self.runs = _smollm2_runs(batch, prompt, new_tokens)
        for run in self.runs.values():
            run()

    def track_tokens_per_second_ratio(self, *params):
        return _ratio_in_turns(self.runs, self.turns)
