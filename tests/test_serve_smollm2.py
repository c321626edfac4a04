"""``python -m lucid.serve`` on the trained SmolLM2, as its own process: the openai client gets
``generate``'s greedy answers, and two servers sharing one Redis share a system prompt's keys
and values. Skips, saying why, where the model cannot be fetched."""
import json
import pathlib
import re
import shutil
import subprocess

import openai

from lucid.generation import generate

from .serve_helpers import request, serve_process, wait_for
from .test_docs_examples import SERVER

QUESTIONS = ["What is the capital of France?", "Write a haiku about caches.", "List three prime numbers."]
SYSTEM = " ".join(f"Rule {i}: answer with care, and cite source number {i * 7 % 13} when asked." for i in range(60))


def api(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_the_server_answers_as_generate_does(smollm2_path, smollm2):
    model, tokenizer = smollm2
    with serve_process("--model", str(smollm2_path)) as base:
        client = api(base)
        [served] = client.models.list().data
        assert served.id == str(smollm2_path)
        for question in QUESTIONS:
            messages = [{"role": "user", "content": question}]
            ids = tokenizer.apply_chat_template(messages)
            tokens = generate(model, [ids], 32, stop_token_ids=tokenizer.stop_token_ids).new_tokens[0]
            answer = client.chat.completions.create(model=served.id, messages=messages, max_tokens=32, temperature=0)
            assert answer.choices[0].message.content == tokenizer.decode(tokens)
            assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens == len(tokens)
        assert wait_for(lambda: request("GET", base + "/health")[1]["blocks_used"] == 0)


def ask_for_one_token(client: openai.OpenAI, model: str, system: str, question: str) -> None:
    """Stream a request until its first text: the prompt's prefill is then done."""
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=2, temperature=0, stream=True):
        if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
            return
    raise AssertionError("the stream ended without text")


def hit_rate(base: str) -> float:
    """The server's share of prompt tokens found in its blocks or the prefix store."""
    [line] = [line for line in request("GET", base + "/metrics")[1].splitlines()
              if line.startswith("lucid_prefix_cache_hit_rate ")]
    return float(line.split()[1])


def test_two_servers_on_one_redis_share_a_system_prompt(smollm2_path, smollm2, redis_server):
    _, tokenizer = smollm2
    other = SYSTEM.replace("Rule", "Law")  # as long, and never stored
    store = ("--prefix-store", redis_server.url)
    with serve_process("--model", str(smollm2_path), *store) as first, \
            serve_process("--model", str(smollm2_path), *store) as second:
        model, one, two = str(smollm2_path), api(first), api(second)
        assert len(tokenizer.encode(SYSTEM)) > 900
        ask_for_one_token(one, model, SYSTEM, QUESTIONS[0])  # the first server computes and stores it
        ask_for_one_token(two, model, other, QUESTIONS[1])
        assert hit_rate(second) < 0.1  # a prompt nobody stored: computed (its template's first tokens aside)
        ask_for_one_token(two, model, SYSTEM, QUESTIONS[1])
        # Of its two prompts of about 1,000 tokens, the second came mostly from Redis: this server
        # never saw that system prompt, and shares only the template's first tokens with the other.
        assert hit_rate(second) > 0.4


def test_the_readme_s_curl_and_openai_snippets_work(smollm2_path):
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    [python] = [code for code in re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M) if code.startswith(SERVER)]
    [curl] = [code for code in re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M) if "curl" in code]
    with serve_process() as base:  # the default model, as the README starts it
        port = base.rsplit(":", 1)[1]
        if shutil.which("curl"):
            answer = json.loads(subprocess.run(["bash", "-c", curl.replace("8000", port)], capture_output=True,
                                               text=True, check=True, timeout=300).stdout)
            assert answer["choices"][0]["message"]["content"] and answer["usage"]["completion_tokens"] <= 32
        printed = []
        exec(python.replace("8000", port), {"print": lambda *args, **kw: printed.append("".join(map(str, args)))})
        assert "".join(printed).strip()
        assert wait_for(lambda: request("GET", base + "/health")[1]["running"] == 0)
