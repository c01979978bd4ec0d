"""The remote-control commands a worker answers, with Celery's names, arguments and
reply shapes (so that ``celery inspect``, Flower and celeriac's own client read them).

Each command is a function of the worker's ``Node`` and the request's arguments. The
registry also tells the CLI which commands exist, whether they inspect or control,
and how to turn command-line words into arguments.
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import __version__

if TYPE_CHECKING:
    from .mailbox import Node


@dataclass(frozen=True)
class Command:
    name: str
    kind: str  # "inspect" or "control"
    run: Callable[..., Any]
    #: positional command-line words: (argument name, converter)
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    #: the argument that takes the remaining words, as a list
    variadic: str | None = None
    signature: str = ""
    help: str = ""
    #: whether the worker sends a reply (Celery's ``heartbeat`` does not)
    replies: bool = True


COMMANDS: dict[str, Command] = {}


def command(kind: str, args: tuple[tuple[str, Callable[[str], Any]], ...] = (),
            variadic: str | None = None, signature: str = "", name: str | None = None,
            replies: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        doc = (fn.__doc__ or "").strip().splitlines()
        COMMANDS[key] = Command(key, kind, fn, args, variadic, signature,
                                doc[0] if doc else "", replies)
        return fn

    return register


def ok(text: str) -> dict[str, str]:
    return {"ok": text}


def error(text: str) -> dict[str, str]:
    return {"error": text}


def _float_or_none(value: str) -> float | None:
    return None if value in ("", "None", "none", "null") else float(value)


# -- inspect ----------------------------------------------------------------------------
@command("inspect")
def ping(node: Node, **_: Any) -> dict[str, str]:
    """Ping worker(s)."""
    return ok("pong")


@command("inspect", variadic="taskinfoitems", signature="[attr1 [attr2 [... [attrN]]]]")
def registered(node: Node, taskinfoitems: list[str] | None = None, **_: Any) -> list[str]:
    """List of registered tasks."""
    names = sorted(n for n in node.app.tasks.names() if not n.startswith("celery."))
    if not taskinfoitems:
        return names
    out = []
    for name in names:
        task = node.app.tasks[name]
        fields = [f"{item}={getattr(task, item)}" for item in taskinfoitems
                  if getattr(task, item, None) is not None]
        out.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return out


@command("inspect")
def active(node: Node, safe: bool | None = None, **_: Any) -> list[dict[str, Any]]:
    """List of tasks currently being executed."""
    return node.held()["active"]


@command("inspect")
def reserved(node: Node, **_: Any) -> list[dict[str, Any]]:
    """List of currently reserved tasks, not including scheduled/active."""
    return node.held()["reserved"]


@command("inspect")
def scheduled(node: Node, **_: Any) -> list[dict[str, Any]]:
    """List of currently scheduled ETA/countdown tasks (here: held by a rate limit;
    eta tasks wait in the broker, not in a worker)."""
    return node.held()["scheduled"]


@command("inspect")
def revoked(node: Node, **_: Any) -> list[str]:
    """List of revoked task-ids."""
    return sorted(node.revoked_ids())


@command("inspect")
def stats(node: Node, **_: Any) -> dict[str, Any]:
    """Request worker statistics/information."""
    return node.stats()


@command("inspect")
def active_queues(node: Node, **_: Any) -> list[dict[str, Any]]:
    """List the task queues a worker is currently consuming from."""
    return [node.queue_info(name) for name in node.queues]


@command("inspect", args=(("with_defaults", lambda v: v.lower() in ("1", "true", "yes")),),
         signature="[include_defaults=False]")
def conf(node: Node, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    """List configuration."""
    table = node.app.conf.table(with_defaults=with_defaults, censored=True)
    return {key: jsonable(value) for key, value in table.items()}


@command("inspect")
def report(node: Node, **_: Any) -> dict[str, str]:
    """Information about Celery installation for bug reports."""
    from ..utils.urls import mask_password

    app = node.app
    lines = [f"software -> celeriac:{__version__} py:{platform.python_version()}",
             f"            platform -> system:{platform.system()} arch:{platform.machine()}",
             f"            loader -> celeriac app {app.main or '__main__'}",
             f"            transport -> {mask_password(app.broker_read_url)}",
             f"            results -> {mask_password(app.result_backend_url)}"]
    return ok("\n".join(lines))


@command("inspect", variadic="ids", signature="[id1 [id2 [... [idN]]]]")
def query_task(node: Node, ids: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Query for task information by id."""
    wanted = _ids(ids if ids is not None else kwargs.get("task_id"))
    held = node.held()
    out: dict[str, Any] = {}
    for state in ("active", "reserved"):
        for info in held[state]:
            if info["id"] in wanted:
                out[info["id"]] = [state, info]
    for item in held["scheduled"]:
        if item["request"]["id"] in wanted:
            out[item["request"]["id"]] = ["scheduled", item["request"]]
    return out


@command("inspect")
def clock(node: Node, **_: Any) -> dict[str, int]:
    """Get current logical clock value."""
    return {"clock": node.clock.value}


# -- control ----------------------------------------------------------------------------
@command("control", variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(node: Node, task_id: Any = None, terminate: bool = False, signal: Any = None,
           **_: Any) -> dict[str, str]:
    """Revoke task by task id (or list of ids)."""
    from . import signal_name

    ids = _ids(task_id)
    if not ids:
        return error("no task id given")
    signame = signal_name(signal or "SIGTERM") if terminate else None
    node.revoke(sorted(ids), signame)
    return ok(f"tasks {', '.join(sorted(ids))} flagged as revoked")


@command("control", args=(("task_name", str), ("rate_limit", str)),
         signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>")
def rate_limit(node: Node, task_name: str = "", rate_limit: Any = None,
               **_: Any) -> dict[str, str]:
    """Tell worker(s) to modify the rate limit for a task by type."""
    from ..worker.ratelimit import parse_rate

    if task_name not in node.app.tasks:
        return error(f"unknown task {task_name!r}")
    try:
        parse_rate(rate_limit)
    except ValueError as exc:
        return error(str(exc))
    value = rate_limit or None
    # The orders first: in a thread pool they change the very task object below, and
    # tell each consumer to give its held messages a new turn.
    node.change_orders(lambda o: o.setdefault("rate_limits", {}).__setitem__(task_name, value))
    node.app.tasks[task_name].rate_limit = value
    if not value:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


@command("control", args=(("task_name", str), ("soft", _float_or_none),
                          ("hard", _float_or_none)),
         signature="<task_name> <soft_secs> [hard_secs]")
def time_limit(node: Node, task_name: str = "", soft: Any = None, hard: Any = None,
               **_: Any) -> dict[str, str]:
    """Tell worker(s) to modify the time limit for task by type."""
    if task_name not in node.app.tasks:
        return error(f"unknown task {task_name!r}")
    try:
        soft = float(soft) if soft is not None else None
        hard = float(hard) if hard is not None else None
    except (TypeError, ValueError):
        return error("time limits must be numbers of seconds")
    task = node.app.tasks[task_name]
    task.soft_time_limit, task.time_limit = soft, hard
    node.change_orders(lambda o: o.setdefault("time_limits", {}).__setitem__(
        task_name, [soft, hard]))
    return ok("time limits set successfully")


@command("control")
def shutdown(node: Node, msg: str = "Got shutdown from remote", **_: Any) -> dict[str, str]:
    """Shutdown worker(s)."""
    node.shutdown(msg)
    return ok("shutting down")


@command("control", args=(("n", int),), signature="[N=1]")
def pool_grow(node: Node, n: int = 1, **_: Any) -> dict[str, str]:
    """Grow pool by n processes/threads."""
    return node.resize("grow", int(n))


@command("control", args=(("n", int),), signature="[N=1]")
def pool_shrink(node: Node, n: int = 1, **_: Any) -> dict[str, str]:
    """Shrink pool by n processes/threads."""
    return node.resize("shrink", int(n))


@command("control", args=(("max", int), ("min", int)), signature="[max [min]]")
def autoscale(node: Node, max: int | None = None, min: int | None = None,
              **_: Any) -> dict[str, str]:
    """Modify autoscale settings."""
    return node.autoscale(max, min)


@command("control", args=(("queue", str), ("exchange", str), ("exchange_type", str),
                          ("routing_key", str)),
         signature="<queue> [exchange [type [routing_key]]]")
def add_consumer(node: Node, queue: str = "", **_: Any) -> dict[str, str]:
    """Tell worker(s) to consume from task queue by name."""
    if not queue:
        return error("no queue name given")
    if queue in node.queues:
        return ok(f"already consuming from {queue!r}")
    node.set_queues([*node.queues, queue])
    return ok(f"add consumer {queue}")


@command("control", args=(("queue", str),), signature="<queue>")
def cancel_consumer(node: Node, queue: str = "", **_: Any) -> dict[str, str]:
    """Tell worker(s) to stop consuming from task queue by name."""
    if queue not in node.queues:
        return error(f"not consuming from {queue!r}")
    if len(node.queues) == 1:
        return error(f"{queue!r} is the only queue this worker consumes; stop the "
                     "worker instead")
    node.set_queues([q for q in node.queues if q != queue])
    return ok(f"no longer consuming from {queue}")


@command("control")
def enable_events(node: Node, **_: Any) -> dict[str, str]:
    """Tell worker(s) to send task-related events."""
    node.task_events(True)
    return ok("task events enabled")


@command("control")
def disable_events(node: Node, **_: Any) -> dict[str, str]:
    """Tell worker(s) to stop sending task-related events."""
    node.task_events(False)
    return ok("task events disabled")


@command("control", replies=False)
def heartbeat(node: Node, **_: Any) -> None:
    """Tell worker(s) to send a heartbeat event now."""
    node.send_heartbeat()


@command("control", name="hello")
def hello(node: Node, from_node: str = "", revoked: Any = None, **_: Any) -> Any:
    """Greeting of a worker starting up (Celery's mingle)."""
    if from_node == node.hostname:
        return None  # no reply to oneself
    return {"revoked": {}, "clock": node.clock.value}


# -- helpers ----------------------------------------------------------------------------
def _ids(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    out: set[str] = set()
    for item in value:
        out |= _ids(item)
    return out


def jsonable(value: Any) -> Any:
    """``value`` when JSON can carry it, else its repr (an exception, an object)."""
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name[3:]: getattr(usage, name) for name in dir(usage) if name.startswith("ru_")}


def uptime(started: float) -> int:
    return int(time.monotonic() - started)
