"""Time to first token with a shared 2048-token prefix: prefilled cold, or fetched from a PrefixStore."""
import shutil
import tempfile

import numpy as np

import lucid.nn as nn
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel

from .common import BACKENDS, sync, use_backend


class PrefixTimeToFirstToken:
    """A request of 2048 shared tokens + 16 of its own on the demo's 4-layer model: the first token.

    ``cold`` prefills all 2064 tokens (the floor line: what reuse saves against); the others
    fetch the 2048 from that tier, then prefill 16. Redis needs a server, so it lives in
    ``benchmarks/prefix_store.py``, which starts one.
    """

    params = [BACKENDS, ["cold", "memory", "disk"]]
    param_names = ["backend", "source"]
    number = 1
    warmup_time = 0
    repeat = (3, 7, 60.0)
    timeout = 300

    def setup(self, backend, source):
        use_backend(backend)
        self.model = LlamaModel.random(LlamaConfig(num_layers=4))
        rng = np.random.default_rng(0)
        self.prompt = np.concatenate([rng.integers(0, 256, size=2048), rng.integers(0, 256, size=16)])
        self.directory = tempfile.mkdtemp()
        self.store = None
        if source != "cold":
            tier = nn.MemoryTier() if source == "memory" else nn.DiskTier(self.directory)
            self.store = nn.PrefixStore([tier], chunk_size=256, fingerprint="asv-demo-model")
            seed = nn.DynamicKVCache()
            generate(self.model, self.prompt[None, :], 1, cache=seed)
            self.store.put(self.prompt, seed)
        sync()

    def teardown(self, backend, source):
        if hasattr(self, "directory"):  # setup may have skipped (no GPU) before making it
            shutil.rmtree(self.directory, ignore_errors=True)

    def time_first_token(self, *params):
        cache = nn.DynamicKVCache()
        if self.store is not None:
            self.store.fetch(self.prompt, cache)
        generate(self.model, self.prompt[None, :], 1, cache=cache)
        sync()
