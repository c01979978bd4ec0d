"""What the Celery app and the celeriac app of the interop tests share.

Both app modules register the same task names (``interop.*``) with the same bodies,
written here once, so that a task behaves the same whichever worker runs it. Neither
Celery nor celeriac is imported here: only Redis and the standard library.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

BROKER_URL = os.environ.get("INTEROP_BROKER_URL", "redis://127.0.0.1:6379/8")
RESULT_BACKEND = os.environ.get("INTEROP_RESULT_BACKEND", "redis://127.0.0.1:6379/9")
# Where tasks leave traces for the tests to count (the results db: flushed per test).
SCRATCH_URL = os.environ.get("INTEROP_SCRATCH_URL", RESULT_BACKEND)

IDS = "interop.ids"            # set of task ids run by ``record``
DUPS = "interop.dups"          # how many times ``record`` saw an id it had seen before
BY_WORKER = "interop.by-worker"  # hash: worker node name -> tasks ``record`` ran there
ORDER = "interop.order"        # list: tags in the order ``order`` ran them
ERRBACKS = "interop.errbacks"  # hash: failed task id -> what the errback received
RAN = "interop.ran"            # hash: task id -> 1, for tasks whose result is not stored


class CustomError(Exception):
    """A user exception both sides can import, so each re-raises it by type."""


_client: tuple[int, Any] | None = None


def scratch() -> Any:
    """A Redis client for the scratch db, one per process (pool children fork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        import redis

        _client = (os.getpid(), redis.Redis.from_url(SCRATCH_URL))
    return _client[1]


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)


# -- task bodies ------------------------------------------------------------------------
def add(x: Any, y: Any) -> Any:
    return x + y


def echo(*args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


def fail(message: str) -> None:
    raise ValueError(message)


def fail_custom(message: str, code: int) -> None:
    raise CustomError(message, code)


def progress(self: Any, marker_dir: str) -> str:
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    Path(marker_dir, "progress").touch()
    wait_for_file(os.path.join(marker_dir, "go"))
    return "finished"


def retry_once(self: Any) -> dict[str, Any]:
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, exc=KeyError("try again"))
    return {"retries": self.request.retries}


def _iso(value: Any) -> Any:
    # Celery's request may hold a datetime where celeriac's holds the header string.
    return value.isoformat() if hasattr(value, "isoformat") else value


def whoami(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    delivery = r.delivery_info or {}
    return {
        "id": r.id, "task": self.name, "args": list(args), "kwargs": kwargs,
        "retries": r.retries, "root_id": r.root_id, "parent_id": r.parent_id,
        "eta": _iso(r.eta), "expires": _iso(r.expires), "hostname": r.hostname,
        "routing_key": delivery.get("routing_key"), "ran_at": time.time(),
    }


def noresult(self: Any) -> str:
    scratch().hset(RAN, self.request.id, 1)
    return "not stored"


def record(self: Any, i: int) -> int:
    r = scratch()
    pipe = r.pipeline(transaction=False)
    pipe.sadd(IDS, self.request.id)
    pipe.hincrby(BY_WORKER, self.request.hostname or "?", 1)
    added, _ = pipe.execute()
    if not added:
        r.incr(DUPS)
    return i


def order(tag: str) -> str:
    scratch().rpush(ORDER, tag)
    return tag


def errback(request: Any, exc: BaseException, traceback: Any, tag: Any = None) -> None:
    """A new-style errback: the failing worker calls it in place, as Celery 5 does."""
    scratch().hset(ERRBACKS, request.id, json.dumps({
        "style": "inline", "exc_type": type(exc).__name__, "exc": str(exc), "tag": tag,
        "traceback": str(traceback or ""),
    }))


def errback_by_id(task_id: str) -> str:
    """An old-style errback: sent as a task with the failed task's id."""
    scratch().hset(ERRBACKS, task_id, json.dumps({"style": "message"}))
    return task_id
