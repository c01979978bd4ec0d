"""The end of a task, in one place.

Every way a task ends goes through ``TaskEnd``: it ran to the end (``finish``: success,
retry, failure), it never ran (``revoked``: revoked or expired before it started), or it
was lost on the way (``lost``: its pool process died, it was killed at its hard time
limit, set aside as poison, refused, unregistered, interrupted with its whole worker).
For each, ``TaskEnd`` stores the state and result (waiting out an outage of the result
store), counts the task into its chord, calls the task's handlers, sends the signals,
the callbacks, the next chain step and the errbacks. Every pool, the consumer, the
supervisors of lost work and eager mode end tasks through it, and nothing else writes a
task's final state: a later feature (events, say) hooks in here once.

It knows nothing of brokers: what becomes of a message is the consumer's business, told
by the ``Outcome``.
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
import time
import traceback as tb_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import signals, states
from ..backends.base import is_connection_error
from ..context import Context
from ..events.event import short_repr
from ..exceptions import ChordError, Retry, TaskRevokedError

if TYPE_CHECKING:
    from ..app import Celery
    from ..events import EventDispatcher
    from ..task import Task

logger = logging.getLogger("celeriac.worker")

# How long the wait between two attempts to store a result grows to, while the result
# store is unreachable.
MAX_STORE_PAUSE = 5.0


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
    """How a run ended, and what the consumer needs to settle its message."""

    state: str
    value: Any = None
    traceback: str | None = None
    requeue: bool = False  # Reject(requeue=True)
    rejected: bool = False
    runtime: float = 0.0
    #: False when the outcome could not be stored (the result store stayed down)
    recorded: bool = True
    task_id: str | None = None


def format_exception(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(exc))


class TaskEnd:
    """Ends tasks for one app.

    Args:
        hostname: the worker's node name, stored with STARTED.
        stop: set when the worker stops; a result store outage is waited out until then
            (None: not waited out, as in eager mode).
        events: where the task events of each end go (``-E``), or None.
    """

    def __init__(self, app: Celery, hostname: str | None = None,
                 stop: threading.Event | None = None,
                 events: EventDispatcher | None = None) -> None:
        self.app = app
        self.hostname = hostname
        self.stop = stop
        self.events = events
        conf = app.conf
        self.ignore_result_default = bool(conf.task_ignore_result)
        self.store_errors_default = bool(conf.task_store_errors_even_if_ignored)

    # -- what is stored ---------------------------------------------------------------
    def ignores_result(self, task: Task[Any, Any], request: Context) -> bool:
        if request.ignore_result:
            return True
        if task.ignore_result is not None:
            return bool(task.ignore_result)
        return self.ignore_result_default

    def stores_errors(self, task: Task[Any, Any], request: Context) -> bool:
        if not self.ignores_result(task, request):
            return True
        store = task.store_errors_even_if_ignored
        return bool(self.store_errors_default if store is None else store)

    def record(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
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

    # -- the end of a run ---------------------------------------------------------------
    def started(self, task: Task[Any, Any], request: Context, pid: int) -> None:
        if not self.ignores_result(task, request):
            task.backend.mark_as_started(request.id, request=request, pid=pid,
                                         hostname=self.hostname)

    def finish(self, task: Task[Any, Any], request: Context, outcome: Outcome,
               error: BaseException | None) -> Outcome:
        """Record how a run ended, call the handlers and signals, send what follows."""
        if outcome.state == states.SUCCESS:
            self._succeeded(task, request, outcome)
        elif outcome.state == states.RETRY:
            self._retried(task, request, outcome, error)
        elif outcome.state == states.FAILURE:
            assert error is not None
            self._failed(task, request, outcome, error)
        events = self.events_for(task)
        if events is not None:
            _send_end(events, _id(request), outcome, error)
        try:
            task.after_return(outcome.state, outcome.value, _id(request), request.args,
                              request.kwargs, ExceptionInfo(error) if error else None)
        except Exception:
            logger.exception("after_return of %s[%s] raised", task.name, request.id)
        if signals.task_postrun.receivers:
            signals.task_postrun.send(sender=task, task_id=request.id, task=task,
                                      args=request.args, kwargs=request.kwargs,
                                      retval=outcome.value, state=outcome.state)
        return outcome

    def _succeeded(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        # Callbacks and the next chain step are sent before the result is stored, as
        # Celery does: send_task records each task sent under this request in
        # request.children, which the stored meta carries to AsyncResult.children.
        if request.callbacks:
            self._send_callbacks(request, outcome.value)
        if request.chain:
            self._send_next_step(request, outcome.value)
        if not self.ignores_result(task, request):
            self.record(task.backend.mark_as_done, request.id, outcome.value,
                        request=request)
        task.on_success(outcome.value, _id(request), request.args, request.kwargs)
        if signals.task_success.receivers:
            signals.task_success.send(sender=task, result=outcome.value)
        if request.chord:
            self.chord_part(task.backend, request, states.SUCCESS, outcome.value)
        logger.info("Task %s[%s] succeeded in %.6fs: %r", task.name, request.id,
                    outcome.runtime, outcome.value)

    def _retried(self, task: Task[Any, Any], request: Context, outcome: Outcome,
                 error: BaseException | None) -> None:
        reason = outcome.value
        exc = reason.exc if isinstance(reason, Retry) and reason.exc is not None else reason
        # Task.retry stores RETRY itself (through retrying), before it sends the next run.
        stored = isinstance(reason, Retry) and reason.stored
        if not stored and self.stores_errors(task, request):
            self.record(task.backend.mark_as_retry, request.id, exc, outcome.traceback,
                        request=request)
        einfo = ExceptionInfo(error) if error else None
        task.on_retry(exc, _id(request), request.args, request.kwargs, einfo)
        if signals.task_retry.receivers:
            signals.task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)
        logger.info("Task %s[%s] retry: %s", task.name, request.id, reason)

    def retrying(self, task: Task[Any, Any], request: Context, reason: BaseException) -> None:
        """Store RETRY for a task about to send its next run (``Task.retry``).

        Stored before the new message is sent: stored after, it could overwrite the
        result of the retry itself, run meanwhile by another worker.
        """
        if self.stores_errors(task, request):
            tb = format_exception(reason) if reason.__traceback__ is not None else None
            self.record(task.backend.mark_as_retry, request.id, reason, tb, request=request)

    def _failed(self, task: Task[Any, Any], request: Context, outcome: Outcome,
                exc: BaseException) -> None:
        if self.stores_errors(task, request):
            self.record(task.backend.mark_as_failure, request.id, exc, outcome.traceback,
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

    def internal_error(self, task: Task[Any, Any], request: Context,
                       exc: Exception) -> Outcome:
        """Something outside the task body failed (a handler, the result store): the
        task is marked failed where possible, so that nobody waits forever."""
        logger.exception("Internal error running %s[%s]: %r", task.name, request.id, exc)
        signals.task_internal_error.send(sender=task, task_id=request.id, args=request.args,
                                         kwargs=request.kwargs, request=request, exception=exc,
                                         traceback=exc.__traceback__,
                                         einfo=ExceptionInfo(exc))
        recorded = True
        try:
            task.backend.mark_as_failure(request.id, exc, format_exception(exc),
                                         request=request)
        except Exception:
            logger.exception("cannot record the failure of %s", request.id)
            recorded = False
        events = self.events_for(task)
        if events is not None:
            events.send("task-failed", uuid=_id(request), exception=short_repr(exc),
                        traceback=format_exception(exc))
        return Outcome(states.FAILURE, exc, format_exception(exc), recorded=recorded,
                       task_id=request.id)

    # -- ends without a run ------------------------------------------------------------
    def revoked(self, request: Context, task: Task[Any, Any] | None = None,
                expired: bool = False, terminated: str | None = None) -> None:
        """A task revoked or expired before it ran, or terminated while running."""
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        error = TaskRevokedError(reason)
        backend = task.backend if task is not None else self.app.backend
        backend.store_result(_id(request), error, states.REVOKED, request=request)
        if request.chord:
            self.chord_part(backend, request, states.REVOKED, error)
        events = self.events_for(task)
        if events is not None:
            events.send("task-revoked", uuid=_id(request), terminated=terminated is not None,
                        signum=_signum(terminated), expired=expired)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(sender=task, request=request,
                                      terminated=terminated is not None, signum=terminated,
                                      expired=expired)

    def lost(self, task_id: str, exc: BaseException, request: Context | None = None,
             task: Task[Any, Any] | None = None, unless_ready: bool = False) -> None:
        """A task that will not run (again): record ``exc`` as its FAILURE, for it.

        Args:
            request: what is known of its request; a chord member is counted in, and
                its errbacks are called, so that nothing downstream waits forever.
            unless_ready: leave a task that did store an outcome as it is.
        """
        backend = task.backend if task is not None else self.app.backend
        if unless_ready and backend.get_task_meta(task_id).get("status") in states.READY_STATES:
            return
        backend.mark_as_failure(task_id, exc, f"{type(exc).__name__}: {exc}", request=request)
        events = self.events_for(task)
        if events is not None:
            events.send("task-failed", uuid=task_id, exception=short_repr(exc),
                        traceback=f"{type(exc).__name__}: {exc}")
        if request is None:
            return
        if request.errbacks:
            self._call_errbacks(request, exc, ExceptionInfo(exc))
        if request.chord:
            self.chord_part(backend, request, states.FAILURE, exc)

    def events_for(self, task: Task[Any, Any] | None) -> EventDispatcher | None:
        """The dispatcher to tell of ``task``, or None: events off, or the task says
        ``send_events = False``."""
        events = self.events
        if events is None or not events.enabled or (task is not None and not task.send_events):
            return None
        return events

    # -- what follows a task -------------------------------------------------------------
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
        from ..canvas import group

        body_id = body.id
        body_request = Context(id=body_id, task=body.name, args=body.args, kwargs=body.kwargs,
                               group=request.group, parent_id=request.id,
                               root_id=request.root_id, errbacks=body.options.get("link_error"))
        # A group body never runs: each of its members fails, so a caller waiting on
        # the body's GroupResult learns why instead of waiting forever.
        failed_ids = ([member.id for member in body.tasks] if isinstance(body, group)
                      else [body_id])
        for failed_id in failed_ids:
            if failed_id:
                self.app.backend.mark_as_failure(failed_id, error, format_exception(error),
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
            if task is not None and takes_request(task, len(sig.args)):
                try:
                    task(request, exc, einfo.traceback, *sig.args, **sig.kwargs)
                except Exception:
                    logger.exception("errback %s for %s raised", sig.name, request.id)
            else:
                sig.apply_async([request.id], parent_id=request.id, root_id=request.root_id)


def _send_end(events: EventDispatcher, task_id: str, outcome: Outcome,
              error: BaseException | None) -> None:
    """The task event of a run's end, with Celery's fields (reprs, not values)."""
    state = outcome.state
    if state == states.SUCCESS:
        events.send("task-succeeded", uuid=task_id, result=short_repr(outcome.value),
                    runtime=outcome.runtime)
    elif state == states.FAILURE:
        events.send("task-failed", uuid=task_id, exception=short_repr(error),
                    traceback=outcome.traceback)
    elif state == states.RETRY:
        reason = outcome.value
        exc = reason.exc if isinstance(reason, Retry) and reason.exc is not None else reason
        events.send("task-retried", uuid=task_id, exception=short_repr(exc),
                    traceback=outcome.traceback)
    elif outcome.rejected:
        events.send("task-rejected", uuid=task_id, requeue=outcome.requeue)


def _signum(name: str | None) -> int | None:
    """A signal's number from its name (``SIGKILL`` -> 9), as task-revoked carries it."""
    if name is None:
        return None
    try:
        return int(signal.Signals[name])
    except KeyError:
        return None


def takes_request(task: Task[Any, Any], partial_args: int) -> bool:
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
