"""celeriac: a distributed task queue with Celery's API and wire protocol."""

from __future__ import annotations

from .app import App, Celery
from .canvas import Signature, chain, chord, chunks, group, signature, xmap, xstarmap
from .proxies import current_app, current_task
from .result import AsyncResult, GroupResult, ResultSet
from .routing import Exchange, Queue
from .task import Task, shared_task

__version__ = "0.1.0"

__all__ = [
    # the application
    "Celery", "App", "current_app",
    # tasks
    "Task", "shared_task", "current_task",
    # canvas
    "Signature", "signature", "chain", "group", "chord", "chunks", "xmap", "xstarmap",
    # results
    "AsyncResult", "GroupResult", "ResultSet",
    # routing
    "Queue", "Exchange",
]
