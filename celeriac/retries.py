"""Retrying: a task's own retries (``autoretry_for``, back-off) and publish retries.

Two unrelated kinds of retry live here because both are small:

* **task retries** -- ``Task.retry`` sends the task again; ``autoretry_for`` wraps the
  task's ``run`` so that listed exceptions call ``retry`` for it, with an exponential
  back-off when ``retry_backoff`` is set.
* **publish retries** -- ``apply_async(retry=True, retry_policy=...)`` tries a publish
  again when the broker connection fails, as Celery's producer does.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .exceptions import TaskControl

if TYPE_CHECKING:
    from .task import Context, Task

logger = logging.getLogger("celeriac.retries")
_sleep = time.sleep  # one place for tests to stand in for the clock

#: Celery's default ``task_publish_retry_policy`` (its ``app/defaults.py`` table).
DEFAULT_PUBLISH_POLICY: dict[str, Any] = {
    "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1,
}

# Protocol headers that a retry rebuilds itself; any other header the message carried
# was added by the sender (``apply_async(headers=...)``) and travels on with the retry.
_PROTOCOL_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "compression",
})


# -- task retries ----------------------------------------------------------------------
def backoff_delay(factor: float, retries: int, maximum: float | None,
                  jitter: bool) -> float:
    """The countdown before retry number ``retries + 1`` under exponential back-off.

    Args:
        factor: seconds of the first delay (``retry_backoff``; ``True`` means 1).
        retries: retries already made (``request.retries``).
        maximum: cap on the delay (``retry_backoff_max``); None: no cap.
        jitter: pick the delay at random in ``[0, delay]`` so that many tasks failing
            together do not all come back at the same moment.

    Returns:
        The delay in seconds, never negative.
    """
    delay = float(factor) * (2 ** max(0, retries))
    if maximum is not None:
        delay = min(delay, float(maximum))
    if jitter:
        delay = random.uniform(0, delay)
    return max(0.0, delay)


def install_autoretry(task: Task[Any, Any]) -> None:
    """Wrap ``task.run`` so the exceptions in ``autoretry_for`` retry the task.

    The wrapper reads the task's options (``autoretry_for``, ``retry_kwargs``,
    ``retry_backoff`` ...) when it fires, so annotations applied later still count.
    It is installed once per task, and only when ``autoretry_for`` is set; since it wraps
    ``run`` it works the same in a worker and in ``apply()``.
    """
    if not task.autoretry_for or "_celeriac_orig_run" in task.__dict__:
        return
    orig = task.run
    run: Callable[..., Any]
    if inspect.iscoroutinefunction(orig):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await orig(*args, **kwargs)
            except TaskControl:
                raise
            except Exception as exc:
                _autoretry(task, exc)
                raise
        run = run_async
    else:
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            try:
                return orig(*args, **kwargs)
            except TaskControl:
                raise
            except Exception as exc:
                _autoretry(task, exc)
                raise
        run = run_sync
    functools.update_wrapper(run, orig)
    task.__dict__["_celeriac_orig_run"] = orig
    task.__dict__["run"] = run


def _autoretry(task: Task[Any, Any], exc: Exception) -> None:
    """Retry ``task`` for ``exc`` if its options say so; return to re-raise ``exc``."""
    if not isinstance(exc, tuple(task.autoretry_for)):
        return
    if task.dont_autoretry_for and isinstance(exc, tuple(task.dont_autoretry_for)):
        return
    options = dict(task.retry_kwargs or {})
    if task.retry_backoff:
        factor = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
        options["countdown"] = backoff_delay(factor, task.request.retries or 0,
                                             task.retry_backoff_max, bool(task.retry_jitter))
    raise task.retry(exc=exc, **options)


def resend_options(request: Context) -> dict[str, Any]:
    """``send_task`` options that send ``request`` again as the same task.

    Everything that ties the message to its workflow (ids, callbacks, chain, chord,
    time limits, expiry, priority, custom headers) is kept.
    """
    from .messages import from_iso

    delivery = request.delivery_info or {}
    headers = {k: v for k, v in (request.headers or {}).items()
               if k not in _PROTOCOL_HEADERS}
    time_limit, soft_time_limit = (list(request.timelimit or ()) + [None, None])[:2]
    options: dict[str, Any] = {
        "task_id": request.id, "root_id": request.root_id,
        "parent_id": request.parent_id, "group_id": request.group,
        "group_index": request.group_index, "shadow": request.shadow,
        "link": request.callbacks, "link_error": request.errbacks,
        "chain": request.chain, "chord": request.chord,
        "time_limit": time_limit, "soft_time_limit": soft_time_limit,
        "expires": from_iso(request.expires) if isinstance(request.expires, str)
        else request.expires,
        "reply_to": request.reply_to or None,
        "ignore_result": request.ignore_result,
        "headers": headers or None,
    }
    priority = (request.properties or {}).get("priority")
    if priority:
        options["priority"] = priority
    if delivery.get("exchange") or not delivery.get("routing_key"):
        # Sent through a named exchange: go back the same way.
        options["exchange"] = delivery.get("exchange") or None
        options["routing_key"] = delivery.get("routing_key")
    else:
        options["queue"] = delivery["routing_key"]
    return options


# -- publish retries -------------------------------------------------------------------
def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker could not be reached (worth another try).

    ``OSError`` covers sockets and the built-in ``ConnectionError``; redis-py's
    connection and timeout errors derive from its own ``RedisError`` instead, and are
    recognised by name so that redis need not be imported here.
    """
    if isinstance(exc, OSError):
        return True
    for cls in type(exc).__mro__:
        if cls.__name__ in ("ConnectionError", "TimeoutError") and \
                cls.__module__.split(".")[0] in ("redis", "kombu", "amqp"):
            return True
    return False


def publish_policy(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """``policy`` completed with the defaults for the keys it leaves out."""
    return {**DEFAULT_PUBLISH_POLICY, **(policy or {})}


def call_with_retry(fn: Callable[[], Any], policy: Mapping[str, Any] | None,
                    what: str = "publish") -> Any:
    """Call ``fn``; on a connection error, wait and call again as ``policy`` says.

    The waits are ``interval_start``, then ``interval_step`` more each time, never
    more than ``interval_max``; after ``max_retries`` retries (None: forever) the last
    error is raised. Errors that are not about the connection are raised at once.

    Args:
        fn: the operation (a publish).
        policy: ``max_retries``, ``interval_start``, ``interval_step``, ``interval_max``.
        what: named in the log line of each retry.

    Returns:
        What ``fn`` returned.
    """
    p = publish_policy(policy)
    max_retries = p["max_retries"]
    interval = float(p["interval_start"] or 0)
    step = float(p["interval_step"] or 0)
    interval_max = float(p["interval_max"] if p["interval_max"] is not None else interval)
    retries = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            if max_retries is not None and retries >= max_retries:
                raise
            wait = min(interval, interval_max)
            retries += 1
            logger.warning("%s failed: %r; retry %d%s in %.2fs", what, exc, retries,
                           f"/{max_retries}" if max_retries is not None else "", wait)
            if wait > 0:
                _sleep(wait)
            interval += step


__all__ = ["backoff_delay", "install_autoretry", "resend_options", "is_connection_error",
           "call_with_retry", "publish_policy", "DEFAULT_PUBLISH_POLICY"]
