"""One event: a JSON object, as Celery's monitors (Flower, ``celery events``) read it.

Every event carries ``type`` (``task-succeeded``, ``worker-heartbeat``...), ``hostname``
(the sender's node name; ``gen<pid>@<host>`` for a client), ``pid``, ``clock`` (a
Lamport clock), ``timestamp`` (Unix seconds, float) and ``utcoffset`` (hours, float,
Celery's sign: positive west of Greenwich). It travels on the topic exchange
``celeryev`` with its type as routing key, dashes turned into dots.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: the exchange events travel on, unless ``event_exchange`` says otherwise
EXCHANGE = "celeryev"
#: the routing key of a batch of task events (the body is a JSON list of events)
MULTI = "task.multi"
#: longest ``result``/``exception`` repr a task event carries (Celery's limit)
REPR_MAXSIZE = 1024


def Event(type: str, _fields: dict[str, Any] | None = None,  # noqa: N802 - Celery's name
          **fields: Any) -> dict[str, Any]:
    """An event of ``type`` with ``fields``; ``timestamp`` is now unless given.

    The sender's fields (``hostname``, ``pid``, ``clock``, ``utcoffset``) are added by
    ``EventDispatcher.send``; here an event is just the dictionary that goes on the wire.
    """
    event = dict(_fields, **fields) if _fields else fields
    event["type"] = type
    event.setdefault("timestamp", time.time())
    return event


def group_from(type: str) -> str:
    """The group of an event type: ``task`` for ``task-sent``, ``worker`` for
    ``worker-online`` (a custom ``myapp-thing`` is in group ``myapp``)."""
    return type.split("-", 1)[0]


def routing_key(type: str) -> str:
    """The routing key an event of ``type`` is sent with: ``task-succeeded`` ->
    ``task.succeeded``."""
    return type.replace("-", ".")


def utcoffset() -> float:
    """The local offset from UTC in hours, as Celery sends it: seconds west of UTC / 3600
    (so UTC+2 is ``-2.0``), daylight saving time counted."""
    return (time.altzone if time.localtime().tm_isdst else time.timezone) / 3600


def adjust_timestamp(timestamp: float, offset: float) -> float:
    """A sender's ``timestamp`` seen from here: its ``utcoffset`` against ours."""
    return timestamp - (offset - utcoffset()) * 3600


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, two decimals (zeros where unknown)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return [0.0, 0.0, 0.0]


class LamportClock:
    """A logical clock: ``forward`` before each event sent, ``adjust`` on each received,
    so that causally ordered events have increasing clocks across processes."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        """Take in a clock seen on an event: ours becomes past both."""
        with self._lock:
            self.value = max(self.value, int(other)) + 1
            return self.value

    def __repr__(self) -> str:
        return f"<LamportClock: {self.value}>"


def short_repr(value: Any, maxsize: int = REPR_MAXSIZE) -> str:
    """``repr(value)`` for an event field, cut to ``maxsize`` characters; never raises
    (a task's result whose ``__repr__`` fails must not fail the task's event)."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - whatever a user's __repr__ raises
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= maxsize else text[:maxsize - 3] + "..."
