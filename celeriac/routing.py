"""Queues, exchanges and the router that picks a task's queue.

``task_routes`` may be a dict (exact names and glob patterns), a router function, or a
list of either, tried in order; ``queue=`` on the call wins over all of them.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .exceptions import QueueNotFound


@dataclass(frozen=True)
class Exchange:
    """A named exchange; on Redis and SQLite only its name is used for routing keys."""

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Queue:
    """A queue, with Celery's (kombu's) constructor arguments."""

    name: str
    exchange: Exchange | str | None = None
    routing_key: str | None = None
    queue_arguments: Mapping[str, Any] | None = None
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    max_priority: int | None = None
    bindings: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def exchange_name(self) -> str:
        if isinstance(self.exchange, Exchange):
            return self.exchange.name
        return self.exchange if self.exchange is not None else self.name

    @property
    def key(self) -> str:
        return self.routing_key or self.name


Router = Callable[..., Any]


@dataclass
class Route:
    queue: str
    exchange: str = ""
    routing_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


class TaskRouter:
    """Resolves the queue of a task call from options, ``task_routes`` and the defaults."""

    def __init__(self, routes: Any, queues: Iterable[Queue | str] | None,
                 default_queue: str, create_missing: bool = True) -> None:
        self.routers = self._prepare(routes)
        self.queues: dict[str, Queue] = {}
        if isinstance(queues, Mapping):
            # The old CELERY_QUEUES dict form: {name: {"exchange": ..., "routing_key": ...}};
            # iterating it would keep the names and silently drop exchange and key.
            queues = [Queue(name, Exchange(o.get("exchange") or name,
                                           o.get("exchange_type") or "direct"),
                            o.get("routing_key"))
                      for name, o in ((n, opts or {}) for n, opts in queues.items())]
        for q in queues or ():
            q = Queue(q) if isinstance(q, str) else q
            self.queues[q.name] = q
        self.default_queue = default_queue
        self.create_missing = create_missing

    @staticmethod
    def _prepare(routes: Any) -> list[Router]:
        if routes is None:
            return []
        if isinstance(routes, (dict, Mapping)) or callable(routes) or isinstance(routes, str):
            routes = [routes]
        out: list[Router] = []
        for r in routes:
            if isinstance(r, str):
                from .utils.imports import symbol_by_name

                r = symbol_by_name(r)
                if isinstance(r, type) and hasattr(r, "route_for_task"):
                    r = r()  # a pre-4.0 router class named by string, as Celery does
            if isinstance(r, Mapping):
                out.append(_MapRouter(r))
            elif isinstance(r, (list, tuple)):
                # Celery's ordered form: task_routes = ([(pattern, route), ...],)
                out.append(_MapRouter(r))
            elif hasattr(r, "route_for_task"):
                out.append(r)
            elif callable(r):
                out.append(_FnRouter(r))
            else:
                raise TypeError(f"task_routes entries must be dicts or callables, not {r!r}")
        return out

    def route(self, name: str, args: Any, kwargs: Any, options: dict[str, Any],
              task: Any = None) -> Route:
        queue = options.get("queue")
        found: Any = None
        if queue is None:
            for router in self.routers:
                found = _call_router(router, name, args, kwargs, options, task)
                if found:
                    break
        if isinstance(found, str):
            found = {"queue": found}
        found = dict(found or {})
        if queue is not None:
            found["queue"] = queue
        q = found.pop("queue", None) or self.default_queue
        if isinstance(q, Queue):
            self.queues.setdefault(q.name, q)
            qobj: Queue | None = q
            q = q.name
        else:
            qobj = self.queues.get(q)
        if qobj is None and not self.create_missing:
            raise QueueNotFound(f"queue {q!r} is not in task_queues and task_create_missing_queues is off")
        exchange = options.get("exchange") or found.pop("exchange", None)
        routing_key = options.get("routing_key") or found.pop("routing_key", None)
        exchange_type = options.get("exchange_type") or found.pop("exchange_type", None)
        if isinstance(exchange, Exchange):
            exchange_type = exchange_type or exchange.type
            exchange = exchange.name
        if exchange_type is None:
            qex = qobj.exchange if qobj is not None else None
            exchange_type = qex.type if isinstance(qex, Exchange) else "direct"
        # As Celery's send_task_message: a direct exchange without an explicit exchange
        # *and* routing key goes to the nameless exchange with the queue name as key.
        # That is what lands in delivery_info, and what kombu restores a message by.
        if (not exchange or not routing_key) and exchange_type == "direct":
            exchange, routing_key = "", q
        elif exchange is None:
            exchange = qobj.exchange_name if qobj is not None else ""
            routing_key = routing_key or (qobj.key if qobj is not None else q)
        return Route(q, exchange or "", routing_key or q, found)


def _call_router(router: Router, name: str, args: Any, kwargs: Any,
                 options: dict[str, Any], task: Any) -> Any:
    if isinstance(router, _MapRouter):
        return router(name)
    if hasattr(router, "route_for_task"):  # pre-4.0 router object
        return router.route_for_task(name, args, kwargs)
    if isinstance(router, _FnRouter):
        return router(name, args, kwargs, options, task)
    return router(name, args, kwargs, options, task=task)


class _FnRouter:
    """A router function, called in the form its signature accepts.

    Celery calls ``(name, args, kwargs, options, task=)``; shorter forms are accepted too.
    The form is read from the signature once, not found by catching TypeError: a
    TypeError raised inside the router would otherwise run it again and hide the error.
    """

    def __init__(self, fn: Router) -> None:
        self.fn = fn
        self.form = 5
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # no signature to read: use Celery's form
            return
        for form, pos, kw in ((5, 4, {"task": None}), (4, 4, {}), (1, 1, {})):
            try:
                sig.bind(*([None] * pos), **kw)
            except TypeError:
                continue
            self.form = form
            return

    def __call__(self, name: str, args: Any, kwargs: Any, options: dict[str, Any],
                 task: Any) -> Any:
        if self.form == 5:
            return self.fn(name, args, kwargs, options, task=task)
        if self.form == 4:
            return self.fn(name, args, kwargs, options)
        return self.fn(name)


class _MapRouter:
    """Exact names first, then glob patterns (or ``re.compile`` objects) in order."""

    def __init__(self, table: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        items = table.items() if isinstance(table, Mapping) else table
        for key, value in items:
            if isinstance(key, re.Pattern):
                self.patterns.append((key, value))
            elif any(ch in key for ch in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), value))
            else:
                self.exact[key] = value

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, value in self.patterns:
            if pattern.match(name):
                return value
        return None


__all__ = ["Queue", "Exchange", "TaskRouter", "Route"]
