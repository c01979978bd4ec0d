"""The apps of tests/interop/test_interop_rpc.py: Celery and celeriac on RabbitMQ with
``rpc://`` results.

``build("celery", queue)`` / ``build("celeriac", queue)`` make an app whose default queue
is ``queue``; workers are started with ``-A rpc_interop:celery_app`` /
``-A rpc_interop:celeriac_app``, built on first access from ``RPC_INTEROP_QUEUE``, so
importing the module imports neither framework.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BROKER_URL = os.environ.get("RPC_INTEROP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE_ENV = "RPC_INTEROP_QUEUE"


def add(x: Any, y: Any) -> Any:
    return x + y


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
    ("rpc.add", add, {}),
    ("rpc.fail", fail, {}),
    ("rpc.progress", progress, {"bind": True}),
)


def build(kind: str, queue: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered."""
    if kind == "celery":
        from celery import Celery
    else:
        from celeriac import Celery  # type: ignore[assignment]
    app = Celery(f"rpc_interop_{kind}", broker=BROKER_URL, backend="rpc://",
                 set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.result_expires = 300
    app.conf.task_track_started = True
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
