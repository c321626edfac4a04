"""Concurrent streaming clients against an OpenAI-compatible server on loopback: aggregate
tokens/s, time to first token and inter-token latency (p50, p99), failures, and the server's
resident memory.

    python benchmarks/serve_load.py --clients 32 --requests 20           # lucid's server, the load test
    python benchmarks/serve_load.py --clients 1 8 32 --requests 3 --hang-up 0 \
        --servers lucid llama.cpp transformers transformers-cb

Each server is started in turn on the same SmolLM2 GGUF, one at a time: ``python -m
lucid.serve``; ``python -m llama_cpp.server`` (``pip install "llama-cpp-python[server]"``; it
computes on the 4-bit weights); ``transformers serve`` (the ``compare`` extra plus ``fastapi``
and ``uvicorn``), given a checkpoint directory that transformers itself writes from the GGUF
(its server cannot load a GGUF file: the configuration it builds names no architecture),
without and with ``--continuous-batching``. Every
every client runs its requests one after another, streaming: a shared system prompt, then a
question whose length varies (1-8 sentences), ``--max-tokens`` greedy tokens. With
``--hang-up K`` every K-th request closes its connection after its third piece of text. A
token is a streamed piece of text (each server streams one per token, but for a character
split over tokens); a stream that ends without text counts as failed. Resident memory is read from ``/proc`` after the first tenth of the
requests (warm) and at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import socket
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SYSTEM = ("You are a concise assistant for a team that builds caches for language models. Answer in one or two "
          "sentences, plainly, without lists, and say so when you do not know.")
SENTENCES = ["Explain what a key-value cache stores.", "Why does decoding get slower as the context grows?",
             "What is a paged cache?", "How does prefix caching save work?", "When is a sliding window enough?",
             "What do attention sinks keep?", "Why quantize the cache?", "What does continuous batching do?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def transformers_checkpoint(gguf: str) -> str:
    """A checkpoint directory with the GGUF's weights dequantized, written by transformers (once)."""
    out = pathlib.Path(tempfile.gettempdir()) / f"lucid-bench-{pathlib.Path(gguf).stem}"
    if not (out / "config.json").exists():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = str(pathlib.Path(gguf).parent), pathlib.Path(gguf).name
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        model.hf_quantizer = None  # the weights are dequantized already: save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
    return str(out)


@contextlib.contextmanager
def server(kind: str, model: str, threads: int):
    port = free_port()
    if kind == "lucid":
        command = [sys.executable, "-m", "lucid.serve", "--model", model, "--port", str(port)]
    elif kind.startswith("transformers"):
        model = transformers_checkpoint(model)
        command = [shutil.which("transformers") or "transformers", "serve", model, "--port", str(port)]
        command += ["--continuous-batching"] if kind == "transformers-cb" else []
    else:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
                   "--n_threads", str(threads), "--n_ctx", "8192", "--n_batch", "512",
                   "--interrupt_requests", "False"]  # its default cuts a stream short when another request arrives
    env = {**os.environ, "LUCID_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"{kind}'s server exited with {process.returncode}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + ("/v1/models" if kind == "llama.cpp" else "/health"), timeout=5).read()
                break
            time.sleep(0.5)
        yield base, model, process.pid
    finally:
        process.terminate()
        process.wait(60)


def one_request(base: str, model: str, question: str, max_tokens: int, hang_up: bool) -> dict:
    """Stream one chat completion; the arrival times of its pieces of text."""
    body = {"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True}
    call = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"}, method="POST")
    start, times = time.perf_counter(), []
    with urllib.request.urlopen(call, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                times.append(time.perf_counter())
                if hang_up and len(times) == 3:
                    break
    if not times and not hang_up:
        raise RuntimeError("the stream ended without any text")
    return {"start": start, "times": times, "hung_up": hang_up}


def load(base: str, model: str, clients: int, requests: int, max_tokens: int, hang_up: int, pid: int) -> dict:
    results, failures, lock = [], [], threading.Lock()
    warm_rss = []
    total = clients * requests

    def client(k: int) -> None:
        for r in range(requests):
            index = k * requests + r
            question = " ".join(SENTENCES[(index + j) % len(SENTENCES)] for j in range(1 + index % 8))
            try:
                result = one_request(base, model, question, max_tokens, bool(hang_up) and index % hang_up == hang_up - 1)
            except Exception as error:  # counted and reported
                with lock:
                    failures.append(repr(error))
                continue
            with lock:
                results.append(result)
                if len(results) == max(1, total // 10):
                    warm_rss.append(rss_mib(pid))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ttft = [r["times"][0] - r["start"] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    tokens = sum(len(r["times"]) for r in results)

    def pct(values, q):
        return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else float("nan")

    return {"clients": clients, "requests": len(results) + len(failures), "failed": len(failures),
            "tokens_per_s": tokens / elapsed, "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99), "rss_warm": warm_rss[0] if warm_rss else float("nan"),
            "rss_end": rss_mib(pid), "seconds": elapsed, "first_failure": failures[0] if failures else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[32])
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--hang-up", type=int, default=10, help="every K-th request hangs up midway (0: none)")
    parser.add_argument("--servers", nargs="+", default=["lucid"], choices=["lucid", "llama.cpp", "transformers", "transformers-cb"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=None, help="the GGUF file (default: SmolLM2, downloaded once)")
    args = parser.parse_args()
    from lucid.models import download

    model = args.model or str(download())
    print("| server | clients | requests | failed | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | "
          "RSS warm | RSS end |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for clients in args.clients:
        for kind in args.servers:
            with server(kind, model, args.threads) as (base, name, pid):
                one_request(base, name, SENTENCES[0], 2, False)  # warm-up
                row = load(base, name, clients, args.requests, args.max_tokens, args.hang_up, pid)
            print(f"| {kind} | {clients} | {row['requests']} | {row['failed']} | {row['tokens_per_s']:.1f} | "
                  f"{row['ttft_p50'] * 1e3:.0f} ms | {row['ttft_p99'] * 1e3:.0f} ms | {row['itl_p50'] * 1e3:.0f} ms | "
                  f"{row['itl_p99'] * 1e3:.0f} ms | {row['rss_warm']:.0f} MiB | {row['rss_end']:.0f} MiB |", flush=True)
            if row["failed"]:
                print(f"  first failure: {row['first_failure']}", flush=True)


if __name__ == "__main__":
    main()
