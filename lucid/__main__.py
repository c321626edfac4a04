"""``python -m lucid``: print the backend, versions and device, then run a short self-check."""
import argparse
import sys

import array_api_compat
import numpy

import lucid
import lucid.nn as nn
from lucid.cli import activate_backend


def self_check() -> bool:
    """Write a few tokens through both caches and read them back."""
    lucid.manual_seed(0)
    ok = True
    for cache in (nn.DynamicKVCache(), nn.StaticKVCache(max_cache_len=8, num_layers=1)):
        k, v = lucid.randn(2, 4, 3, 8), lucid.randn(2, 4, 3, 8)
        cache.update(k, v, layer_idx=0)
        cache.update(k[:, :, :1, :], v[:, :, :1, :], layer_idx=0, cache_position=[5])
        got_k, _ = cache.get(0)
        ok &= got_k.shape == (2, 4, 6, 8)
        ok &= bool((got_k[:, :, :3, :] == k).min().item())
        ok &= bool((got_k[:, :, 3:5, :] == 0).min().item())
        print(f"  {type(cache).__name__:15s} length {cache.get_seq_length(0)}: {'ok' if ok else 'FAILED'}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lucid", description=__doc__)
    parser.add_argument("--backend", choices=["numpy", "cupy", "auto"], help="overrides LUCID_BACKEND")
    args = parser.parse_args(argv)
    backend = activate_backend(args.backend)
    print(f"lucid {lucid.__version__}  backend {backend.name}  device {backend.device}  threads {backend.threads()}")
    print(f"python {sys.version.split()[0]}  numpy {numpy.__version__}  array-api-compat {array_api_compat.__version__}")
    if backend.name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"cupy {cupy.__version__}  GPU {props['name'].decode()}")
    ok = self_check()
    print("self-check passed" if ok else "self-check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
