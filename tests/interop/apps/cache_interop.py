"""The apps of tests/interop/test_interop_cache.py: Celery and celeriac on one Redis
broker with their results in memcached (``cache+memcached://``).

``build("celery", queue)`` / ``build("celeriac", queue)`` make an app whose default queue
is ``queue``; workers are started with ``-A cache_interop:celery_app`` /
``-A cache_interop:celeriac_app``, built on first access from ``CACHE_INTEROP_QUEUE``, so
importing the module imports neither framework.
"""

from __future__ import annotations

import os
from typing import Any

from pair_apps import build_app, common_tasks, lazy_apps

# db 12: used by no other test; nothing is flushed, the tests' keys are their own
BROKER_URL = os.environ.get("CACHE_INTEROP_BROKER_URL", "redis://127.0.0.1:6379/12")
RESULT_BACKEND = os.environ.get("CACHE_INTEROP_RESULT_BACKEND",
                                "cache+memcached://127.0.0.1:11211/")
QUEUE_ENV = "CACHE_INTEROP_QUEUE"
TASKS = common_tasks("cache")


def build(kind: str, queue: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered."""
    return build_app(kind, "cache_interop", BROKER_URL, RESULT_BACKEND, queue, TASKS,
                     result_expires=300)


__getattr__ = lazy_apps(globals(), lambda kind: build(kind, os.environ[QUEUE_ENV]))
