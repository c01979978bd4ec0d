"""Running one task: the request context, its body, and how it ended.

``Execution`` is used by every pool and by eager mode; it knows nothing of brokers. It
runs the body and hands the outcome to ``TaskEnd`` (outcome.py), which records it and
sends what follows; the outcome tells the consumer what to do with the message (ack,
requeue, dead-letter).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from .. import _state, signals, states
from ..exceptions import Ignore, Reject, Retry
from ..messages import TaskMessage
from ..context import Context
from .outcome import ExceptionInfo, Outcome, TaskEnd, format_exception

if TYPE_CHECKING:
    from ..app import Celery
    from ..result import EagerResult
    from ..task import Task

logger = logging.getLogger("celeriac.worker")

__all__ = ["Execution", "ExceptionInfo", "Outcome", "is_async", "request_from_message",
           "run_eagerly"]


def request_from_message(msg: TaskMessage, hostname: str | None) -> Context:
    headers = msg.headers
    embed = msg.embed
    props = msg.properties
    return Context(
        id=msg.id, task=msg.name, args=msg.args, kwargs=msg.kwargs,
        retries=headers.get("retries") or 0, eta=headers.get("eta"),
        expires=headers.get("expires"), headers=headers,
        delivery_info=props.get("delivery_info") or {}, reply_to=props.get("reply_to"),
        correlation_id=props.get("correlation_id") or msg.id,
        root_id=headers.get("root_id") or msg.id, parent_id=headers.get("parent_id"),
        group=headers.get("group"), group_index=headers.get("group_index"),
        chord=embed.get("chord"), chain=embed.get("chain"),
        callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"),
        hostname=hostname, origin=headers.get("origin"),
        timelimit=headers.get("timelimit"), ignore_result=bool(headers.get("ignore_result")),
        called_directly=False, is_eager=False, shadow=headers.get("shadow"),
        properties=props, priority=props.get("priority"),
    )


class Execution:
    """Runs tasks for one app; shared by every pool of a worker process.

    Args:
        stop: set when the worker stops; a result store outage is waited out until then.
    """

    def __init__(self, app: Celery, hostname: str | None = None,
                 stop: threading.Event | None = None) -> None:
        self.app = app
        self.hostname = hostname
        self.end = TaskEnd(app, hostname, stop)
        self.track_started_default = bool(app.conf.task_track_started)

    # -- the two halves, so an async task can run its body elsewhere ---------------------
    def before(self, task: Task[Any, Any], request: Context) -> None:
        task.push_request(request)
        if signals.task_prerun.receivers:
            signals.task_prerun.send(sender=task, task_id=request.id, task=task,
                                     args=request.args, kwargs=request.kwargs)
        track = task.track_started if task.track_started is not None else self.track_started_default
        if track:
            self.end.started(task, request, os.getpid())
        events = self.end.events_for(task)
        if events is not None:
            events.send("task-started", uuid=request.id)
        task.before_start(request.id or "", request.args, request.kwargs)

    def after(self, task: Task[Any, Any], request: Context, outcome: Outcome,
              error: BaseException | None) -> Outcome:
        try:
            return self.end.finish(task, request, outcome, error)
        finally:
            task.pop_request()

    # -- running ----------------------------------------------------------------------
    def run(self, task: Task[Any, Any], request: Context) -> Outcome:
        """Run a synchronous task to the end."""
        started = time.perf_counter()
        error: BaseException | None = None
        token = _state.current_task.set(task)
        try:
            self.before(task, request)
            try:
                value = task(*request.args, **request.kwargs)
                if inspect.iscoroutine(value):
                    value = asyncio.run(value)
                outcome = Outcome(states.SUCCESS, value)
            except BaseException as exc:  # noqa: BLE001 - every outcome is recorded
                outcome, error = self.classify(exc)
            outcome.runtime = time.perf_counter() - started
            return self.after(task, request, outcome, error)
        except Exception as exc:
            return self.end.internal_error(task, request, exc)
        finally:
            _state.current_task.reset(token)

    async def run_async(self, task: Task[Any, Any], request: Context) -> Outcome:
        """Run an ``async def`` task on the running event loop."""
        started = time.perf_counter()
        error: BaseException | None = None
        token = _state.current_task.set(task)
        try:
            self.before(task, request)
            try:
                value = await task(*request.args, **request.kwargs)
                outcome = Outcome(states.SUCCESS, value)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, asyncio.CancelledError):
                    raise
                outcome, error = self.classify(exc)
            outcome.runtime = time.perf_counter() - started
            return self.after(task, request, outcome, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.end.internal_error(task, request, exc)
        finally:
            _state.current_task.reset(token)

    @staticmethod
    def classify(exc: BaseException) -> tuple[Outcome, BaseException | None]:
        if isinstance(exc, Retry):
            return Outcome(states.RETRY, exc,
                           format_exception(exc.exc) if exc.exc else None), exc
        if isinstance(exc, Ignore):
            return Outcome(states.IGNORED), None
        if isinstance(exc, Reject):
            return Outcome(states.REJECTED, exc, requeue=exc.requeue, rejected=True), None
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        return Outcome(states.FAILURE, exc, format_exception(exc)), exc


# Asked once per message: whether a task's run function is a coroutine function. Keyed
# by the function itself, so a run replaced later (autoretry wraps it) is asked again.
_ASYNC_RUN: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def is_async(task: Task[Any, Any]) -> bool:
    """Whether ``task`` is an ``async def`` task."""
    run = task.run
    key = getattr(run, "__func__", run)
    try:
        return _ASYNC_RUN[key]
    except (KeyError, TypeError):
        found = inspect.iscoroutinefunction(run) or inspect.iscoroutinefunction(key)
        try:
            _ASYNC_RUN[key] = found
        except TypeError:  # not weakly referenceable: ask every time
            pass
        return found


def run_eagerly(task: Task[Any, Any], args: Any, kwargs: dict[str, Any] | None, *,
                task_id: str | None = None, retries: int = 0, link: Any = None,
                link_error: Any = None, throw: bool = False,
                options: dict[str, Any] | None = None) -> EagerResult:
    """``task.apply()``: run here as a worker would, retrying at once until done.

    Stores nothing unless ``task_store_eager_result``.

    Raises:
        Exception: the task's error, when it failed and ``throw`` is true.
    """
    from ..result import EagerResult

    app = task.app
    options = options or {}
    task_id = task_id or str(uuid.uuid4())
    args, kwargs = list(args or ()), dict(kwargs or {})
    parent = _state.current_task.get()
    parent_id = root_id = None
    if parent is not None and parent.request.id is not None:
        parent_id = parent.request.id
        root_id = parent.request.root_id or parent_id
    execution = Execution(app)
    store = bool(app.conf.task_store_eager_result)
    if not store:
        execution.end.ignore_result_default = True
        execution.end.store_errors_default = False
    while True:
        request = Context(
            id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries,
            is_eager=True, called_directly=False, root_id=options.get("root_id") or root_id
            or task_id, parent_id=options.get("parent_id") or parent_id,
            delivery_info={"is_eager": True, "routing_key": options.get("queue")},
            ignore_result=not store or bool(options.get("ignore_result")),
            callbacks=_as_list(link), errbacks=_as_list(link_error),
            headers=options.get("headers"), shadow=options.get("shadow"),
            priority=options.get("priority"))
        outcome = execution.run(task, request)
        retry = outcome.value
        if outcome.state == states.RETRY and isinstance(retry, Retry) and retry.sig is not None:
            args, kwargs = list(retry.sig.args), dict(retry.sig.kwargs)
            retries += 1
            continue
        break
    value = outcome.value
    if outcome.state == states.FAILURE and throw and isinstance(value, BaseException):
        raise value
    if outcome.state == states.RETRY and isinstance(value, Retry):
        value = value.exc or value
    return EagerResult(task_id, value, outcome.state, outcome.traceback, name=task.name)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [value] if isinstance(value, dict) else list(value)
