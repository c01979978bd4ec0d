"""Celery's event stream: workers and tasks tell monitors what happens to them.

A worker sends ``worker-online``, a ``worker-heartbeat`` every ``freq`` seconds and
``worker-offline``; with ``-E`` (``worker_send_task_events``) also ``task-received``,
``task-started``, ``task-succeeded``, ``task-failed``, ``task-retried``,
``task-rejected`` and ``task-revoked``, batched as ``task.multi`` messages. A client
with ``task_send_sent_event`` sends ``task-sent``. They travel where Celery's do (the
topic exchange ``celeryev``: Redis pub/sub channels ``/<db>.celeryev/<routing key>``),
so Flower and ``celery events`` see celeriac workers, and celeriac's ``EventReceiver``
and ``State`` see Celery's.

``app.events`` offers ``Receiver``, ``Dispatcher`` and ``State`` bound to the app, as
Celery's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dispatcher import EventDispatcher
from .event import Event, LamportClock, group_from, routing_key
from .receiver import EventReceiver
from .state import State

if TYPE_CHECKING:
    from ..app import Celery


class Events:
    """``app.events``: the event classes bound to one app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def Receiver(self, channel: Any = None, handlers: dict[str, Any] | None = None,  # noqa: N802
                 routing_key: str = "#", **options: Any) -> EventReceiver:
        """An ``EventReceiver`` on ``channel`` (``app.connection()``; default: a new
        connection of the app)."""
        return EventReceiver(channel, handlers=handlers, routing_key=routing_key,
                             app=self.app, **options)

    def Dispatcher(self, connection: Any = None, hostname: str | None = None,  # noqa: N802
                   enabled: bool = True, **options: Any) -> EventDispatcher:
        """An ``EventDispatcher`` sending on ``connection`` (``app.connection()``;
        default: the app's producer connection)."""
        broker = options.pop("broker", None)
        if broker is None and connection is not None:
            broker = connection.broker
        return EventDispatcher(self.app, hostname, enabled=enabled, broker=broker, **options)

    def State(self, **options: Any) -> State:  # noqa: N802
        return State(**options)


__all__ = ["Event", "EventDispatcher", "EventReceiver", "Events", "LamportClock", "State",
           "group_from", "routing_key"]
