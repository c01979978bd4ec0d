"""The only process-global state: the current app and the shared tasks.

Everything else hangs off an app instance. The current app is the last one created
(or the one made current with ``app.set_current()``); a context variable lets a worker or
a test pin another one without touching the global.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Celery
    from .task import Task

_default_app: Celery | None = None
_pinned_app: contextvars.ContextVar[Celery | None] = contextvars.ContextVar(
    "celeriac_current_app", default=None)
#: tasks declared with @shared_task, by name; every app can run them
shared_tasks: dict[str, Task[Any, Any]] = {}
#: the task being executed in this thread/coroutine, if any (for get() inside a task)
current_task: contextvars.ContextVar[Task[Any, Any] | None] = contextvars.ContextVar(
    "celeriac_current_task", default=None)


def set_default_app(app: Celery) -> None:
    global _default_app
    _default_app = app


def get_current_app() -> Celery | None:
    return _pinned_app.get() or _default_app


def pin_app(app: Celery | None) -> contextvars.Token[Celery | None]:
    return _pinned_app.set(app)
