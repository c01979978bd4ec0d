"""What the two-sided interop apps (amqp_interop, rpc_interop, cache_interop,
database_interop) share: task bodies written once, and building a Celery or a celeriac
app with them.

Each of those modules is imported by both kinds of worker (``-A <module>:celery_app`` /
``-A <module>:celeriac_app``); the app is built on first access, from the environment,
so that importing a module imports neither framework.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable


def add(x: Any, y: Any) -> Any:
    return x + y


def tsum(values: list[Any]) -> Any:
    return sum(values)


def fail(message: str) -> None:
    raise ValueError(message)


def progress(self: Any, go_file: str) -> str:
    """PROGRESS, then waits for the client to say go (a file), then returns."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + 30
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


def common_tasks(prefix: str) -> tuple[tuple[str, Callable[..., Any], dict[str, Any]], ...]:
    """``(name, body, options)`` of the tasks every pair has, named ``<prefix>.<body>``."""
    return ((f"{prefix}.add", add, {}), (f"{prefix}.tsum", tsum, {}),
            (f"{prefix}.fail", fail, {}), (f"{prefix}.progress", progress, {"bind": True}))


def build_app(kind: str, main: str, broker: str, backend: str, queue: str,
              tasks: Iterable[tuple[str, Callable[..., Any], dict[str, Any]]],
              **settings: Any) -> Any:
    """A Celery ('celery') or celeriac ('celeriac') app on ``queue``, tasks registered,
    with ``settings`` applied."""
    if kind == "celery":
        from celery import Celery
    else:
        from celeriac import Celery  # type: ignore[assignment]
    app = Celery(f"{main}_{kind}", broker=broker, backend=backend, set_as_current=False)
    app.conf.task_default_queue = queue
    for name, value in settings.items():
        setattr(app.conf, name, value)
    if kind == "celery":
        app.conf.broker_connection_retry_on_startup = True
        app.conf.worker_hijack_root_logger = True
    for name, body, options in tasks:
        app.task(name=name, **options)(body)
    return app


def lazy_apps(module_globals: dict[str, Any], build: Callable[[str], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds ``celery_app``/``celeriac_app`` on first
    access with ``build(kind)``, and keeps it."""
    def getattr_(name: str) -> Any:
        if name in ("celery_app", "celeriac_app"):
            app = module_globals[name] = build(name.split("_")[0])
            return app
        raise AttributeError(name)

    return getattr_
