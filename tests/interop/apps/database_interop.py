"""The apps of tests/interop/test_interop_database.py: Celery and celeriac with results in
PostgreSQL through the SQLAlchemy backend (``db+postgresql+psycopg://``), Redis as broker.

``build("celery", queue, schema)`` / ``build("celeriac", queue, schema)`` make an app on
``queue`` whose result tables live in ``schema``; workers are started with
``-A database_interop:celery_app`` / ``-A database_interop:celeriac_app``, built on first
access from ``DB_INTEROP_QUEUE`` and ``DB_INTEROP_SCHEMA``, so importing the module
imports neither framework.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BROKER_URL = os.environ.get("DB_INTEROP_BROKER_URL", "redis://127.0.0.1:6379/12")
RESULT_URL = os.environ.get("DB_INTEROP_RESULT_URL",
                            "db+postgresql+psycopg://postgres@127.0.0.1:5432/test")
QUEUE_ENV = "DB_INTEROP_QUEUE"
SCHEMA_ENV = "DB_INTEROP_SCHEMA"


class CustomError(Exception):
    """Importable on both sides, so each re-raises it by type."""


def add(x: Any, y: Any) -> Any:
    return x + y


def fail(message: str) -> None:
    raise CustomError(message)


def progress(self: Any, go_file: str) -> str:
    """PROGRESS, then waits for the client to say go (a file), then returns."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + 30
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


def tsum(values: Any) -> Any:
    return sum(values)


TASKS = (
    ("dbi.add", add, {}),
    ("dbi.tsum", tsum, {}),
    ("dbi.fail", fail, {}),
    ("dbi.progress", progress, {"bind": True}),
)


def build(kind: str, queue: str, schema: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app, tasks registered."""
    if kind == "celery":
        from celery import Celery
    else:
        from celeriac import Celery  # type: ignore[assignment]
    app = Celery(f"database_interop_{kind}", broker=BROKER_URL, backend=RESULT_URL,
                 set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.result_extended = True
    app.conf.database_table_schemas = {"task": schema, "group": schema}
    # a Celery client's chord polls its header with celery.chord_unlock on this backend
    app.conf.result_chord_retry_interval = 0.1
    if kind == "celery":
        app.conf.broker_connection_retry_on_startup = True
        app.conf.worker_hijack_root_logger = True
    for name, body, options in TASKS:
        app.task(name=name, **options)(body)
    return app


def __getattr__(name: str) -> Any:
    if name in ("celery_app", "celeriac_app"):
        app = build(name.split("_")[0], os.environ[QUEUE_ENV], os.environ[SCHEMA_ENV])
        globals()[name] = app
        return app
    raise AttributeError(name)
