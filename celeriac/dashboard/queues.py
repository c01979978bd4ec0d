"""Queue depths and dead letters, as the queues page shows them.

Everything here reads the broker through its capabilities (``QueueStats``,
``DeadLetters``) on the app's producer connection, and takes nothing from a queue but
what a user asked to purge, requeue or delete. A broker without a capability answers
what it can: a depth from ``size``, no dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..brokers import DeadLetter, DeadLetters, QueueStats, capability
from ..control.commands import jsonable
from ..routing import Queue

#: how much of a dead letter's envelope the page shows as it is
PREVIEW_CHARS = 500

#: content types whose bodies are read to show a dead letter's arguments: never one that
#: runs code when loaded (pickle), whatever the app accepts
SAFE_CONTENT = frozenset({"application/json"})


@dataclass
class QueueDepth:
    """One queue's counts (see ``celeriac.brokers.base.QueueCounts``); None where the
    broker cannot tell."""

    name: str
    messages: int
    by_priority: dict[int, int] | None = None
    delayed: int | None = None
    unacked: int | None = None
    consumers: int | None = None


def known_queues(app: Any, active_queues: Mapping[str, Any] | None = None) -> list[str]:
    """The queues worth showing: the default queue, ``task_queues``, the queues that
    ``task_routes`` names, and those that the workers' ``active_queues`` replies
    (``{node: [{"name": ...}, ...]}``) say they consume; in that order, once each."""
    names: list[str] = [app.conf.task_default_queue]
    router = app.router
    names.extend(router.queues)
    for table in router.routers:
        for route in _route_values(table):
            name = _route_queue(route)
            if name:
                names.append(name)
    for replies in (active_queues or {}).values():
        for queue in replies or ():
            name = queue.get("name") if isinstance(queue, Mapping) else None
            if isinstance(name, str) and name:
                names.append(name)
    # Reply and event queues of remote control are not task queues.
    return [n for n in dict.fromkeys(names) if n and not n.endswith(".pidbox")]


def _route_values(table: Any) -> list[Any]:
    """The routes a ``task_routes`` table holds; a function router's are unknowable."""
    exact = getattr(table, "exact", None)
    patterns = getattr(table, "patterns", None)
    if exact is None or patterns is None:
        return []
    return [*exact.values(), *(route for _, route in patterns)]


def _route_queue(route: Any) -> str | None:
    if isinstance(route, str):
        return route
    if isinstance(route, Queue):
        return route.name
    if isinstance(route, Mapping):
        queue = route.get("queue")
        if isinstance(queue, Queue):
            return queue.name
        return queue if isinstance(queue, str) else None
    return None


def queue_depths(app: Any, names: list[str]) -> list[QueueDepth]:
    """The counts of each queue in ``names``, in one round trip where the broker can."""
    broker = app.producer_broker()
    stats = capability(broker, QueueStats)
    if stats is None:
        return [QueueDepth(name, broker.size(name)) for name in names]
    return [QueueDepth(c.queue, c.ready, c.by_priority, c.delayed, c.unacked, c.consumers)
            for c in stats.queue_stats(names)]


def dead_letters(app: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The dead letters, newest first, each with what can be read of its task:
    ``{id, queue, reason, time, task_id, task_name, args, kwargs, payload_preview}``
    (``args``/``kwargs`` are the decoded values when the body reads as JSON, else the
    sender's ``argsrepr``/``kwargsrepr`` text, else None)."""
    broker = capability(app.producer_broker(), DeadLetters)
    if broker is None:
        return []
    return [describe_dead_letter(d) for d in broker.dead_letters(limit)]


def describe_dead_letter(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter as the page shows it; a payload that is no task message at all
    still gives its queue, reason, time and the start of its text."""
    task = _read_task(dead.payload)
    return {"id": dead.id, "queue": _queue_name(dead.queue), "reason": dead.reason,
            "time": dead.time, **task, "payload_preview": dead.payload[:PREVIEW_CHARS]}


def _queue_name(queue: str) -> str:
    # Redis keeps the priority step in the list's name (kombu's ``<queue>\x06\x16<n>``).
    return queue.split("\x06\x16", 1)[0]


def _read_task(payload: str) -> dict[str, Any]:
    from .. import messages

    found: dict[str, Any] = {"task_id": None, "task_name": None, "args": None,
                             "kwargs": None}
    try:
        message = messages.decode_envelope(payload)
    except messages.MalformedMessage as exc:
        found["task_id"] = exc.task_id
        found["task_name"] = exc.task_name
        return found
    headers = message.headers
    found["task_id"] = message.task_id
    name = headers.get("task")
    found["task_name"] = name if isinstance(name, str) else None
    for key in ("args", "kwargs"):
        text = headers.get(f"{key}repr")
        if isinstance(text, str):
            found[key] = text
    try:
        task = messages.decode_task(message, SAFE_CONTENT)
    except Exception:  # noqa: BLE001 - a dead letter is often one that does not decode
        return found
    found.update(task_id=task.id, task_name=task.name, args=jsonable(task.args),
                 kwargs=jsonable(task.kwargs))
    return found


def requeue_dead_letter(app: Any, id: str) -> bool:
    """Put dead letter ``id`` back on its queue, once; False when it is gone already.

    Raises:
        ValueError: the dead letter names no queue to go back to (delete it instead).
    """
    broker = capability(app.producer_broker(), DeadLetters)
    return broker is not None and broker.requeue_dead_letter(id)


def delete_dead_letter(app: Any, id: str) -> bool:
    """Remove dead letter ``id`` for good; False when it is gone already."""
    broker = capability(app.producer_broker(), DeadLetters)
    return broker is not None and broker.delete_dead_letter(id)


def purge_queue(app: Any, name: str) -> int:
    """Delete every message waiting on ``name`` (the held ones stay with their
    consumers); returns how many."""
    return int(app.producer_broker().purge(name))


__all__ = ["QueueDepth", "known_queues", "queue_depths", "dead_letters",
           "describe_dead_letter", "requeue_dead_letter", "delete_dead_letter",
           "purge_queue"]
