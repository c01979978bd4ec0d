"""What a dashboard user may do, as plain functions over ``app.control``,
``app.send_task`` and ``celeriac.dashboard.queues``; the HTTP API and the pages share
them.

Each raises ``ActionError`` (with the HTTP status that fits) when the thing cannot be
done, with a message that says why; a worker's own refusal is passed on as it said it.
"""

from __future__ import annotations

import ast
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..control import signal_name
from ..control.commands import jsonable
from . import queues

if TYPE_CHECKING:
    from ..app import Celery
    from ..result import AsyncResult
    from .store import HistoryStore

# Flower's date format for ``eta`` and ``expires`` in apply bodies.
FLOWER_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class ActionError(Exception):
    """An action that could not be done: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- tasks ------------------------------------------------------------------------------
def revoke(app: Celery, task_id: str, terminate: bool = False,
           signal: str | int = "SIGTERM") -> str:
    """Revoke a task (kept in the broker, broadcast to the workers); returns Flower's
    message."""
    try:
        name = signal_name(signal)
    except (ValueError, KeyError) as exc:
        raise ActionError(400, f"unknown signal {signal!r}") from exc
    app.control.revoke(task_id, terminate=terminate, signal=name)
    return f"Revoked '{task_id}'"


def task_options(options: dict[str, Any]) -> dict[str, Any]:
    """``apply_async`` options from a JSON body: ``eta`` and ``expires`` may be
    Flower's ``%Y-%m-%d %H:%M:%S.%f`` dates (or ISO 8601); ``countdown`` a number.

    Raises:
        ActionError: a value that does not parse (400).
    """
    found = dict(options)
    try:
        if "eta" in found and isinstance(found["eta"], str):
            found["eta"] = _date(found["eta"])
        if "countdown" in found:
            found["countdown"] = float(found["countdown"])
        if "expires" in found and isinstance(found["expires"], str):
            try:
                found["expires"] = float(found["expires"])
            except ValueError:
                found["expires"] = _date(found["expires"])
    except (TypeError, ValueError) as exc:
        raise ActionError(400, f"invalid option: {exc}") from exc
    return found


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, FLOWER_DATE_FORMAT)
    except ValueError:
        return datetime.fromisoformat(text)


def apply_async(app: Celery, name: str, args: list[Any], kwargs: dict[str, Any],
                options: dict[str, Any]) -> AsyncResult[Any]:
    """Send a task this process knows (Flower's async-apply: 404 when unknown)."""
    if name not in app.tasks:
        raise ActionError(404, f"Unknown task '{name}'")
    result: AsyncResult[Any] = app.tasks[name].apply_async(args=args, kwargs=kwargs,
                                                           **task_options(options))
    return result


def send_task(app: Celery, name: str, args: list[Any], kwargs: dict[str, Any],
              options: dict[str, Any]) -> AsyncResult[Any]:
    """Send a task by name, known here or not (Flower's send-task)."""
    return app.send_task(name, args=args, kwargs=kwargs, **task_options(options))


def result_answer(result: AsyncResult[Any], wait: float | None = None) -> dict[str, Any]:
    """Flower's answer for a result: ``task-id``, ``state``, and ``result`` (plus
    ``traceback`` on failure) once ready; waits up to ``wait`` seconds first."""
    if wait:
        try:
            result.get(timeout=wait, propagate=False)
        except Exception:  # noqa: BLE001 - not ready in time: say the state it has
            pass
    answer: dict[str, Any] = {"task-id": result.id, "state": result.state}
    if result.ready():
        answer["result"] = jsonable(result.result)
        if result.state == "FAILURE":
            answer["traceback"] = result.traceback
    return answer


def retry(app: Celery, store: HistoryStore, task_id: str) -> dict[str, Any]:
    """Send a finished task again with its arguments; ``{"task-id", "retry_of"}``.

    The exact arguments come from the result backend when it keeps them
    (``result_extended``); else from the repr the task's events carried, read with
    ``ast.literal_eval`` (only literals: a repr of an object, or one cut short, is not
    read back).

    Raises:
        ActionError: 404 for a task the store does not know; 409 when its arguments
            cannot be recovered.
    """
    row = store.task(task_id)
    if row is None:
        raise ActionError(404, f"Unknown task '{task_id}'")
    name, args, kwargs = _from_backend(app, task_id)
    name = name or row.get("name")
    if args is None:
        args, kwargs = _from_repr(row)
    if not name:
        raise ActionError(409, f"task {task_id} has no known name: it cannot be retried")
    options: dict[str, Any] = {}
    if row.get("routing_key") and not row.get("exchange"):
        options["queue"] = row["routing_key"]  # the default exchange routes by queue name
    sent = app.send_task(name, args=list(args), kwargs=dict(kwargs or {}), **options)
    return {"task-id": sent.id, "retry_of": task_id}


def _from_backend(app: Celery, task_id: str) -> tuple[str | None, Any, Any]:
    try:
        meta = app.backend.get_task_meta(task_id)
    except Exception:  # noqa: BLE001 - no backend, or it is down: the events may do
        return None, None, None
    if isinstance(meta.get("args"), (list, tuple)) and isinstance(
            meta.get("kwargs", {}), dict):
        return meta.get("name"), list(meta["args"]), dict(meta.get("kwargs") or {})
    return meta.get("name"), None, None


def _from_repr(row: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    try:
        args = ast.literal_eval(row.get("args") or "()")
        kwargs = ast.literal_eval(row.get("kwargs") or "{}")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ActionError(409, (
            f"the arguments of task {row.get('uuid')} cannot be recovered: the result "
            f"backend does not keep them (set result_extended = True) and their repr "
            f"is not a Python literal ({type(exc).__name__})")) from exc
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ActionError(409, f"the arguments of task {row.get('uuid')} are not a "
                               f"list and a dict: it cannot be retried")
    return list(args), kwargs


def rate_limit(app: Celery, task_name: str, rate: str | None, worker: str | None,
               timeout: float) -> str:
    """Set a task's rate limit on one worker or all; the worker's answer."""
    replies = app.control.rate_limit(task_name, rate or None, destination=_dest(worker),
                                     reply=True, timeout=timeout)
    return _answer(replies, worker, f"set the rate limit of {task_name}")


def time_limit(app: Celery, task_name: str, soft: float | None, hard: float | None,
               worker: str | None, timeout: float) -> str:
    replies = app.control.time_limit(task_name, soft=soft, hard=hard,
                                     destination=_dest(worker), reply=True, timeout=timeout)
    return _answer(replies, worker, f"set the time limits of {task_name}")


# -- workers ----------------------------------------------------------------------------
def shutdown(app: Celery, worker: str) -> str:
    app.control.shutdown(destination=[worker])
    return "Shutting down!"


def pool_grow(app: Celery, worker: str, n: int, timeout: float) -> str:
    replies = app.control.pool_grow(n, destination=[worker], reply=True, timeout=timeout)
    _answer(replies, worker, f"grow {worker}'s pool")
    return f"Growing '{worker}' worker's pool by {n}"


def pool_shrink(app: Celery, worker: str, n: int, timeout: float) -> str:
    replies = app.control.pool_shrink(n, destination=[worker], reply=True, timeout=timeout)
    _answer(replies, worker, f"shrink {worker}'s pool")
    return f"Shrinking '{worker}' worker's pool by {n}"


def autoscale(app: Celery, worker: str, min: int, max: int, timeout: float) -> str:
    replies = app.control.autoscale(max, min, destination=[worker], reply=True,
                                    timeout=timeout)
    _answer(replies, worker, f"autoscale {worker}")
    return f"Autoscaling '{worker}' worker (min={min}, max={max})"


def add_consumer(app: Celery, worker: str, queue: str, timeout: float) -> str:
    replies = app.control.add_consumer(queue, destination=[worker], reply=True,
                                       timeout=timeout)
    return _answer(replies, worker, f"add a consumer of {queue} to {worker}")


def cancel_consumer(app: Celery, worker: str, queue: str, timeout: float) -> str:
    replies = app.control.cancel_consumer(queue, destination=[worker], reply=True,
                                          timeout=timeout)
    return _answer(replies, worker, f"cancel the consumer of {queue} on {worker}")


def _dest(worker: str | None) -> list[str] | None:
    return [worker] if worker else None


def _answer(replies: Any, worker: str | None, what: str) -> str:
    """The ``ok`` message of the worker's reply (the first one's, to all workers).

    Raises:
        ActionError: 403 with the worker's error (as Flower), 404 when no worker
            answered in time.
    """
    for reply in replies or []:
        for node, answer in reply.items():
            if worker and node != worker:
                continue
            if isinstance(answer, dict) and "ok" in answer:
                return str(answer["ok"])
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise ActionError(403, f"failed to {what}: {error or 'unknown reason'}")
    raise ActionError(404, f"failed to {what}: no worker answered"
                           + (f" (is '{worker}' online?)" if worker else ""))


# -- queues (celeriac.dashboard.queues does the broker work) ---------------------------
def purge_queue(app: Celery, name: str) -> int:
    return queues.purge_queue(app, name)


def requeue_dead_letter(app: Celery, id: str) -> bool:
    try:
        done = queues.requeue_dead_letter(app, id)
    except ValueError as exc:  # it names no queue to go back to
        raise ActionError(409, str(exc)) from exc
    if not done:
        raise ActionError(404, f"no dead letter {id!r} (already requeued or deleted?)")
    return True


def delete_dead_letter(app: Celery, id: str) -> bool:
    if not queues.delete_dead_letter(app, id):
        raise ActionError(404, f"no dead letter {id!r} (already requeued or deleted?)")
    return True
