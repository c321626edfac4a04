"""The server's Prometheus metrics, in a registry of their own (several servers in one process
never share counters)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Latency buckets in seconds, from a fast decode step to a long prefill.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    """Counters and histograms the handlers update, and gauges read from the worker's stats.

    Examples
    --------
    >>> from lucid.models import LlamaModel
    >>> from lucid.serving import Engine
    >>> from lucid.serve import EngineWorker
    >>> from lucid.serve.metrics import ServerMetrics
    >>> from prometheus_client import generate_latest
    >>> metrics = ServerMetrics(EngineWorker(Engine(LlamaModel.random(), num_blocks=8)))
    >>> b"lucid_kv_blocks_free 8.0" in generate_latest(metrics.registry)
    True
    """

    def __init__(self, worker):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("lucid_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=registry)
        self.prompt_tokens = Counter("lucid_prompt_tokens", "Prompt tokens of the requests accepted",
                                     registry=registry)
        self.cancelled = Counter("lucid_choices_cancelled", "Choices cancelled before their end (the client hung up "
                                 "or the server stopped)", registry=registry)
        self.generation_tokens = Counter("lucid_generation_tokens", "Tokens generated", registry=registry)
        self.time_to_first_token = Histogram("lucid_time_to_first_token_seconds",
                                             "From a request's arrival to its first token", buckets=BUCKETS,
                                             registry=registry)
        self.inter_token_latency = Histogram("lucid_inter_token_latency_seconds",
                                             "Between a choice's consecutive tokens", buckets=BUCKETS,
                                             registry=registry)

        def gauge(name: str, text: str, read) -> None:
            Gauge(name, text, registry=registry).set_function(lambda: read(worker.stats))

        gauge("lucid_requests_running", "Requests decoding", lambda s: s["running"])
        gauge("lucid_requests_waiting", "Requests waiting for their prefill", lambda s: s["waiting"])
        gauge("lucid_kv_blocks_used", "KV cache blocks in use", lambda s: s["blocks_used"])
        gauge("lucid_kv_blocks_free", "KV cache blocks free", lambda s: s["blocks_total"] - s["blocks_used"])
        gauge("lucid_prefix_cache_hit_rate", "Prompt tokens found in cached blocks or the prefix store, "
              "over all prompt tokens", lambda s: s["cached_tokens"] / max(1, s["prompt_tokens"]))
        gauge("lucid_preemptions", "Requests preempted for blocks (and recomputed)", lambda s: s["preemptions"])
