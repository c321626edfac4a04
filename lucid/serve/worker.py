"""``EngineWorker``: an :class:`~lucid.serving.Engine` stepping on its own thread, fed and
drained from other threads (the web server's event loop)."""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable

from ..serving import Engine

log = logging.getLogger("lucid.serve")

#: What a request's sink receives: ``(token, None)`` for each token, ``(token, reason)`` for
#: the last one (``"stop"``, ``"length"``), ``(None, "error")`` if the engine failed.
Sink = Callable[[int | None, str | None], None]


class QueueFull(Exception):
    """The engine already has ``max_waiting`` requests waiting for their prefill."""


class EngineWorker:
    """Steps an engine on a thread of its own while requests come and go from others.

    The engine is touched only by the worker's thread: :meth:`submit` and :meth:`cancel` queue
    commands that the thread runs between steps, and answer with a future. Each step's tokens
    go to the requests' sinks (callables, called on the worker's thread); a finished or
    cancelled request is released at once, its blocks back in the pool. When nothing is left
    to decode the thread sleeps until a command arrives.

    Parameters
    ----------
    engine : Engine
    max_waiting : int
        Requests allowed to wait for their prefill; :meth:`submit` refuses more with
        :class:`QueueFull`.

    Examples
    --------
    >>> import threading
    >>> from lucid.models import LlamaModel
    >>> from lucid.serving import Engine
    >>> from lucid.serve import EngineWorker
    >>> worker = EngineWorker(Engine(LlamaModel.random(), num_blocks=16)).start()
    >>> tokens, done = [], threading.Event()
    >>> def sink(token, reason):
    ...     tokens.append(token)
    ...     if reason:
    ...         done.set()
    >>> worker.submit([sink], prompt=[1, 2, 3], max_new_tokens=4).result()
    [0]
    >>> done.wait(60), len(tokens)
    (True, 4)
    >>> worker.stop()
    """

    def __init__(self, engine: Engine, max_waiting: int = 256):
        self.engine, self.max_waiting = engine, max_waiting
        self.stats = self._snapshot()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._sinks: dict[int, Sink] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lucid-engine", daemon=True)

    def start(self) -> "EngineWorker":
        """Start the thread (if not started yet); returns the worker."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the thread (requests still running get no more tokens)."""
        self._stopping = True
        self._commands.put(None)
        if self._thread.ident is not None:
            self._thread.join()

    @property
    def queued(self) -> int:
        """Commands sent and not yet run (requests submitted, cancellations)."""
        return self._commands.qsize()

    # -- commands, from any thread ------------------------------------------------
    def call(self, function: Callable) -> concurrent.futures.Future:
        """Run ``function()`` on the worker's thread between steps; its result as a future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((function, future))
        return future

    def submit(self, sinks: list, **request) -> concurrent.futures.Future:
        """Add a request (``Engine.add_request``'s arguments) with one choice per sink (``n`` is
        their number: forks of one prefill); the future gives the choices' ids, or raises what
        ``add_request`` raised, or :class:`QueueFull`."""
        def add() -> list:
            if len(self.engine.waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self.engine.waiting)} requests already wait for the engine")
            first = self.engine.add_request(n=len(sinks), **request)
            for j, sink in enumerate(sinks):
                self._sinks[first + j] = sink
            return [first + j for j in range(len(sinks))]
        return self.call(add)

    def cancel(self, request_id: int) -> concurrent.futures.Future:
        """Cancel a request (if still known) and free its blocks."""
        def drop() -> None:
            if self._sinks.pop(request_id, None) is not None:
                self.engine.release(request_id)
        return self.call(drop)

    # -- the thread -------------------------------------------------------------
    def _snapshot(self) -> dict:
        engine = self.engine
        return {"running": len(engine.running), "waiting": len(engine.waiting),
                "blocks_used": engine.cache.blocks_used(), "blocks_total": engine.cache.num_blocks,
                "prompt_tokens": engine.prompt_tokens, "cached_tokens": engine.cached_tokens,
                "preemptions": engine.preemptions}

    def _run(self) -> None:
        while not self._stopping:
            self._run_commands(block=not self.engine.has_unfinished())
            if self.engine.has_unfinished():
                self._step()
            self.stats = self._snapshot()  # one assignment: readers on other threads see a whole snapshot

    def _run_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=1.0) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while command is not None:
            function, future = command
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except Exception as error:  # handed to the caller, who answers for it
                    future.set_exception(error)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _step(self) -> None:
        try:
            emitted = self.engine.step()
        except Exception:  # never expected: fail every request rather than the thread
            log.exception("the engine's step failed; every request in flight ends with an error")
            for request_id, sink in list(self._sinks.items()):
                sink(None, "error")
            self._sinks.clear()
            self.engine = Engine(self.engine.model, self.engine.tokenizer, self.engine.cache.num_blocks,
                                 self.engine.cache.block_size, self.engine.max_batch_tokens,
                                 self.engine.prefix_store)
            return
        for request_id, token in emitted:
            sink = self._sinks.get(request_id)
            if sink is None:
                continue
            reason = self.engine.finish_reason(request_id)
            sink(token, reason)
            if reason is not None:
                del self._sinks[request_id]
                self.engine.release(request_id)
