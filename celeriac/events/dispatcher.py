"""Sending events: ``EventDispatcher``.

Worker events and a client's ``task-sent`` go out at once, one message each. Task events
of a worker are the hot path (three or more per task): ``send`` only appends a small
dict to a buffer, and the buffer goes out as one ``task.multi`` message (a JSON list, as
Celery's worker sends them) when it holds ``buffer_limit`` events, ``flush_interval``
seconds after its first event, and on ``flush``/``close``.

The delayed flush runs on a timer thread of the dispatcher's own, not on the consumer's
loop: a consumer busy with a long task would otherwise hold back that task's
``task-started`` until the task ended, and a dispatcher made outside a worker (a
user's own) needs no loop to drive it. The thread sleeps while the buffer is empty.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from ..brokers import Broker, Fanout, Notice, require
from ..utils.outage import OutageLog
from ..utils.pid import current_pid
from ..utils.urls import mask_password
from .event import EXCHANGE, MULTI, LamportClock, routing_key, utcoffset

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.events")

#: task events buffered before a ``task.multi`` message goes out
BUFFER_LIMIT = 100
#: seconds the first buffered event waits for others before the buffer goes out
FLUSH_INTERVAL = 0.1
# How long the cached utcoffset is used before it is asked again (DST changes).
_OFFSET_TTL = 60.0


def client_hostname() -> str:
    """The node name of a process that is not a worker: Celery's ``gen<pid>@<host>``."""
    return f"gen{current_pid()}@{socket.gethostname()}"


class EventDispatcher:
    """Sends events to the event exchange of ``app``'s broker.

    Args:
        app: the app whose broker and ``event_exchange`` are used.
        hostname: the sender's node name (default ``gen<pid>@<host>``).
        enabled: whether ``send`` sends anything; may be changed at any time
            (remote control's ``enable_events``/``disable_events``).
        broker: the connection to send on (default: the app's producer connection);
            it must have the ``Fanout`` capability.
        groups: event groups sent (``{"worker"}``, ``{"task"}``); None sends all.
        buffer_group: groups whose events are batched as ``task.multi``.
        buffer_limit: events in the buffer that make it go out at once.
        flush_interval: seconds a buffered event waits at most.
        exchange: the exchange (default ``event_exchange``, ``celeryev``).
        outage_level: the level an outage of the broker is logged at; DEBUG where the
            connection's owner (a consumer) tells the outage already.

    Raises:
        ImproperlyConfigured: enabled on a broker whose transport has no ``Fanout``.
    """

    def __init__(self, app: Celery, hostname: str | None = None, enabled: bool = True,
                 broker: Broker | None = None, groups: Iterable[str] | None = None,
                 buffer_group: Iterable[str] | None = None, buffer_limit: int = BUFFER_LIMIT,
                 flush_interval: float = FLUSH_INTERVAL, exchange: str | None = None,
                 outage_level: int = logging.WARNING) -> None:
        self.app = app
        self.outage_level = outage_level
        self.hostname = hostname or client_hostname()
        self.exchange = exchange or app.conf.event_exchange or EXCHANGE
        self.groups: set[str] | None = set(groups) if groups is not None else None
        self.buffer_group = frozenset(buffer_group or ())
        self.buffer_limit = max(1, int(buffer_limit))
        self.flush_interval = float(flush_interval)
        self.clock: LamportClock = app.clock
        self.headers = {"hostname": self.hostname}
        self._broker = broker
        self._fanout: Fanout | None = None
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one batch at a time, in order
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_pid = 0
        self._offset = 0.0
        self._offset_until = 0.0
        self._outage: OutageLog | None = None
        self._enabled = False
        self.enabled = enabled

    # -- on and off ------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value and self._broker is not None:
            require(self._broker, Fanout, "send events")
        self._enabled = bool(value)
        if not value:
            self.flush()

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    # -- sending ---------------------------------------------------------------------------
    def send(self, type: str, blind: bool = False, **fields: Any) -> None:
        """Send an event of ``type`` with ``fields`` (batched if its group is buffered).

        Args:
            blind: send no ``clock`` (and do not move it), as Celery's ``blind``.

        Never raises for want of a broker: events are a monitor's stream, and a task
        must not fail because its event could not be sent (the outage is logged).
        """
        if not self._enabled:
            return
        group = type.split("-", 1)[0]
        if self.groups is not None and group not in self.groups:
            return
        now = time.time()
        if now >= self._offset_until:
            self._offset, self._offset_until = utcoffset(), now + _OFFSET_TTL
        fields["type"] = type
        fields["hostname"] = self.hostname
        fields["pid"] = current_pid()
        fields["clock"] = None if blind else self.clock.forward()
        fields.setdefault("timestamp", now)
        fields["utcoffset"] = self._offset
        if group not in self.buffer_group:
            self._publish([Notice(routing_key(type), _dumps(fields), self.headers)])
            return
        with self._lock:
            self._buffer.append(fields)
            size = len(self._buffer)
        if size >= self.buffer_limit:
            self.flush()
        elif size == 1:
            self._wake_timer()

    def flush(self) -> None:
        """Send what the buffer holds now, as one ``task.multi`` message."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                self._publish([Notice(MULTI, _dumps(batch), self.headers)])

    def close(self) -> None:
        """Send what is buffered and stop the timer thread. The broker connection is
        left open: it is the app's or the one given, and belongs to its owner."""
        self._closed.set()
        self._wake.set()
        self.flush()
        timer = self._timer
        if timer is not None and self._timer_pid == current_pid() and timer.is_alive():
            timer.join(1.0)

    def __enter__(self) -> EventDispatcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the insides --------------------------------------------------------------------------
    def _publish(self, notices: list[Notice]) -> None:
        try:
            fanout = self._fanout
            if fanout is None:
                broker = self._broker if self._broker is not None else self.app.producer_broker()
                fanout = self._fanout = require(broker, Fanout, "send events")
                self._outage = OutageLog(logger, "broker (events)",
                                         mask_password(broker.url), level=self.outage_level)
            fanout.broadcast(self.exchange, notices)
        except Exception as exc:  # noqa: BLE001 - see send: never the task's failure
            if self._outage is None:
                logger.error("cannot send events: %s", exc)
                return
            self._outage.failed(exc, "events are dropped until it answers")
            return
        if self._outage is not None:
            self._outage.recovered()

    def _wake_timer(self) -> None:
        pid = current_pid()
        if self._timer is None or self._timer_pid != pid:
            # first use in this process (a thread does not survive a fork)
            self._timer_pid = pid
            self._timer = threading.Thread(target=self._run_timer, name="celeriac-events",
                                           daemon=True)
            self._timer.start()
        self._wake.set()

    def _run_timer(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            if self._closed.wait(self.flush_interval):
                return  # close() flushes
            # cleared before the buffer is taken: an event added after that wakes us again
            self._wake.clear()
            self.flush()


def _dumps(value: Any) -> str:
    # a custom event's odd field is shown as text rather than losing the event
    return json.dumps(value, default=str)


__all__ = ["EventDispatcher", "client_hostname", "BUFFER_LIMIT", "FLUSH_INTERVAL"]
