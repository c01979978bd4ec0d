"""The beat leader lock on RabbitMQ (``amqp://``, ``pyamqp://``, ``amqps://``).

RabbitMQ keeps no keys, but it does keep one thing for exactly as long as a connection
lives: an ``exclusive`` queue. The leader declares ``celeriac.beat.lock.<name>``
exclusive on a connection of the lock's own; while that connection lives, another
connection's declare fails with RESOURCE_LOCKED (405), and when it closes RabbitMQ
deletes the queue, so the next stand-by's declare takes the lock.

- ``acquire``: declare the queue exclusive; 405 means another beat holds it.
- ``renew``: a passive declare on the same connection: it answers only while the
  connection lives and the queue is still ours (not deleted by an operator).
- ``release``: delete the queue (the connection stays, for the next acquire).
- The lease's end is the connection's end: at once when the leader's process dies (the
  kernel closes its socket); on a lost host (power, network) when RabbitMQ misses the
  connection's heartbeats. That heartbeat is ``ceil(ttl / 2)`` seconds, and RabbitMQ
  closes a connection it heard nothing from for two to three heartbeats, so: never
  before ``ttl`` seconds of silence (a leader stops trusting its lease sooner, see
  ``service.py``) and at most about ``1.5 * ttl`` after the leader's last frame. No
  thread sends heartbeats: the leader's renewals (every ``ttl / 3``) are its heartbeats,
  so a leader stuck in its own process loses the lock as a dead one does.
- State (the last run times): one persistent JSON message in the durable queue
  ``celeriac.beat.state.<name>``, declared with ``x-max-length: 1`` so each save drops
  the one before. It is published on the lock's own connection with a publisher
  confirm, so a beat whose connection (hence lock) is gone cannot overwrite its
  successor's state. ``load_state`` reads it with ``basic.get`` and closes the channel
  without an ack, which puts it back.

py-amqp is not thread-safe, and a connection inherited over ``fork`` is the parent's
socket: every call holds the lock's mutex, and a child process forgets the inherited
connection (never closing it, which would end the parent's lease) and starts afresh.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any, Callable, TypeVar

from ..utils import amqp as amqp_util
from ..utils.urls import mask_password
from .lease import DEFAULT_NAME, LeaderLock

__all__ = ["AMQPLock", "LOCK_PREFIX", "STATE_PREFIX", "heartbeat_for"]

logger = logging.getLogger("celeriac.beat")

LOCK_PREFIX = "celeriac.beat.lock."
STATE_PREFIX = "celeriac.beat.state."
#: the header that dates a saved state, to pick the newest if ever two are read
SAVED_HEADER = "x-celeriac-saved-at"
#: the ttl assumed for a connection opened before any acquire (to read the state)
DEFAULT_TTL = 15.0
#: at most this many state messages are read to find the newest (there should be one)
MAX_STATE_READS = 10

T = TypeVar("T")


def heartbeat_for(ttl: float) -> int:
    """The AMQP heartbeat (whole seconds) of a lock connection whose lease is ``ttl``.

    RabbitMQ closes a connection after two to three heartbeats of silence; two
    heartbeats of at least ``ttl`` keep it from dropping a lease its holder still
    trusts, three of at most ``1.5 * ttl`` (plus rounding) bound the takeover.
    """
    return max(1, math.ceil(ttl / 2))


class AMQPLock(LeaderLock):
    """An exclusive queue held by the leader's connection (see the module's docstring).

    Args:
        url: the broker URL (a ``;``-separated fail-over list is tried in order).
        name: the lock's name; the queues are ``celeriac.beat.lock.<name>`` and
            ``celeriac.beat.state.<name>``.
        options: ``broker_transport_options`` and the settings the transports read
            (``ssl``, ``socket_connect_timeout``, ``login_method``,
            ``failover_strategy``, ``confirm_timeout``).
    """

    def __init__(self, url: str, name: str = DEFAULT_NAME,
                 options: dict[str, Any] | None = None) -> None:
        self.amqp = amqp_util.import_amqp("the beat leader lock")
        self.options = dict(options or {})
        self.endpoints = amqp_util.Endpoints(url, self.options.get("failover_strategy"))
        self.name = name
        self.lock_queue = LOCK_PREFIX + name
        self.state_queue = STATE_PREFIX + name
        self.confirm_timeout = float(self.options.get("confirm_timeout") or 10.0)
        self._mutex = threading.RLock()
        self._pid = os.getpid()
        self._conn: Any = None
        self._url = self.endpoints.urls[0]
        self._heartbeat = 0  # what this connection asked RabbitMQ for
        self._channel: Any = None
        self._state_declared = False
        #: who holds the lock through this connection (None: nobody here)
        self._owner: str | None = None
        self._warned_heartbeat = False

    # -- the connection ---------------------------------------------------------------
    def _guard(self) -> threading.RLock:
        """The mutex, after forgetting what a parent process left us over fork."""
        if self._pid != os.getpid():
            # The socket is the parent's: closing it (AMQP close or shutdown()) would
            # end the parent's connection and lease. Dropping the reference only closes
            # this process's copy of the descriptor. The mutex may have been copied held.
            self._pid = os.getpid()
            self._mutex = threading.RLock()
            self._conn = self._channel = None
            self._owner = None
            self._state_declared = False
        return self._mutex

    def _connect(self, ttl: float | None) -> Any:
        """The lock's connection; ``ttl``: the lease it must carry (None: any will do,
        as to read the state or release)."""
        if ttl is not None and self._conn is not None and self._owner is None \
                and self._heartbeat != heartbeat_for(ttl):
            # Nothing held here yet: a connection whose heartbeat does not fit this
            # lease is cheaper to replace than to reason about.
            self._drop(close=True)
        if self._conn is None:
            ttl = DEFAULT_TTL if ttl is None else ttl
            heartbeat = heartbeat_for(ttl)
            opts = dict(self.options)
            # A partitioned server must not hang a renewal past the lease: reads and
            # writes on this connection give up well within it.
            opts.setdefault("read_timeout", max(1.0, ttl / 3))
            opts.setdefault("write_timeout", max(1.0, ttl / 3))
            opts.pop("on_blocked", None)
            opts.pop("on_unblocked", None)
            self._conn, self._url = amqp_util.connect(self.endpoints, opts,
                                                      "the beat leader lock",
                                                      heartbeat=heartbeat)
            self._heartbeat = heartbeat
            self._channel = None
            self._state_declared = False
            self._check_heartbeat(ttl)
        return self._conn

    def _check_heartbeat(self, ttl: float) -> None:
        # RabbitMQ may lower the heartbeat (its own ``heartbeat`` setting wins when
        # smaller); under 5/12 of the ttl a leader that misses renewals could lose the
        # queue while it still trusts its lease (service.py trusts 5/6 of it).
        negotiated = int(getattr(self._conn, "heartbeat", 0) or 0)
        if negotiated and negotiated * 2 < ttl * 5 / 6 and not self._warned_heartbeat:
            self._warned_heartbeat = True
            logger.warning(
                "beat: RabbitMQ at %s lowered the leader lock's heartbeat to %ds (asked "
                "%ds for a %gs lease): a leader that misses renewals may lose the lock "
                "before it stops; raise RabbitMQ's heartbeat or lower --lock-ttl",
                mask_password(self._url), negotiated, self._heartbeat, ttl)

    def _chan(self) -> Any:
        if self._channel is None:
            ch = self._conn.channel()
            ch.confirm_select()
            self._channel = ch
        return self._channel

    def _drop(self, close: bool) -> None:
        """Forget the connection (and with it any lock held through it)."""
        conn, self._conn = self._conn, None
        self._channel = None
        self._owner = None
        self._state_declared = False
        if conn is None:
            return
        try:
            if close:
                conn.close()
            else:
                conn.collect()
        except Exception:
            try:
                conn.collect()
            except Exception:
                pass

    def _is_connection_error(self, exc: BaseException) -> bool:
        return amqp_util.is_connection_error(self.amqp, exc) or isinstance(exc, TimeoutError)

    def _channel_failed(self) -> None:
        # A channel error closes that channel only; the next call opens another.
        self._channel = None

    def _on_connection(self, ttl: float | None, what: str, fn: Callable[[Any], T],
                       retry: bool) -> T:
        """``fn(connection)`` on the lock's connection; a lost connection is forgotten and,
        if ``retry``, tried once more on a new one. Raises ConnectionError naming the
        server when it is unreachable."""
        for attempt in (0, 1):
            try:
                return fn(self._connect(ttl))
            except self.amqp.exceptions.ChannelError:
                self._channel_failed()
                raise
            except Exception as exc:
                if not self._is_connection_error(exc) and not isinstance(exc, ConnectionError):
                    raise
                self._drop(close=False)
                if retry and attempt == 0:
                    continue
                raise ConnectionError(f"RabbitMQ at {mask_password(self._url)} is "
                                      f"unreachable ({what}): {amqp_util.describe(exc)}"
                                      ) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- the lease ----------------------------------------------------------------------
    def acquire(self, owner: str, ttl: float) -> bool:
        with self._guard():
            if self._owner is not None:
                # Held through this connection: by another owner sharing this object (to
                # whom the queue's exclusivity means nothing), or by the caller: then a
                # renewal, and if that finds it lost, a fresh try below.
                if self._owner != owner:
                    return False
                if self._renew(ttl):
                    return True

            def declare(conn: Any) -> bool:
                try:
                    self._chan().queue_declare(self.lock_queue, durable=False,
                                               exclusive=True, auto_delete=False)
                except self.amqp.exceptions.ResourceLocked:
                    self._channel_failed()
                    return False  # another connection holds it
                return True

            try:
                taken = self._on_connection(ttl, "taking the beat leader lock", declare,
                                            retry=True)
            except self.amqp.exceptions.ChannelError as exc:
                raise ConnectionError(f"RabbitMQ refused the beat leader lock "
                                      f"{self.lock_queue!r}: {amqp_util.describe(exc)}"
                                      ) from exc
            if taken:
                self._owner = owner
            return taken

    def renew(self, owner: str, ttl: float) -> bool:
        with self._guard():
            if self._owner != owner:
                return False
            return self._renew(ttl)

    def _renew(self, ttl: float) -> bool:
        # False rather than an error when the connection is gone: its exclusive queue
        # goes with it, so the lease cannot be kept whatever happens next.
        try:
            self._on_connection(ttl, "renewing the beat leader lock",
                                lambda conn: self._chan().queue_declare(self.lock_queue,
                                                                        passive=True),
                                retry=False)
        except self.amqp.exceptions.ChannelError as exc:
            logger.warning("beat: the leader lock %r is no longer ours: %s",
                           self.lock_queue, amqp_util.describe(exc))
            self._owner = None
            return False
        except ConnectionError as exc:
            logger.warning("beat: leader lock: %s", exc)
            self._owner = None
            return False
        return True

    def release(self, owner: str) -> None:
        with self._guard():
            if self._owner != owner or self._conn is None:
                return
            self._owner = None
            try:
                # queue.delete of a queue exclusive to another connection is refused
                # (405), so this can only delete our own.
                self._on_connection(None, "releasing the beat leader lock",
                                    lambda conn: self._chan().queue_delete(self.lock_queue),
                                    retry=False)
            except (self.amqp.exceptions.ChannelError, ConnectionError) as exc:
                # Gone already, or the connection is: either way it is not held.
                logger.debug("beat: releasing the leader lock: %s", exc)

    # -- state ------------------------------------------------------------------------------
    def _declare_state(self, ch: Any) -> None:
        if not self._state_declared:
            ch.queue_declare(self.state_queue, durable=True, auto_delete=False,
                             arguments={"x-max-length": 1})
            self._state_declared = True

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        """Publish ``state`` if ``owner`` holds the lock here.

        Raises:
            ConnectionError: the connection was lost or RabbitMQ did not confirm; the
                caller should not send what it was about to record.
        """
        with self._guard():
            if self._owner != owner or self._conn is None:
                return
            body = json.dumps(state)

            def publish(conn: Any) -> None:
                ch = self._chan()
                self._declare_state(ch)
                message = self.amqp.Message(
                    body, content_type="application/json", delivery_mode=2,
                    application_headers={SAVED_HEADER: time.time(), "owner": owner})
                ch.basic_publish_confirm(message, exchange="", routing_key=self.state_queue,
                                         mandatory=True, confirm_timeout=self.confirm_timeout)

            try:
                self._on_connection(None, "saving the beat state", publish,
                                    retry=False)
            except self.amqp.exceptions.ChannelError as exc:
                raise ConnectionError(f"RabbitMQ refused the beat state "
                                      f"{self.state_queue!r}: {amqp_util.describe(exc)}"
                                      ) from exc
            except self.amqp.exceptions.MessageNacked as exc:
                raise ConnectionError(f"RabbitMQ did not keep the beat state "
                                      f"{self.state_queue!r}") from exc

    def load_state(self) -> dict[str, Any] | None:
        with self._guard():
            def read(conn: Any) -> list[Any]:
                self._declare_state(self._chan())
                # A channel of its own, closed at the end: what it took unacked
                # returns to the queue with it.
                ch = conn.channel()
                found = []
                for _ in range(MAX_STATE_READS):
                    message = ch.basic_get(self.state_queue, no_ack=False)
                    if message is None:
                        break
                    found.append(message)
                ch.close()
                return found

            try:
                found = self._on_connection(None, "reading the beat state", read,
                                            retry=self._owner is None)
            except self.amqp.exceptions.ChannelError as exc:
                raise ConnectionError(f"RabbitMQ refused the beat state "
                                      f"{self.state_queue!r}: {amqp_util.describe(exc)}"
                                      ) from exc
        if not found:
            return None

        def saved_at(message: Any) -> float:
            headers = getattr(message, "headers", None) or {}
            try:
                return float(headers.get(SAVED_HEADER) or 0)
            except (TypeError, ValueError):
                return 0.0

        newest = max(found, key=saved_at)  # one message, unless x-max-length was lifted
        body = newest.body
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        state = json.loads(body)
        return state if isinstance(state, dict) else None

    def close(self) -> None:
        with self._guard():
            # Closing the connection deletes the exclusive queue, whoever held it here.
            self._drop(close=True)
