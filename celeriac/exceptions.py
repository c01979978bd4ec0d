"""The public exception types.

Errors all derive from one root; control-flow signals raised inside tasks are kept apart::

    CeleriacError
    ├── ImproperlyConfigured
    │   ├── UnknownTransport          unknown broker or backend URL scheme
    │   └── MissingDependency         an optional extra is not installed
    ├── NotRegistered                 a task name the app does not know
    ├── ContentDisallowed             a message whose content type is not accepted
    ├── DecodeError                   a message that cannot be decoded
    ├── TimeoutError                  AsyncResult.get() ran out of time
    ├── IncompleteStream              collect() met a result that is not ready
    ├── TaskError
    │   ├── MaxRetriesExceededError
    │   ├── TaskRevokedError
    │   ├── TimeLimitExceeded
    │   ├── ChordError
    │   └── WorkerLostError
    └── BackendError                  a result that cannot be stored or read
        └── ResultNotSerializable

    TaskControl (not an error: how a task steers the worker)
    ├── Retry
    ├── Ignore
    └── Reject

    SoftTimeLimitExceeded derives from Exception so that a task can catch it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CeleriacError", "CeleryError", "ImproperlyConfigured", "UnknownTransport",
    "MissingDependency", "NotRegistered", "ContentDisallowed", "DecodeError",
    "TimeoutError", "TaskError", "MaxRetriesExceededError", "TaskRevokedError",
    "TimeLimitExceeded", "SoftTimeLimitExceeded", "ChordError", "WorkerLostError",
    "BackendError", "ResultNotSerializable", "TaskControl", "Retry", "Ignore",
    "Reject", "QueueNotFound", "InvalidTaskError", "RemoteError", "IncompleteStream",
]


class CeleriacError(Exception):
    """Root of every error celeriac raises."""


CeleryError = CeleriacError  # the name Celery code catches


class ImproperlyConfigured(CeleriacError):
    """A setting or an argument cannot work as given."""


class UnknownTransport(ImproperlyConfigured):
    """A broker or result backend URL names a scheme celeriac does not know."""

    def __init__(self, kind: str, scheme: str, known: list[str]) -> None:
        self.kind = kind
        self.scheme = scheme
        self.known = known
        super().__init__(
            f"unknown {kind} scheme {scheme!r}; supported schemes: {', '.join(sorted(known))}"
        )


class MissingDependency(ImproperlyConfigured):
    """An optional dependency is needed for a feature the configuration asks for."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs the {module!r} package: pip install 'celeriac[{extra}]'"
        )


class QueueNotFound(ImproperlyConfigured):
    """A queue named on the command line or in a route is not defined."""


class NotRegistered(CeleriacError, KeyError):
    """No task of this name is registered in the app."""

    def __str__(self) -> str:
        name = self.args[0] if self.args else "?"
        return (
            f"task {name!r} is not registered; is the module that defines it listed in "
            "'include'/'imports', or imported by the app module given to -A?"
        )


class ContentDisallowed(CeleriacError):
    """A message's serializer is not in ``accept_content``."""


class DecodeError(CeleriacError):
    """A message body or envelope cannot be decoded."""


class InvalidTaskError(DecodeError):
    """A message decodes but is not a valid task message (missing task name or id)."""


class TimeoutError(CeleriacError):  # noqa: A001 - Celery's public name
    """The operation did not finish in time."""


class TaskError(CeleriacError):
    """Base of errors about a task's run."""


class MaxRetriesExceededError(TaskError):
    """``Task.retry`` was called more than ``max_retries`` times."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class TaskRevokedError(TaskError):
    """The task was revoked (or had expired) and did not run."""


class TimeLimitExceeded(TaskError):
    """The hard time limit was reached and the task was killed."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit is reached."""


class ChordError(TaskError):
    """A task in a chord header failed, so the body cannot run."""


class IncompleteStream(CeleriacError):
    """``collect()`` reached a result that is not ready (pass ``intermediate=True``)."""


class WorkerLostError(TaskError):
    """The process running the task died."""


class PublishUnconfirmed(CeleriacError):
    """A message was sent but the broker did not confirm it in time (RabbitMQ blocked
    by a resource alarm, or not answering): it may still be queued. Never retried on
    its own, so that it is never queued twice."""


class BackendError(CeleriacError):
    """A result backend operation failed."""


class ResultNotSerializable(BackendError):
    """A task's return value cannot be encoded with the result serializer."""


class RemoteError(CeleriacError):
    """Stand-in for a task exception whose type cannot be imported where it is read.

    Attributes:
        exc_type: the original exception's qualified type name.
        exc_message: the original exception's arguments.
    """

    def __init__(self, exc_type: str, exc_module: str | None, exc_message: Any) -> None:
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.exc_message = exc_message
        where = f"{exc_module}.{exc_type}" if exc_module else exc_type
        msg = exc_message
        if isinstance(msg, (list, tuple)):
            msg = ", ".join(str(m) for m in msg)
        super().__init__(f"{where}: {msg}")


class TaskControl(Exception):
    """Base of the exceptions a task raises to steer the worker; not errors."""


class Retry(TaskControl):
    """Raised by ``Task.retry``: the task will run again.

    Attributes:
        message: human readable reason.
        exc: the exception that caused the retry, if any.
        when: the eta (datetime) or countdown (seconds) of the next run.
        stored: RETRY was stored already (``Task.retry`` stores it before it sends the
            next run), so the worker does not store it again.
    """

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: Any = None, is_eager: bool = False, sig: Any = None) -> None:
        self.stored = False
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message or (f"Retry in {when}" if when is not None else "Retry"))

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"


class Ignore(TaskControl):
    """The task chose not to record any state."""


class Reject(TaskControl):
    """The task rejects its message; ``requeue=True`` gives it back to the queue."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)
