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
from typing import Any

from pair_apps import add, build_app, lazy_apps, progress, tsum

BROKER_URL = os.environ.get("DB_INTEROP_BROKER_URL", "redis://127.0.0.1:6379/12")
RESULT_URL = os.environ.get("DB_INTEROP_RESULT_URL",
                            "db+postgresql+psycopg://postgres@127.0.0.1:5432/test")
QUEUE_ENV = "DB_INTEROP_QUEUE"
SCHEMA_ENV = "DB_INTEROP_SCHEMA"


class CustomError(Exception):
    """Importable on both sides, so each re-raises it by type."""


def fail(message: str) -> None:
    raise CustomError(message)


TASKS = (
    ("dbi.add", add, {}),
    ("dbi.tsum", tsum, {}),
    ("dbi.fail", fail, {}),
    ("dbi.progress", progress, {"bind": True}),
)


def build(kind: str, queue: str, schema: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app, tasks registered."""
    return build_app(kind, "database_interop", BROKER_URL, RESULT_URL, queue, TASKS,
                     result_extended=True,
                     database_table_schemas={"task": schema, "group": schema},
                     # a Celery client's chord polls its header with celery.chord_unlock
                     result_chord_retry_interval=0.1)


__getattr__ = lazy_apps(globals(), lambda kind: build(
    kind, os.environ[QUEUE_ENV], os.environ[SCHEMA_ENV]))
