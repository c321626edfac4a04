"""The ASGI application: OpenAI's chat and text completion endpoints over an
:class:`~lucid.serve.EngineWorker`, the model list, health, metrics and the chat page."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import pathlib
import time
import uuid

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .metrics import ServerMetrics
from .protocol import APIError, ChoiceText, Completion, parse
from .worker import EngineWorker, QueueFull

STATIC = pathlib.Path(__file__).resolve().parent / "static"
log = logging.getLogger("lucid.serve")
#: Seconds between checks that a client waiting for a whole (not streamed) answer is still there.
POLL = 0.5


def create_app(worker: EngineWorker, tokenizer, model_id: str, api_key: str | None = None,
               max_body_bytes: int = 1 << 20) -> Starlette:
    """The server's application; run it with uvicorn (``python -m lucid.serve`` does).

    Parameters
    ----------
    worker : EngineWorker
        Its engine decodes every request; started and stopped with the application.
    tokenizer : Tokenizer
        The model's: prompts, chat templates, text.
    model_id : str
        The name clients give as ``model``.
    api_key : str, optional
        When set, ``/v1/`` requests must carry ``Authorization: Bearer <api_key>``.
    max_body_bytes : int
        Larger request bodies get 413.

    Examples
    --------
    >>> from starlette.testclient import TestClient
    >>> from lucid.models import LlamaModel
    >>> from lucid.models.tokenizer import Tokenizer, byte_level_bpe
    >>> from lucid.serving import Engine
    >>> from lucid.serve import EngineWorker, create_app
    >>> tok = Tokenizer(byte_level_bpe([chr(c) for c in range(97, 123)], [], special=[]),
    ...                 chat_template=None, eos_token="z")
    >>> app = create_app(EngineWorker(Engine(LlamaModel.random(), tok, num_blocks=16)), tok, "tiny")
    >>> with TestClient(app) as client:
    ...     answer = client.post("/v1/completions", json={"model": "tiny", "prompt": "abc", "max_tokens": 3,
    ...                                                   "temperature": 0}).json()
    >>> answer["usage"]
    {'prompt_tokens': 3, 'completion_tokens': 3, 'total_tokens': 6}
    """
    metrics = ServerMetrics(worker)
    created = int(time.time())
    config, cache = worker.engine.model.config, worker.engine.cache
    context = min(config.max_positions or 1 << 62, cache.num_blocks * cache.block_size)

    def endpoint(name: str, guarded: bool = True):
        """Answer APIError in OpenAI's shape, check the key, count the response."""
        def wrap(handler):
            @functools.wraps(handler)
            async def answer(request: Request) -> Response:
                try:
                    if guarded and api_key is not None:
                        given = request.headers.get("authorization", "")
                        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                            raise APIError(401, "a valid API key is needed: send Authorization: Bearer <key>",
                                           code="invalid_api_key", kind="authentication_error")
                    response = await handler(request)
                except APIError as error:
                    headers = {"Retry-After": "1"} if error.status == 429 else None
                    response = JSONResponse(error.body(), status_code=error.status, headers=headers)
                except Exception:  # a defect of ours: logged, and answered in OpenAI's shape
                    log.exception("the server failed on %s", request.url.path)
                    response = JSONResponse(APIError(500, "the server failed on this request; see its log",
                                                     kind="server_error").body(), status_code=500)
                metrics.requests.labels(name, str(response.status_code)).inc()
                return response
            return answer
        return wrap

    async def read_json(request: Request):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise APIError(413, f"the body has {length} bytes, more than this server's {max_body_bytes}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body_bytes:
                raise APIError(413, f"the body has more than this server's {max_body_bytes} bytes")
        try:
            return json.loads(data)
        except ValueError as error:  # UnicodeDecodeError included
            raise APIError(400, f"the body is not valid JSON: {error}") from None

    async def submit(job: Completion, chat: bool):
        """Queue one engine request per prompt and choice; their ids and the queue their tokens
        arrive on, as ``(choice, token, reason)``."""
        for ids in job.prompts:
            name = "messages" if chat else "prompt"
            if len(ids) >= context:
                raise APIError(400, f"the prompt has {len(ids)} tokens; this server's context is {context}",
                               param=name, code="context_length_exceeded")
            if job.max_tokens is not None and len(ids) + job.max_tokens > context:
                raise APIError(400, f"max_tokens={job.max_tokens} after a prompt of {len(ids)} tokens passes this "
                                    f"server's context of {context}", param="max_tokens",
                               code="context_length_exceeded")
        loop, queue, request_ids, future = asyncio.get_running_loop(), asyncio.Queue(), [], None

        def sink(choice: int):
            return lambda token, reason: loop.call_soon_threadsafe(queue.put_nowait, (choice, token, reason))

        try:
            for index, ids in enumerate(job.prompts):  # the n choices of a prompt: forks of one prefill
                future = worker.submit([sink(index * job.n + j) for j in range(job.n)], prompt=ids,
                                       max_new_tokens=job.max_tokens or context - len(ids), temperature=job.temperature,
                                       top_p=job.top_p, top_k=job.top_k, seed=job.seed)
                request_ids.extend(await asyncio.wrap_future(future))
        except QueueFull as error:
            cancel(request_ids)
            raise APIError(429, f"the server is busy ({error}); retry shortly", kind="rate_limit_error") from None
        except (ValueError, TypeError) as error:
            cancel(request_ids)
            raise APIError(400, str(error)) from None
        except BaseException:  # the client left while its requests were being queued
            cancel(request_ids)
            if future is not None and not future.done():  # the one in flight: cancelled once it has an id
                future.add_done_callback(
                    lambda done: not done.cancelled() and done.exception() is None and worker.cancel(done.result()))
            raise
        metrics.prompt_tokens.inc(sum(len(ids) for ids in job.prompts))
        return request_ids, queue

    def cancel(request_ids) -> None:
        for request_id in request_ids:
            worker.cancel(request_id)

    async def choices(request: Request, texts: list, request_ids: list, queue: asyncio.Queue, start: float):
        """``(choice, text, finish_reason)`` as tokens arrive, each choice's text built in
        ``texts``; a choice that ends early (stop string, client gone) is cancelled."""
        last = [None] * len(request_ids)
        live = set(range(len(request_ids)))
        try:
            while live:
                try:
                    choice, token, reason = await asyncio.wait_for(queue.get(), POLL)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if choice not in live:
                    continue
                if token is None:
                    raise APIError(500, "the engine failed while decoding this request", kind="server_error")
                now = time.perf_counter()
                if last[choice] is None:
                    metrics.time_to_first_token.observe(now - start)
                else:
                    metrics.inter_token_latency.observe(now - last[choice])
                last[choice] = now
                metrics.generation_tokens.inc()
                text = texts[choice].push(token)
                if texts[choice].stopped and reason is None:
                    worker.cancel(request_ids[choice])
                    reason = "stop"
                if reason is not None:
                    text += texts[choice].finish()
                    live.discard(choice)
                yield choice, text, reason
        finally:
            metrics.cancelled.inc(len(live))
            cancel(request_ids[i] for i in live)

    def usage(job: Completion, texts: list) -> dict:
        prompt = sum(len(ids) for ids in job.prompts)
        completion = sum(t.tokens for t in texts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def complete(request: Request, chat: bool) -> Response:
        start = time.perf_counter()
        job = parse(await read_json(request), chat, model_id, tokenizer)
        request_ids, queue = await submit(job, chat)
        texts = [ChoiceText(tokenizer, job.stop) for _ in request_ids]
        events = choices(request, texts, request_ids, queue, start)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": model_id}
        if job.stream:
            return StreamingResponse(stream(events, head, job, texts, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        parts, reasons = [""] * len(texts), [None] * len(texts)
        async with contextlib.aclosing(events):
            async for choice, text, reason in events:
                parts[choice] += text
                reasons[choice] = reason or reasons[choice]
        if chat:
            listed = [{"index": i, "message": {"role": "assistant", "content": parts[i]}, "logprobs": None,
                       "finish_reason": reasons[i]} for i in range(len(parts))]
        else:
            listed = [{"index": i, "text": parts[i], "logprobs": None, "finish_reason": reasons[i]}
                      for i in range(len(parts))]
        return JSONResponse({**head, "object": "chat.completion" if chat else "text_completion",
                             "choices": listed, "usage": usage(job, texts)})

    async def stream(events, head: dict, job: Completion, texts: list, chat: bool):
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list, **extra) -> str:
            return f"data: {json.dumps({**head, 'object': kind, 'choices': choices, **extra})}\n\n"

        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                             for i in range(len(texts))])
            async for choice, text, reason in events:
                if not text and reason is None:
                    continue
                if chat:
                    delta = {"content": text} if text else {}
                    yield chunk([{"index": choice, "delta": delta, "logprobs": None, "finish_reason": reason}])
                else:
                    yield chunk([{"index": choice, "text": text, "logprobs": None, "finish_reason": reason}])
            if job.include_usage:
                yield chunk([], usage=usage(job, texts))
        except APIError as error:
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:
            await events.aclose()  # a client gone mid-stream: its requests cancelled now, not at collection
        yield "data: [DONE]\n\n"

    @endpoint("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    @endpoint("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    @endpoint("/v1/models")
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                                         "owned_by": "lucid", "max_model_len": context}]})

    @endpoint("/health", guarded=False)
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **worker.stats})

    @endpoint("/metrics", guarded=False)
    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    def lifespan(app):
        return _Lifespan(worker)

    return Starlette(routes=[
        Route("/", page), Route("/health", health), Route("/metrics", metrics_page),
        Route("/v1/models", models), Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan)


class _Lifespan:
    """Starts the worker's thread with the application and stops it after."""

    def __init__(self, worker: EngineWorker):
        self.worker = worker

    async def __aenter__(self) -> None:
        self.worker.start()

    async def __aexit__(self, *exc) -> None:
        self.worker.stop()
