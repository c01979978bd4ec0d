"""``celeriac events --dump``: every event printed as it comes, one line each, in the
format of ``celery events --dump``::

    celeriac@host [2024-05-01 12:00:00.123456+00:00] heartbeat: active=0, clock=7, ...
    celeriac@host [...] task received: proj.add(<uuid>) args=(2, 2) kwargs={} clock=9, ...
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Celery

#: how worker events are named on screen (others: the type with spaces)
HUMAN_TYPES = {
    "worker-offline": "shutdown",
    "worker-online": "started",
    "worker-heartbeat": "heartbeat",
}
# Task names remembered from task-received/task-sent, so later events can show them.
_NAMES_KEPT = 4096


def humanize_type(type: str) -> str:
    type = type.lower()
    return HUMAN_TYPES.get(type, type.replace("-", " "))


class Dumper:
    """Prints events to ``out``, flushed after each line (so it can be piped)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._names: OrderedDict[str, str] = OrderedDict()

    def say(self, line: str) -> None:
        print(line, file=self.out)
        try:
            self.out.flush()
        except (AttributeError, ValueError):  # a stream that cannot, or is closed
            pass

    def on_event(self, event: dict[str, Any]) -> None:
        fields = dict(event)
        when = datetime.fromtimestamp(fields.pop("timestamp"), timezone.utc)
        type = str(fields.pop("type")).lower()
        hostname = fields.pop("hostname", None)
        head = f"{hostname} [{when}] {humanize_type(type)}"
        if not type.startswith("task-"):
            self.say(f"{head}{self._fields(fields)}")
            return
        uuid = fields.pop("uuid", None)
        if type in ("task-received", "task-sent"):
            task = (f"{fields.pop('name', None)}({uuid}) args={fields.pop('args', None)} "
                    f"kwargs={fields.pop('kwargs', None)}")
            self._remember(str(uuid), task)
        else:
            task = self._names.get(str(uuid), "")
        rest = self._fields(fields)
        self.say(f"{head}{':' if rest else ''} {task}{rest[1:] if rest else ''}")

    @staticmethod
    def _fields(fields: dict[str, Any]) -> str:
        text = ", ".join(f"{key}={fields[key]}" for key in sorted(fields))
        return f": {text}" if text else ""

    def _remember(self, uuid: str, task: str) -> None:
        self._names[uuid] = task
        while len(self._names) > _NAMES_KEPT:
            self._names.popitem(last=False)


def evdump(app: Celery, out: IO[str] | None = None) -> None:
    """Print every event of ``app``'s broker until interrupted."""
    dumper = Dumper(out)
    dumper.say("-> evdump: starting capture...")
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": dumper.on_event})
        try:
            receiver.capture(limit=None, timeout=None, wakeup=True)
        except KeyboardInterrupt:
            pass
        finally:
            receiver.close()
