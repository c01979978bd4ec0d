"""The apps of tests/interop/test_interop_amqp.py: Celery and celeriac on RabbitMQ.

One module for both sides, so that the task names and bodies are written once:
``build("celery", queue)`` / ``build("celeriac", queue)`` make an app whose default
queue is ``queue``, with results in Redis. The workers are started with
``-A amqp_interop:celery_app`` / ``-A amqp_interop:celeriac_app``; those attributes are
built on first access from the environment (``AMQP_INTEROP_QUEUE``), so importing the
module imports neither framework.

Tasks leave their traces under a key prefix the test passes in, so tests sharing the
Redis db never see each other's runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pair_apps import add, build_app, fail, lazy_apps, tsum

BROKER_URL = os.environ.get("AMQP_INTEROP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# db 7: no other test or bench uses it (nothing here flushes it; every key we write is
# ours by its prefix or task id, and expires)
RESULT_BACKEND = os.environ.get("AMQP_INTEROP_RESULT_BACKEND", "redis://127.0.0.1:6379/7")
QUEUE_ENV = "AMQP_INTEROP_QUEUE"
TRACE_TTL = 600


_client: tuple[int, Any] | None = None


def scratch() -> Any:
    """A Redis client on the results db, one per process (pool children fork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        import redis

        _client = (os.getpid(), redis.Redis.from_url(RESULT_BACKEND))
    return _client[1]


# -- task bodies ------------------------------------------------------------------------
def when(self: Any, tag: str) -> dict[str, Any]:
    """What the worker saw of the message: its eta, and when it ran."""
    eta = self.request.eta
    return {"tag": tag, "eta": eta.isoformat() if hasattr(eta, "isoformat") else eta,
            "ran_at": time.time(), "hostname": self.request.hostname}


def retry_once(self: Any, prefix: str) -> dict[str, Any]:
    """Fails its first run, retried with a countdown; counts its runs."""
    r = scratch()
    runs = r.hincrby(f"{prefix}:tries", self.request.id, 1)
    r.expire(f"{prefix}:tries", TRACE_TTL)
    if self.request.retries == 0:
        raise self.retry(countdown=1, exc=KeyError("try again"))
    return {"retries": self.request.retries, "runs": runs}


def record(self: Any, prefix: str, i: int) -> int:
    """One HINCRBY per run, by task id: a lost task has no field, a doubled one has 2."""
    pipe = scratch().pipeline(transaction=False)
    pipe.hincrby(f"{prefix}:runs", self.request.id, 1)
    pipe.hincrby(f"{prefix}:by", (self.request.hostname or "?").split("@")[0], 1)
    pipe.expire(f"{prefix}:runs", TRACE_TTL)
    pipe.expire(f"{prefix}:by", TRACE_TTL)
    pipe.execute()
    return i


TASKS = (
    ("amqp.add", add, {}),
    ("amqp.tsum", tsum, {}),
    ("amqp.fail", fail, {}),
    ("amqp.when", when, {"bind": True}),
    ("amqp.retry_once", retry_once, {"bind": True}),
    ("amqp.record", record, {"bind": True, "ignore_result": True}),
)


def build(kind: str, queue: str) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered."""
    return build_app(kind, "amqp_interop", BROKER_URL, RESULT_BACKEND, queue, TASKS,
                     result_expires=TRACE_TTL)


# ``-A amqp_interop:celery_app``: built when the worker asks for it
__getattr__ = lazy_apps(globals(), lambda kind: build(kind, os.environ[QUEUE_ENV]))
