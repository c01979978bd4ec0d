"""The apps of tests/interop/test_interop_cache.py: Celery and celeriac on one Redis
broker with their results in memcached (``cache+memcached://``).

``build("celery", queue)`` / ``build("celeriac", queue)`` make an app whose default queue
is ``queue``; workers are started with ``-A cache_interop:celery_app`` /
``-A cache_interop:celeriac_app``, built on first access from ``CACHE_INTEROP_QUEUE``, so
importing the module imports neither framework.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

# db 12: used by no other test; nothing is flushed, the tests' keys are their own
BROKER_URL = os.environ.get("CACHE_INTEROP_BROKER_URL", "redis://127.0.0.1:6379/12")
RESULT_BACKEND = os.environ.get("CACHE_INTEROP_RESULT_BACKEND",
                                "cache+memcached://127.0.0.1:11211/")
QUEUE_ENV = "CACHE_INTEROP_QUEUE"


def add(x: Any, y: Any) -> Any:
    return x + y


def tsum(values: list[Any]) -> Any:
    return sum(values)


def fail(message: str) -> None:
    raise ValueError(message)


def progress(self: Any, go_file: str) -> str:
    """PROGRESS, then waits for the client to say go (a file), then returns."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + 30
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


TASKS = (
    ("cache.add", add, {}),
    ("cache.tsum", tsum, {}),
    ("cache.fail", fail, {}),
    ("cache.progress", progress, {"bind": True}),
)


def build(kind: str, queue: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered."""
    if kind == "celery":
        from celery import Celery
    else:
        from celeriac import Celery  # type: ignore[assignment]
    app = Celery(f"cache_interop_{kind}", broker=BROKER_URL, backend=RESULT_BACKEND,
                 set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.result_expires = 300
    if kind == "celery":
        app.conf.broker_connection_retry_on_startup = True
        app.conf.worker_hijack_root_logger = True
    for name, body, options in TASKS:
        app.task(name=name, **options)(body)
    return app


def __getattr__(name: str) -> Any:
    if name in ("celery_app", "celeriac_app"):
        app = build(name.split("_")[0], os.environ[QUEUE_ENV])
        globals()[name] = app
        return app
    raise AttributeError(name)
