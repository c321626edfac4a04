"""transformers' DynamicCache and StaticCache on torch CPU, for the same workloads.

Runs only where ``torch`` and ``transformers`` import (``pip install -e ".[compare]"``);
asv skips it otherwise. Compare with bench_cache.DecodeStep (numpy, B1-H8-D64,
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
    """100 consecutive decode steps (B=1, H=8, D=64, float32) from a cache of ``length`` tokens."""

    params = [["DynamicCache", "StaticCache"], [128, 1024, 4096, 16384]]
    param_names = ["cache", "length"]
    number = 1
    warmup_time = 0

    def setup(self, cache, length):
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
