"""The OpenAI-compatible server, through the real ``openai`` client and raw HTTP, on loopback:
answers equal to ``generate``'s, streaming, choices, stops, seeds, errors in OpenAI's shape,
cancellation, a bounded load, and the metrics."""
import http.client
import pathlib
import threading
import urllib.parse

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lucid.generation import generate

from .serve_helpers import MODEL, TOKENIZER, request, serving, wait_for

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


def client(base: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)


def expected(ids: list, new: int, **sampling) -> tuple:
    """What ``generate`` gives: the text and the finish reason."""
    tokens = generate(MODEL, [ids], new, stop_token_ids=TOKENIZER.stop_token_ids, **sampling).new_tokens[0]
    stopped = tokens[-1] in TOKENIZER.stop_token_ids
    return TOKENIZER.decode(tokens), "stop" if stopped else "length"


@pytest.fixture(scope="module")
def server():
    with serving() as (base, worker):
        yield base, worker


def test_greedy_chat_and_completion_are_generate_s_answer_streamed_or_not(server):
    base, _ = server
    api = client(base)
    text, reason = expected(TOKENIZER.apply_chat_template(HELLO), 12)
    answer = api.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    assert answer.choices[0].message.content == text and answer.choices[0].finish_reason == reason
    assert answer.usage.prompt_tokens == len(TOKENIZER.apply_chat_template(HELLO))
    chunks = list(api.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    prompt_text, _ = expected(TOKENIZER.encode("once upon"), 9)
    completion = api.completions.create(model="tiny", prompt="once upon", max_tokens=9, temperature=0)
    assert completion.choices[0].text == prompt_text
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="tiny", prompt="once upon", max_tokens=9, temperature=0, stream=True))
    assert streamed == prompt_text


def test_choices_seeds_and_stop_strings(server):
    base, _ = server
    api = client(base)
    two = api.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10, temperature=0.9, seed=5, n=2)
    again = api.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10, temperature=0.9, seed=5, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.message.content for c in two.choices] == [c.message.content for c in again.choices]
    ids = TOKENIZER.apply_chat_template(HELLO)
    for j, choice in enumerate(two.choices):  # choice j samples with seed + j
        assert choice.message.content == expected(ids, 10, temperature=0.9, seed=5 + j)[0]
    text, _ = expected(ids, 16)
    stop = next(text[i:i + 2] for i in range(3, len(text) - 2) if "\ufffd" not in text[i:i + 2])
    for stream in (False, True):
        answer = api.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, temperature=0, stop=[stop],
                                             stream=stream)
        if stream:
            chunks = [c for c in answer if c.choices]
            content, reason = "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            content, reason = answer.choices[0].message.content, answer.choices[0].finish_reason
        assert content == text[:text.index(stop)] and reason == "stop"


def test_models_health_and_metrics(server):
    base, worker = server
    api = client(base)
    assert [m.id for m in api.models.list().data] == ["tiny"]
    before = {s.name: s.value for f in text_string_to_metric_families(request("GET", base + "/metrics")[1])
              for s in f.samples}
    answer = api.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0, n=3)
    assert wait_for(lambda: worker.stats["blocks_used"] == 0)  # the engine's thread releases them after answering
    families = {f.name: f for f in text_string_to_metric_families(request("GET", base + "/metrics")[1])}
    values = {s.name: s.value for f in families.values() for s in f.samples}
    generated = values["lucid_generation_tokens_total"] - before.get("lucid_generation_tokens_total", 0)
    assert generated == answer.usage.completion_tokens
    assert values["lucid_time_to_first_token_seconds_count"] - before.get(
        "lucid_time_to_first_token_seconds_count", 0) == 3  # one per choice
    assert values["lucid_kv_blocks_free"] == 256 and values["lucid_kv_blocks_used"] == 0
    assert values["lucid_requests_running"] == values["lucid_requests_waiting"] == 0
    assert 0 < values["lucid_prefix_cache_hit_rate"] <= 1  # the three choices share the prompt's block
    ok = [s for s in families["lucid_requests"].samples
          if s.labels == {"endpoint": "/v1/completions", "status": "200"} and s.name == "lucid_requests_total"]
    assert ok and ok[0].value >= 1
    status, health, _ = request("GET", base + "/health")
    assert status == 200 and health["status"] == "ok" and health["blocks_used"] == 0


GOOD = {"model": "tiny", "messages": HELLO, "max_tokens": 3}
BAD = [  # (body or raw bytes, status, param, code)
    (b"{not json", 400, None, None),
    ({**GOOD, "temperature": "hot"}, 400, "temperature", None),
    ({**GOOD, "messages": "hello"}, 400, "messages", None),
    ({**GOOD, "stream": "yes"}, 400, "stream", None),
    ({**GOOD, "model": "gpt-4"}, 400, "model", "model_not_found"),
    ({**GOOD, "max_tokens": 0}, 400, "max_tokens", None),
    ({**GOOD, "max_tokens": 5000}, 400, "max_tokens", "context_length_exceeded"),
    ({**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}, 400, "messages", "context_length_exceeded"),
    ({**GOOD, "n": 0}, 400, "n", None),
    ({**GOOD, "stop": [""]}, 400, "stop", None),
    ({**GOOD, "logprobs": True}, 400, "logprobs", None),
    ({**GOOD, "messages": [{"role": "user", "content": "y" * 70_000}]}, 413, None, None),
]


@pytest.mark.parametrize("body, status, param, code", BAD, ids=[f"{b[1]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_openai_errors_and_the_server_goes_on(body, status, param, code):
    with serving(max_body_bytes=65_536) as (base, worker):
        raw = body if isinstance(body, bytes) else None
        got, answer, _ = request("POST", base + "/v1/chat/completions", body=None if raw else body, raw=raw)
        assert got == status
        error = answer["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
        assert error["param"] == param and error["code"] == code
        assert request("POST", base + "/v1/chat/completions", body=GOOD)[0] == 200
        assert wait_for(lambda: worker.stats["blocks_used"] == 0)


def test_an_api_key_guards_the_api_and_not_the_page():
    with serving(api_key="s3cret") as (base, _):
        with pytest.raises(openai.AuthenticationError):
            client(base, "wrong").models.list()
        status, answer, _ = request("POST", base + "/v1/completions", body={"model": "tiny", "prompt": "a"})
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert client(base, "s3cret").completions.create(model="tiny", prompt="a", max_tokens=2).choices
        assert request("GET", base + "/health")[0] == request("GET", base + "/")[0] == 200


def test_a_full_waiting_queue_is_429_with_retry_after():
    with serving(max_waiting=1) as (base, worker):
        gate = threading.Event()
        worker.call(gate.wait)  # the engine's thread waits: both requests below queue behind it
        results = []

        def send():
            results.append(request("POST", base + "/v1/completions",
                                   body={"model": "tiny", "prompt": "abc", "max_tokens": 2}))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: worker.queued == 2)
        gate.set()
        for thread in threads:
            thread.join(60)
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 429]
        busy = next(r for r in results if r[0] == 429)
        assert busy[2]["Retry-After"] == "1" and busy[1]["error"]["type"] == "rate_limit_error"
        assert request("POST", base + "/v1/completions", body={"model": "tiny", "prompt": "a", "max_tokens": 2})[0] == 200


def stream_then_hang_up(base: str, events: int, body: dict) -> int:
    """Open a streaming request, read ``events`` server-sent events, and close the connection."""
    url = urllib.parse.urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request("POST", "/v1/completions", body=__import__("json").dumps(body),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    seen = 0
    while seen < events:
        line = response.fp.readline()
        if not line:
            break
        seen += line.startswith(b"data: ")
    connection.close()
    return seen


def test_a_client_that_hangs_up_mid_stream_is_cancelled_and_its_blocks_freed(server):
    base, worker = server

    def cancelled() -> float:
        return next(s.value for f in text_string_to_metric_families(request("GET", base + "/metrics")[1])
                    for s in f.samples if s.name == "lucid_choices_cancelled_total")

    before = cancelled()
    body = {"model": "tiny", "prompt": "a long story: " * 20, "max_tokens": 3000, "temperature": 0, "stream": True}
    assert stream_then_hang_up(base, 3, body) == 3
    assert wait_for(lambda: worker.stats["running"] == 0 and worker.stats["blocks_used"] == 0)
    assert cancelled() == before + 1


def resident_mib() -> float:
    status = pathlib.Path("/proc/self/status")
    if not status.exists():
        return 0.0  # not Linux: the memory check below has nothing to compare
    return next(int(line.split()[1]) / 1024 for line in status.read_text().splitlines() if line.startswith("VmRSS:"))


def test_a_bounded_load_of_streaming_clients_fails_nothing_frees_every_block_and_keeps_memory_flat(server):
    """32 clients, 20 streamed requests each, prompts of 5-300 bytes, every fourth hanging up."""
    base, worker = server
    failures, finished, lock = [], [], threading.Lock()
    clients, requests = 32, 20
    warm = []

    def user(k: int) -> None:
        api = client(base)
        for r in range(requests):
            prompt = "word " * (1 + (k * 7 + r * 13) % 60)
            try:
                if (k + r) % 4 == 0:  # hangs up midway
                    stream_then_hang_up(base, 2, {"model": "tiny", "prompt": prompt, "max_tokens": 40,
                                                  "stream": True})
                    continue
                chunks = [c for c in api.completions.create(model="tiny", prompt=prompt, max_tokens=4 + r % 5,
                                                            temperature=0, stream=True)]
                with lock:
                    finished.append(chunks[-1].choices[0].finish_reason)
                    if len(finished) == clients * requests // 10:
                        warm.append(resident_mib())
            except Exception as error:  # every failure is reported below
                with lock:
                    failures.append(repr(error))

    users = [threading.Thread(target=user, args=(k,)) for k in range(clients)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join(600)
    assert failures == []
    assert len(finished) == clients * requests * 3 // 4 and set(finished) <= {"stop", "length"}
    assert wait_for(lambda: worker.stats["running"] == worker.stats["waiting"] == worker.stats["blocks_used"] == 0)
    assert resident_mib() - warm[0] < 64  # MiB: nothing kept per request
