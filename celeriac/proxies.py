"""``current_app`` and ``current_task``: Celery's two proxies, for the code written for it.

Each stands for what it names at the moment it is used, not when it was imported:
``current_app`` for the current app (one named ``default`` is created, as Celery does,
when there is none yet), ``current_task`` for the task running in this thread or
asyncio task, by a worker or under ``apply()`` (falsy when none is). New code should
prefer an explicit app and ``self`` in a bound task; these exist so that
``from celery import current_app`` works with only the import line changed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from . import _state

if TYPE_CHECKING:
    from .app import Celery
    from .task import Task

_default_lock = threading.Lock()


class Proxy:
    """Forwards every use to the object ``get()`` returns at that moment.

    ``isinstance(current_app, Celery)`` holds, and ``_get_current_object()`` returns
    the object itself (to keep, or to compare with ``is``), as with Celery's proxies.
    """

    __slots__ = ("_get",)

    def __init__(self, get: Callable[[], Any]) -> None:
        object.__setattr__(self, "_get", get)

    def _get_current_object(self) -> Any:
        return self._get()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105 - what isinstance() asks
        return type(self._get())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._get(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def __bool__(self) -> bool:
        return bool(self._get())

    def __eq__(self, other: object) -> bool:
        return bool(self._get() == other)

    def __ne__(self, other: object) -> bool:
        return bool(self._get() != other)

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())

    def __str__(self) -> str:
        return str(self._get())

    def __dir__(self) -> list[str]:
        return dir(self._get())


def get_current_app() -> Celery:
    """The current app; without one, a new app named ``default`` becomes current."""
    app = _state.get_current_app()
    if app is None:
        with _default_lock:
            app = _state.get_current_app()
            if app is None:
                from .app import Celery

                app = Celery("default")  # sets itself as the current app
    return app


def get_current_task() -> Task[Any, Any] | None:
    """The task running in this thread or asyncio task, if any."""
    return _state.current_task.get()


#: the current app (see ``get_current_app``)
current_app: Celery = Proxy(get_current_app)  # type: ignore[assignment]
#: the task running now (see ``get_current_task``): falsy outside a task
current_task: Task[Any, Any] = Proxy(get_current_task)  # type: ignore[assignment]
