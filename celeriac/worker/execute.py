"""Running one task: the request context, states, handlers, signals and callbacks.

``Execution`` is used by every pool; it knows nothing of brokers. Its outcome tells the
consumer what to do with the message (ack, requeue, dead-letter).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import traceback as tb_module
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _state, signals, states
from ..backends.base import is_connection_error
from ..exceptions import Ignore, Reject, Retry
from ..messages import TaskMessage
from ..task import Context, Task

if TYPE_CHECKING:
    from ..app import Celery
    from ..result import EagerResult

logger = logging.getLogger("celeriac.worker")


class ExceptionInfo:
    """What ``on_failure``/``on_retry`` receive as ``einfo``."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(tb_module.format_exception(exc))

    def __str__(self) -> str:
        return self.traceback


@dataclass(slots=True)
class Outcome:
    state: str
    value: Any = None
    traceback: str | None = None
    requeue: bool = False  # Reject(requeue=True)
    rejected: bool = False
    runtime: float = 0.0
    #: False when the outcome could not be stored (the result store stayed down)
    recorded: bool = True
    task_id: str | None = None


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


# How long the wait between two attempts to store a result grows to, while the result
# store is unreachable.
MAX_STORE_PAUSE = 5.0


class Execution:
    """Runs tasks for one app; shared by every pool of a worker process.

    Args:
        stop: set when the worker stops; a result store outage is waited out until then.
    """

    def __init__(self, app: Celery, hostname: str | None = None,
                 stop: threading.Event | None = None) -> None:
        self.app = app
        self.hostname = hostname
        self.stop = stop
        conf = app.conf
        self.ignore_result_default = bool(conf.task_ignore_result)
        self.track_started_default = bool(conf.task_track_started)
        self.store_errors_default = bool(conf.task_store_errors_even_if_ignored)

    def _ignores_result(self, task: Task[Any, Any], request: Context) -> bool:
        if request.ignore_result:
            return True
        if task.ignore_result is not None:
            return bool(task.ignore_result)
        return self.ignore_result_default

    def _stores_errors(self, task: Task[Any, Any], request: Context) -> bool:
        if not self._ignores_result(task, request):
            return True
        store = task.store_errors_even_if_ignored
        return bool(self.store_errors_default if store is None else store)

    # -- the two halves, so an async task can run its body elsewhere ---------------------
    def before(self, task: Task[Any, Any], request: Context) -> None:
        task.push_request(request)
        if signals.task_prerun.receivers:
            signals.task_prerun.send(sender=task, task_id=request.id, task=task,
                                     args=request.args, kwargs=request.kwargs)
        track = task.track_started if task.track_started is not None else self.track_started_default
        if track and not self._ignores_result(task, request):
            task.backend.mark_as_started(request.id, request=request, pid=_pid(),
                                         hostname=self.hostname)
        task.before_start(_id(request), request.args, request.kwargs)

    def after(self, task: Task[Any, Any], request: Context, outcome: Outcome,
              error: BaseException | None) -> Outcome:
        """Record the outcome, call handlers and signals, send callbacks."""
        try:
            if outcome.state == states.SUCCESS:
                self._on_success(task, request, outcome)
            elif outcome.state == states.RETRY:
                self._on_retry(task, request, outcome, error)
            elif outcome.state == states.FAILURE:
                assert error is not None
                self._on_failure(task, request, outcome, error)
            try:
                task.after_return(outcome.state, outcome.value, _id(request), request.args,
                                  request.kwargs, ExceptionInfo(error) if error else None)
            except Exception:
                logger.exception("after_return of %s[%s] raised", task.name, request.id)
            if signals.task_postrun.receivers:
                signals.task_postrun.send(sender=task, task_id=request.id, task=task,
                                          args=request.args, kwargs=request.kwargs,
                                          retval=outcome.value, state=outcome.state)
        finally:
            task.pop_request()
        return outcome

    def _record(self, write: Any, *args: Any, **kwargs: Any) -> None:
        """Store an outcome, waiting out an outage of the result store.

        A task that ran must not end with its result lost: connection errors (the
        backend already retried a few times) are retried here, backed off, until the
        store answers or the worker stops. Other errors are raised at once.
        """
        pause = 0.1
        since: float | None = None
        while True:
            try:
                write(*args, **kwargs)
                if since is not None:
                    logger.warning("result store reachable again after %.1fs",
                                   time.monotonic() - since)
                return
            except Exception as exc:
                if not is_connection_error(exc) or self.stop is None or self.stop.is_set():
                    raise
                if since is None:
                    since = time.monotonic()
                    logger.error("cannot store the result of %s yet (%r); retrying until "
                                 "the result store answers", args[0] if args else "?", exc)
                if self.stop.wait(pause):
                    raise
                pause = min(pause * 2, MAX_STORE_PAUSE)

    def _on_success(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        # Callbacks and the next chain step are sent before the result is stored, as
        # Celery does: send_task records each task sent under this request in
        # request.children, which the stored meta carries to AsyncResult.children.
        if request.callbacks:
            self._send_callbacks(request, outcome.value)
        if request.chain:
            self._send_next_step(request, outcome.value)
        if not self._ignores_result(task, request):
            self._record(task.backend.mark_as_done, request.id, outcome.value,
                         request=request)
        task.on_success(outcome.value, _id(request), request.args, request.kwargs)
        if signals.task_success.receivers:
            signals.task_success.send(sender=task, result=outcome.value)
        if request.chord:
            self.chord_part(task.backend, request, states.SUCCESS, outcome.value)
        logger.info("Task %s[%s] succeeded in %.6fs: %r", task.name, request.id,
                    outcome.runtime, outcome.value)

    def _on_retry(self, task: Task[Any, Any], request: Context, outcome: Outcome,
                  error: BaseException | None) -> None:
        reason = outcome.value
        exc = reason.exc if isinstance(reason, Retry) and reason.exc is not None else reason
        # Task.retry stores RETRY itself, before it sends the next run.
        if not getattr(reason, "_celeriac_stored", False) and self._stores_errors(task, request):
            self._record(task.backend.mark_as_retry, request.id, exc, outcome.traceback,
                         request=request)
        einfo = ExceptionInfo(error) if error else None
        task.on_retry(exc, _id(request), request.args, request.kwargs, einfo)
        if signals.task_retry.receivers:
            signals.task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)
        logger.info("Task %s[%s] retry: %s", task.name, request.id, reason)

    def _on_failure(self, task: Task[Any, Any], request: Context, outcome: Outcome,
                    exc: BaseException) -> None:
        if self._stores_errors(task, request):
            self._record(task.backend.mark_as_failure, request.id, exc, outcome.traceback,
                         request=request)
        einfo = ExceptionInfo(exc)
        task.on_failure(exc, _id(request), request.args, request.kwargs, einfo)
        if signals.task_failure.receivers:
            signals.task_failure.send(sender=task, task_id=request.id, exception=exc,
                                      args=request.args, kwargs=request.kwargs,
                                      traceback=exc.__traceback__, einfo=einfo)
        if request.errbacks:
            self._call_errbacks(request, exc, einfo)
        if request.chord:
            self.chord_part(task.backend, request, states.FAILURE, exc)
        expected = isinstance(exc, task.throws) if task.throws else False
        log = logger.info if expected else logger.error
        log("Task %s[%s] raised unexpected: %r\n%s", task.name, request.id, exc,
            "" if expected else outcome.traceback)

    def _send_callbacks(self, request: Context, value: Any) -> None:
        from ..canvas import group, signature

        sigs = [signature(sig, app=self.app) for sig in request.callbacks]
        # Celery's layout: one callback is sent alone; several go as one group (a group
        # callback as its own), so the task's children hold one result for them.
        groups: list[Any] = [sig for sig in sigs if isinstance(sig, group)]
        singles = [sig for sig in sigs if not isinstance(sig, group)]
        if len(sigs) > 1 and singles:
            groups.append(group(singles, app=self.app))
        elif singles:
            groups.append(singles[0])
        for sig in groups:
            sig.apply_async((value,), parent_id=request.id, root_id=request.root_id)

    def _send_next_step(self, request: Context, value: Any) -> None:
        # embed.chain holds the remaining steps last-first: pop the next one and send it
        # with the rest, this result prepended (unless it is immutable).
        from ..canvas import from_dict

        rest = list(request.chain)
        step = from_dict(rest.pop(), app=self.app)
        step.apply_async((value,), chain=rest, parent_id=request.id,
                         root_id=request.root_id or request.id)

    def chord_part(self, backend: Any, request: Context, state: str, value: Any) -> None:
        """Count this chord header task in; the last one in sends the body or fails it.

        Every way a header task can end calls this: run to the end, revoked or expired
        before it ran, killed at its hard time limit or lost with its pool process.
        A member that is never counted would leave its chord waiting forever.
        """
        from ..canvas import from_dict
        from ..exceptions import ChordError

        body = from_dict(request.chord, app=self.app)
        group_id = request.group
        if not group_id:
            logger.error("chord member %s has no group id; body %s not sent",
                         request.id, body.name)
            return
        parts = backend.chord_part_return(
            group_id, request.group_index or 0, _id(request), state, value)
        if parts is None:
            return
        failed = next((p for p in parts if p.state in states.PROPAGATE_STATES), None)
        if failed is None:
            body.apply_async(([p.result for p in parts],), parent_id=request.id,
                             root_id=request.root_id)
            return
        cause = backend.exception_to_python(failed.result)
        error = ChordError(f"Dependency {failed.task_id} raised {cause!r}")
        self._fail_body(body, request, error)

    def _fail_body(self, body: Any, request: Context, error: BaseException) -> None:
        body_id = body.id
        body_request = Context(id=body_id, task=body.name, args=body.args, kwargs=body.kwargs,
                               group=request.group, parent_id=request.id,
                               root_id=request.root_id, errbacks=body.options.get("link_error"))
        from ..canvas import group

        # A group body never runs: each of its members fails, so a caller waiting on
        # the body's GroupResult learns why instead of waiting forever.
        failed_ids = ([member.id for member in body.tasks] if isinstance(body, group)
                      else [body_id])
        for failed_id in failed_ids:
            if failed_id:
                self.app.backend.mark_as_failure(failed_id, error, _format(error),
                                                 request=body_request)
        errbacks = body_request.errbacks
        if errbacks:
            body_request.errbacks = [errbacks] if isinstance(errbacks, dict) else errbacks
            self._call_errbacks(body_request, error, ExceptionInfo(error))

    def _call_errbacks(self, request: Context, exc: BaseException, einfo: ExceptionInfo) -> None:
        from ..canvas import Signature

        for sig in request.errbacks:
            sig = Signature(sig, app=self.app)
            task = self.app.tasks.get(sig.name)
            # Celery 5's rule: an errback whose function takes (request, exc, traceback)
            # besides its partial arguments is called here, with those first; any
            # other errback is sent with the failed task's id.
            if task is not None and _takes_request(task, len(sig.args)):
                try:
                    task(request, exc, einfo.traceback, *sig.args, **sig.kwargs)
                except Exception:
                    logger.exception("errback %s for %s raised", sig.name, request.id)
            else:
                sig.apply_async([request.id], parent_id=request.id, root_id=request.root_id)

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
            return self.internal_error(task, request, exc)
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
            return self.internal_error(task, request, exc)
        finally:
            _state.current_task.reset(token)

    @staticmethod
    def classify(exc: BaseException) -> tuple[Outcome, BaseException | None]:
        if isinstance(exc, Retry):
            return Outcome(states.RETRY, exc, _format(exc.exc) if exc.exc else None), exc
        if isinstance(exc, Ignore):
            return Outcome(states.IGNORED), None
        if isinstance(exc, Reject):
            return Outcome(states.REJECTED, exc, requeue=exc.requeue, rejected=True), None
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        return Outcome(states.FAILURE, exc, _format(exc)), exc

    def internal_error(self, task: Task[Any, Any], request: Context,
                       exc: Exception) -> Outcome:
        # Something outside the task body failed (a handler, the result store). The
        # task is marked failed where possible so that nobody waits forever.
        logger.exception("Internal error running %s[%s]: %r", task.name, request.id, exc)
        signals.task_internal_error.send(sender=task, task_id=request.id, args=request.args,
                                         kwargs=request.kwargs, request=request, exception=exc,
                                         traceback=exc.__traceback__,
                                         einfo=ExceptionInfo(exc))
        recorded = True
        try:
            task.backend.mark_as_failure(request.id, exc, _format(exc), request=request)
        except Exception:
            logger.exception("cannot record the failure of %s", request.id)
            recorded = False
        return Outcome(states.FAILURE, exc, _format(exc), recorded=recorded,
                       task_id=request.id)


def is_async(task: Task[Any, Any]) -> bool:
    """Whether ``task`` is an ``async def`` task (asked once per message, so cached)."""
    cached = task.__dict__.get("_celeriac_is_async")
    if cached is None:
        run = task.run
        cached = inspect.iscoroutinefunction(run) or inspect.iscoroutinefunction(
            getattr(run, "__func__", None))
        task.__dict__["_celeriac_is_async"] = cached
    return bool(cached)


def _takes_request(task: Task[Any, Any], partial_args: int) -> bool:
    try:
        sig = inspect.signature(task.run)
    except (TypeError, ValueError):
        return False
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 + partial_args


def _id(request: Context) -> str:
    # A worker request always has an id; only direct calls have none.
    return request.id or ""


def _format(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(exc))


def _pid() -> int:
    import os

    return os.getpid()


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
        execution.ignore_result_default = True
        execution.store_errors_default = False
    while True:
        request = Context(
            id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries,
            is_eager=True, called_directly=False, root_id=options.get("root_id") or root_id
            or task_id, parent_id=options.get("parent_id") or parent_id,
            delivery_info={"is_eager": True, "routing_key": options.get("queue")},
            ignore_result=not store or bool(options.get("ignore_result")),
            callbacks=_as_list(link), errbacks=_as_list(link_error),
            headers=options.get("headers"), shadow=options.get("shadow"))
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
