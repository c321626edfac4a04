"""The attention of a SmolLM2 prefill alone: lucid's causal blocks, its mask-reading blocks, and torch.

    pip install -e ".[compare]"
    python benchmarks/prefill_attention.py [--length 1024] [--repeats 5] [--threads 1]

Runs lucid's prefill of one random ``--length``-token prompt and keeps the queries, keys and
values that each of its 30 layers hands to ``scaled_dot_product_attention``. Then times, on
``--threads`` threads each, in turns, the 30 calls four ways: lucid as the model runs them
(``is_causal``: blocks of 64 queries, no mask), lucid given the causal mask instead (key tiles
with probed shifts, the prefill's path before the causal blocks), the same with
``PROBE_KEYS = 0`` (every block shifted by each row's exact maximum, the path before the
tiles), and torch's ``scaled_dot_product_attention`` (``is_causal``, the key/value heads
repeated for the grouped queries, as transformers' SDPA path does). Prints the median seconds
of each, and each one's largest difference from a float64 softmax on the first three layers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from timing import interleaved_medians


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["LUCID_NUM_THREADS"] = str(args.threads)
    import threadpoolctl
    import torch

    import lucid
    import lucid.models.llama as llama
    import lucid.nn as nn
    from lucid.models import download, load_pretrained
    from lucid.nn import functional

    threadpoolctl.threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    model = load_pretrained(download())
    calls, attend = [], llama.scaled_dot_product_attention

    def keep(q, k, v, attn_mask=None, is_causal=False):
        q, k, v = (np.array(t.numpy()) for t in (q, k, v))
        mask = np.arange(k.shape[2])[None, :] <= np.arange(q.shape[2])[:, None] + k.shape[2] - q.shape[2]
        assert is_causal or np.array_equal(np.broadcast_to(attn_mask.numpy(), mask.shape), mask)
        calls.append((q, k, v, mask))
        return attend(lucid.Tensor(q), lucid.Tensor(k), lucid.Tensor(v), is_causal=True)

    llama.scaled_dot_product_attention = keep
    ids = np.random.default_rng(0).integers(100, model.config.vocab_size, size=(1, args.length))
    model.forward(ids, cache=nn.DynamicKVCache(), logits_to_keep=1)
    llama.scaled_dot_product_attention = attend
    group = model.config.num_heads // model.config.num_kv_heads
    theirs = [tuple(torch.from_numpy(a) for a in (q, np.repeat(k, group, 1), np.repeat(v, group, 1)))
              for q, k, v, _ in calls]

    def ours(probes, causal=False):
        def run():
            functional.PROBE_KEYS = probes
            try:
                return [attend(lucid.Tensor(q), lucid.Tensor(k), lucid.Tensor(v), is_causal=True).numpy() if causal
                        else attend(lucid.Tensor(q), lucid.Tensor(k), lucid.Tensor(v), attn_mask=lucid.Tensor(m)).numpy()
                        for q, k, v, m in calls]
            finally:
                functional.PROBE_KEYS = PROBES
        return run

    def torch_run():
        with torch.no_grad():
            return [torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] == k.shape[2]).numpy()
                    for q, k, v in theirs]

    PROBES = functional.PROBE_KEYS
    runs = {"lucid, causal blocks": ours(PROBES, causal=True), "lucid, mask: key tiles": ours(PROBES),
            "lucid, mask: exact maximum": ours(0), "torch": torch_run}
    exact = [_float64(q, k, v, m) for q, k, v, m in calls[:3]]
    errors = {name: max(float(np.abs(got - want).max()) for got, want in zip(run()[:3], exact))
              for name, run in runs.items()}
    times = interleaved_medians(runs, args.repeats)
    print(f"attention of {len(calls)} layers, prompt {args.length}, {args.threads} thread(s), "
          f"median of {args.repeats} in turns")
    for name in runs:
        print(f"{name}: {times[name]:.3f} s, largest difference from float64 {errors[name]:.1e}")
    return 0


def _float64(q, k, v, mask):
    group = q.shape[1] // k.shape[1]
    k, v = (np.repeat(a.astype(np.float64), group, 1) for a in (k, v))
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True) @ v


if __name__ == "__main__":
    sys.exit(main())
