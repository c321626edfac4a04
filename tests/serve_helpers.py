"""A server on a loopback port for the tests: the tiny model with a byte-level ChatML tokenizer
(no download) in this process, or ``python -m lucid.serve`` as its own process."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import uvicorn

from lucid.models import LlamaConfig, LlamaModel
from lucid.models.tokenizer import Tokenizer, byte_alphabet, byte_level_bpe
from lucid.serve import EngineWorker, create_app
from lucid.serving import Engine

from .redis_server import free_port

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|im_start|>", "<|im_end|>"]
TOKENIZER = Tokenizer(byte_level_bpe([byte_alphabet()[b] for b in range(256)] + SPECIAL, [], special=SPECIAL),
                      CHATML, "<|im_end|>")
MODEL = LlamaModel.random(LlamaConfig(vocab_size=258, num_layers=2))


@contextlib.contextmanager
def serving(num_blocks: int = 256, max_waiting: int = 256, **options):
    """``(base_url, worker)`` of the tiny model's server, running on a thread until the block ends."""
    worker = EngineWorker(Engine(MODEL, TOKENIZER, num_blocks=num_blocks, block_size=16), max_waiting=max_waiting)
    app = create_app(worker, TOKENIZER, "tiny", **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", worker
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 240):
    """``python -m lucid.serve ARGS`` on a free port until the block ends; its base URL once
    ``/health`` answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lucid.serve", "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "LUCID_BACKEND": "numpy"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}: {process.stdout.read()}")
            assert time.monotonic() < deadline, "the server did not answer /health in time"
            with contextlib.suppress(OSError):
                if request("GET", base + "/health")[0] == 200:
                    break
            time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request(method: str, url: str, body=None, headers=None, raw: bytes | None = None):
    """``(status, parsed JSON or text, headers)`` of one HTTP request (errors included)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    call = urllib.request.Request(url, data=data, method=method,
                                  headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        status, text, got = error.code, error.read().decode(), error.headers
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
