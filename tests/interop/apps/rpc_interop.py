"""The apps of tests/interop/test_interop_rpc.py: Celery and celeriac on RabbitMQ with
``rpc://`` results.

``build("celery", queue)`` / ``build("celeriac", queue)`` make an app whose default queue
is ``queue``; workers are started with ``-A rpc_interop:celery_app`` /
``-A rpc_interop:celeriac_app``, built on first access from ``RPC_INTEROP_QUEUE``, so
importing the module imports neither framework.
"""

from __future__ import annotations

import os
from typing import Any

from pair_apps import build_app, common_tasks, lazy_apps

BROKER_URL = os.environ.get("RPC_INTEROP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE_ENV = "RPC_INTEROP_QUEUE"
TASKS = common_tasks("rpc")


def build(kind: str, queue: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered."""
    return build_app(kind, "rpc_interop", BROKER_URL, "rpc://", queue, TASKS,
                     result_expires=300, task_track_started=True)


__getattr__ = lazy_apps(globals(), lambda kind: build(kind, os.environ[QUEUE_ENV]))
