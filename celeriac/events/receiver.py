"""Receiving events: ``EventReceiver``, what monitors are built on.

It listens on the event exchange from the moment it is made (what was sent before is
not seen: events are not stored), turns each message into events (a ``task.multi``
message holds a list of them; any other one holds one) and hands each to the handler
registered for its type, or to the ``"*"`` handler.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .._state import get_current_app
from ..brokers import Broker, Fanout, Listener, Notice, require
from .event import EXCHANGE, adjust_timestamp

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.events")

#: added to the receiver's clock for a client's ``task-sent``: clients never take in
#: other clocks, so theirs says nothing about order
CLIENT_CLOCK_SKEW = -1
# Longest single wait on the listener: bounds how late ``should_stop`` is noticed.
_POLL = 1.0

Handler = Callable[[dict[str, Any]], Any]


class EventReceiver:
    """Captures events and calls ``handlers`` with each.

    Args:
        channel: where to listen: a connection from ``app.connection()``, an app, or a
            broker connection (Celery passes a kombu connection or channel here).
        handlers: ``{event type: callable}``; ``"*"`` catches every other type.
        routing_key: a topic pattern of the events wanted (``#``: all, ``task.#``,
            ``worker.*``).
        app: the app (taken from ``channel`` when it has one).

    ``node_id``, ``queue_prefix``, ``accept``, ``queue_ttl``, ``queue_expires``,
    ``queue_exclusive`` and ``queue_durable`` are Celery's monitor-queue options; they
    are accepted for its callers and do nothing here: Redis pub/sub and the SQLite
    table celeriac listens on have no per-monitor queue, and events are always JSON.
    """

    def __init__(self, channel: Any = None, handlers: dict[str, Handler] | None = None,
                 routing_key: str = "#", node_id: str | None = None, app: Celery | None = None,
                 queue_prefix: str | None = None, accept: Any = None,
                 queue_ttl: float | None = None, queue_expires: float | None = None,
                 queue_exclusive: bool | None = None,
                 queue_durable: bool | None = None) -> None:
        broker, app, self._owns_broker = _resolve(channel, app)
        self.app = app
        self.broker = broker
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.routing_key = routing_key or "#"
        self.exchange = app.conf.event_exchange or EXCHANGE
        self.clock = app.clock
        #: set (from a handler, or another thread) to end ``capture`` soon
        self.should_stop = False
        fanout = require(broker, Fanout, "receive events")
        self._listener: Listener | None = fanout.listen(self.exchange, [self.routing_key])
        self._pending: deque[dict[str, Any]] = deque()
        self._reconnects = 0

    # -- the Celery API ---------------------------------------------------------------------
    def process(self, type: str, event: dict[str, Any]) -> None:
        """Call the handler for ``type`` (or ``"*"``) with ``event``."""
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def capture(self, limit: int | None = None, timeout: float | None = None,
                wakeup: bool = True) -> None:
        """Capture events until ``should_stop``, ``limit`` events, or ``timeout``.

        Args:
            limit: stop after this many events (a ``task.multi`` message counts each
                of its events).
            timeout: raise ``socket.timeout`` once this many seconds pass with no event.
            wakeup: broadcast a ``heartbeat`` control request first, so that the
                workers (celeriac's and Celery's) announce themselves at once.
        """
        for _ in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            pass

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[dict[str, Any]]:
        """``capture`` as a generator: yields each event after its handler ran."""
        count = 0
        idle_since = time.monotonic()
        if wakeup:
            self.wakeup_workers()
        while not self.should_stop:
            if not self._pending:
                wait = _POLL
                if timeout is not None:
                    remaining = timeout - (time.monotonic() - idle_since)
                    if remaining <= 0:
                        raise socket.timeout(f"no event within {timeout} s")
                    wait = min(wait, remaining)
                for notice in self._listen().get(wait):
                    self._pending.extend(self._events_of(notice))
                if not self._pending:
                    continue
                idle_since = time.monotonic()
            event = self.event_from_message(self._pending.popleft())[1]
            self.process(event["type"], event)
            count += 1
            yield event
            if limit and count >= limit:
                return

    def wakeup_workers(self) -> None:
        """Ask every worker for a heartbeat event now (the listener is subscribed
        already, so none is missed)."""
        try:
            self.app.control.broadcast("heartbeat")
        except Exception as exc:  # noqa: BLE001 - the next regular heartbeat comes anyway
            logger.debug("could not wake the workers: %r", exc)

    def event_from_message(self, body: dict[str, Any], localize: bool = True,
                           now: Callable[[], float] = time.time) -> tuple[str, dict[str, Any]]:
        """``(type, event)``: the clock taken in, the timestamp moved to this time zone
        (``localize``), and ``local_received`` added."""
        type = body["type"]
        if type == "task-sent":
            body["clock"] = (self.clock.value or 1) + CLIENT_CLOCK_SKEW
            self.clock.adjust(body["clock"])
        else:
            clock = body.get("clock")
            if isinstance(clock, int):
                self.clock.adjust(clock)
            else:
                body["clock"] = self.clock.forward()
        if localize:
            offset, timestamp = body.get("utcoffset"), body.get("timestamp")
            if isinstance(offset, (int, float)) and isinstance(timestamp, (int, float)):
                body["timestamp"] = adjust_timestamp(timestamp, offset)
        body["local_received"] = now()
        return type, body

    @property
    def reconnects(self) -> int:
        """Times the listener lost its connection and listened again: events sent
        meanwhile were missed (a fanout keeps nothing)."""
        return self._reconnects + (self._listener.reconnects if self._listener else 0)

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._reconnects += listener.reconnects
            listener.close()
        if self._owns_broker:
            self.broker.close()

    def __enter__(self) -> EventReceiver:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the insides ------------------------------------------------------------------------
    def _listen(self) -> Listener:
        if self._listener is None:  # closed: listening again from now
            self._listener = require(self.broker, Fanout, "receive events").listen(
                self.exchange, [self.routing_key])
        return self._listener

    @staticmethod
    def _events_of(notice: Notice) -> list[dict[str, Any]]:
        try:
            body = json.loads(notice.body)
        except ValueError:
            logger.debug("ignored an event that is not JSON: %r", notice.body[:200])
            return []
        items = body if isinstance(body, list) else [body]
        return [item for item in items if isinstance(item, dict) and "type" in item]


def _resolve(channel: Any, app: Celery | None) -> tuple[Broker, Celery, bool]:
    """``(broker, app, whether the broker was opened here)`` for what was passed."""
    if isinstance(channel, Broker):
        if app is None:
            raise TypeError("EventReceiver(broker) needs app=")
        return channel, app, False
    if channel is not None and hasattr(channel, "broker") and hasattr(channel, "app"):
        return channel.broker, app or channel.app, False  # app.connection()
    owner = channel if channel is not None and hasattr(channel, "connect_broker") else app
    if owner is None:
        owner = get_current_app()
        if owner is None:
            raise TypeError("EventReceiver needs a connection, a broker or an app")
    return owner.connect_broker(), owner, True
