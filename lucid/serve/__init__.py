"""``python -m lucid.serve``: an OpenAI-compatible HTTP server over the continuous-batching
:class:`~lucid.serving.Engine`, with Prometheus metrics and a chat page."""
from .app import create_app
from .worker import EngineWorker, QueueFull

__all__ = ["EngineWorker", "QueueFull", "create_app"]
