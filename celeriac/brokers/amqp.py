"""RabbitMQ (``amqp://``, ``pyamqp://``, ``amqps://``), declared and spoken as Celery does.

What RabbitMQ does itself is left to it: a message is the consumer's until acked and
returns to its queue the moment the consumer's connection closes (no heartbeat keys,
no reclaiming), priorities with ``x-max-priority``, per-message ``expiration``.

- **Topology**: Celery's (CELERY-WIRE §4.1): each queue durable with its exchange
  (``celery`` direct) and binding; a message to a direct exchange goes to the default
  exchange with the queue's name, as Celery publishes it. Queue arguments are exactly
  what the configuration gives (``x-max-priority``, ``x-queue-type``), so that Celery
  and celeriac declare the same queue alike; a clash (``PRECONDITION_FAILED``) is an
  error naming the queue and the server's reason.
- **Publishing** waits for RabbitMQ's confirm, with ``mandatory`` set: a publish returns
  only when RabbitMQ took the message; a nack or an unroutable message raises.
  ``publish_many`` sends every message before waiting for the confirms.
- **Consuming**: ``basic.consume`` with ``basic.qos`` = the consumer's prefetch; acks go
  on the channel that received the message; a message whose connection was lost since is
  RabbitMQ's again, so settling it is a no-op.
- **Delays**: an eta message waits in RabbitMQ, in Celery 5.5's native delayed delivery
  topology (28 levels ``celery_delayed_<n>``, each a queue whose messages all live
  2**n seconds and are then dead-lettered to the next level, routed by one bit of the
  delay written in the routing key, down to the ``celery_delayed_delivery`` exchange to
  which each queue is bound). Every message of a level queue has the same lifetime, so
  none waits behind a longer one (a single queue with per-message TTLs expires only its
  head), and quorum level queues dead-letter at-least-once, so a broker crash loses
  none. A Celery worker on the same queue runs such a message when it arrives.
- **Dead letters** go to a durable queue (``broker_dead_letter_queue``) with the reason in
  their headers. A message RabbitMQ gave again after its consumer was lost is counted
  (``x-delivery-count`` on quorum queues, markers in ``celeriac.losses`` on classic
  ones) and set
  aside after ``broker_max_redeliveries``.
- **Fanout** (events, remote control): Celery's ``celeryev`` topic and ``celery.pidbox``
  fanout exchanges with queues of their own per listener.

py-amqp is not thread-safe: every use of a connection holds its lock, and each listener
has a connection of its own. A consumer's connection sends heartbeats from a thread, so
that a long task cannot get its connection closed (and its messages given to another
worker while it still runs them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import select
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Sequence

from .. import messages
from ..exceptions import ImproperlyConfigured, PublishUnconfirmed
from ..utils import amqp as amqp_util
from ..utils.urls import mask_password
from .base import (
    Broker,
    DeadLetter,
    DeadLetters,
    DelayedDelivery,
    Delivery,
    Fanout,
    Listener,
    Notice,
    Outgoing,
    QueueCounts,
    QueueStats,
    Redeliveries,
    RevocationStore,
    take_all,
)

logger = logging.getLogger("celeriac.broker.amqp")

DELAY_BITS = 28
DELAY_EXCHANGE = "celery_delayed_delivery"
#: markers of lost deliveries of messages of classic queues (see ``losses``), kept a day
LOSSES_QUEUE = "celeriac.losses"
LOSS_MARKER_TTL = 86400
REASON_HEADER = "x-celeriac-reason"
#: how long a publish waits for RabbitMQ's confirm before saying why it did not come
DEFAULT_CONFIRM_TIMEOUT = 30.0
REVOKED_QUEUE = "celeriac.revoked"
#: longest a fetch holds the connection at a time while it waits for a message
FETCH_SLICE = 0.05
#: the longest wait for the rest of a frame whose first bytes arrived
QUICK_READ = 0.05


def level_name(level: int) -> str:
    return f"celery_delayed_{level}"


def delay_routing_key(seconds: int, routing_key: str) -> str:
    """The routing key that sends a message down the delay levels: the delay's bits,
    most significant first, one word each, then the queue's own key."""
    return ".".join(format(seconds, f"0{DELAY_BITS}b")) + "." + routing_key


# The exchanges Celery's events and remote control travel on, as it declares them.
_FANOUT_EXCHANGES = {
    "celeryev": ("topic", True),
}


def _exchange_kind(name: str) -> tuple[str, bool]:
    if name in _FANOUT_EXCHANGES:
        return _FANOUT_EXCHANGES[name]
    if name.startswith("reply."):
        return "direct", False
    if name.endswith("pidbox"):
        return "fanout", False
    return "topic", True


class QueueSpec:
    """How one queue is declared: arguments, exchange, binding."""

    __slots__ = ("name", "durable", "exclusive", "auto_delete", "arguments", "exchange",
                 "exchange_type", "routing_key", "exchange_durable")

    def __init__(self, name: str, arguments: dict[str, Any], exchange: str,
                 exchange_type: str = "direct", routing_key: str | None = None,
                 durable: bool = True, exclusive: bool = False,
                 auto_delete: bool = False, exchange_durable: bool = True) -> None:
        self.name = name
        self.arguments = arguments
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.routing_key = routing_key if routing_key is not None else name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.exchange_durable = exchange_durable

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"


class Topology:
    """The queues the configuration names, and how a queue it does not name is made.

    Built from ``options['topology']``, which the app fills from ``task_queues``,
    ``task_default_queue(_type)``, ``task_queue_max_priority``,
    ``task_create_missing_queues`` and ``task_create_missing_queue_type``.
    """

    def __init__(self, spec: dict[str, Any] | None) -> None:
        spec = spec or {}
        self.queues: dict[str, Any] = dict(spec.get("queues") or {})
        self.default_queue: str = spec.get("default_queue") or "celery"
        self.default_queue_type: str = spec.get("default_queue_type") or "classic"
        self.missing_queue_type: str = spec.get("missing_queue_type") or "classic"
        self.max_priority: int | None = spec.get("max_priority")
        self.create_missing: bool = spec.get("create_missing", True) is not False
        self.delayed_queue_type: str = spec.get("delayed_queue_type") or "quorum"
        self.default_exchange: str | None = spec.get("default_exchange")
        self.default_exchange_type: str = spec.get("default_exchange_type") or "direct"
        self.default_routing_key: str | None = spec.get("default_routing_key")
        self.event_queue: dict[str, Any] = dict(spec.get("event_queue") or {})
        self.control_queue: dict[str, Any] = dict(spec.get("control_queue") or {})
        for kind, value in (("task_default_queue_type", self.default_queue_type),
                            ("task_create_missing_queue_type", self.missing_queue_type),
                            ("broker_native_delayed_delivery_queue_type",
                             self.delayed_queue_type)):
            if value not in ("classic", "quorum"):
                raise ImproperlyConfigured(
                    f"{kind}={value!r}: RabbitMQ queue types are 'classic' and 'quorum'")

    def spec_for(self, name: str) -> QueueSpec:
        queue = self.queues.get(name)
        if queue is None:
            kind = (self.default_queue_type if name == self.default_queue
                    else self.missing_queue_type)
            args: dict[str, Any] = {}
            if kind == "quorum":
                args["x-queue-type"] = "quorum"
            elif self.max_priority:
                args["x-max-priority"] = int(self.max_priority)
            if name == self.default_queue:
                return QueueSpec(name, args, exchange=self.default_exchange or name,
                                 exchange_type=self.default_exchange_type,
                                 routing_key=self.default_routing_key or name)
            return QueueSpec(name, args, exchange=name)
        args = dict(getattr(queue, "queue_arguments", None) or {})
        if getattr(queue, "max_priority", None):
            args.setdefault("x-max-priority", int(queue.max_priority))
        if "x-queue-type" not in args:
            kind = self.default_queue_type if name == self.default_queue else "classic"
            if kind == "quorum":
                args["x-queue-type"] = "quorum"
        if self.max_priority and "x-max-priority" not in args \
                and args.get("x-queue-type") != "quorum":
            args["x-max-priority"] = int(self.max_priority)
        exchange = getattr(queue, "exchange", None)
        ex_name = getattr(exchange, "name", exchange)
        ex_type = getattr(exchange, "type", "direct") if exchange is not None else "direct"
        ex_durable = getattr(exchange, "durable", True) if exchange is not None else True
        return QueueSpec(
            name, args,
            exchange=ex_name if ex_name is not None else name,
            exchange_type=ex_type or "direct",
            routing_key=getattr(queue, "routing_key", None) or name,
            durable=getattr(queue, "durable", True),
            exclusive=getattr(queue, "exclusive", False),
            auto_delete=getattr(queue, "auto_delete", False),
            exchange_durable=ex_durable)

    def exchange_type(self, exchange: str) -> str | None:
        for queue in self.queues.values():
            ex = getattr(queue, "exchange", None)
            if getattr(ex, "name", ex) == exchange:
                return getattr(ex, "type", "direct") or "direct"
        return None


class PublishRefused(ConnectionError):
    """RabbitMQ nacked a message, returned it unroutable, or did not confirm in time."""


class Line:
    """One py-amqp connection and its channels, made again after a loss.

    ``generation`` grows with each new consuming channel: a delivery tag belongs to the
    channel that gave it, so a message of an older generation is no longer ours.
    """

    def __init__(self, url: str, options: dict[str, Any], feature: str,
                 heartbeat: float) -> None:
        self.amqp = amqp_util.import_amqp(feature)
        self.endpoints = amqp_util.Endpoints(url, options.get("failover_strategy"))
        self.options = options
        self.feature = feature
        self.heartbeat = heartbeat
        self.lock = threading.RLock()
        self.conn: Any = None
        self.url = self.endpoints.urls[0]
        self.generation = 0
        self.blocked: str | None = None
        self._ticker: threading.Thread | None = None
        self._closed = threading.Event()

    def connection(self) -> Any:
        if self.conn is None:
            opts = dict(self.options)
            opts["on_blocked"] = self._on_blocked
            opts["on_unblocked"] = self._on_unblocked
            self.conn, self.url = amqp_util.connect(self.endpoints, opts, self.feature,
                                                    heartbeat=self.heartbeat)
            self.generation += 1
            self.blocked = None
            if self.heartbeat and self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, daemon=True,
                                                name="celeriac-amqp-heartbeat")
                self._ticker.start()
        return self.conn

    def _on_blocked(self, reason: str = "") -> None:
        self.blocked = reason or "a resource alarm"
        logger.warning("RabbitMQ at %s blocked this connection (%s): publishing waits "
                       "until the alarm clears", mask_password(self.url), self.blocked)

    def _on_unblocked(self) -> None:
        logger.warning("RabbitMQ at %s unblocked this connection", mask_password(self.url))
        self.blocked = None

    def _tick(self) -> None:
        # Heartbeats go out from here whatever the consumer's thread is doing; reading
        # the server's is left to that thread's next call (a missed one is a socket
        # error there), so a long task never gets its connection judged dead.
        interval = max(1.0, self.heartbeat / 3)
        while not self._closed.wait(interval):
            if not self.lock.acquire(timeout=interval):
                continue
            try:
                if self.conn is not None:
                    self.conn.send_heartbeat()
            except Exception as exc:
                logger.debug("heartbeat failed: %r", exc)
            finally:
                self.lock.release()

    def lost(self) -> None:
        """Forget the connection after an error; the next call makes a new one."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.collect()
            except Exception:
                pass

    def close(self) -> None:
        self._closed.set()
        with self.lock:
            conn, self.conn = self.conn, None
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    try:
                        conn.collect()
                    except Exception:
                        pass


def _plain(value: Any) -> Any:
    """AMQP field values as JSON has them (py-amqp gives datetimes and Decimals)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class AMQPBroker(Broker, DelayedDelivery, DeadLetters, Redeliveries, RevocationStore, Fanout,
                 QueueStats):
    """A RabbitMQ connection per consumer (see the module's docstring)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        opts = self.options
        self.topology = Topology(opts.get("topology"))
        self.confirm_timeout = float(opts.get("confirm_timeout") or DEFAULT_CONFIRM_TIMEOUT)
        #: kombu's transport option; celeriac's default is on (a publish returns when
        #: RabbitMQ has the message), off trades that for one round trip less a publish
        self.confirm_publish = opts.get("confirm_publish", True) is not False
        heartbeat = opts.get("heartbeat")
        self.line = Line(url, opts, "the amqp:// broker",
                         heartbeat=float(heartbeat if heartbeat is not None else 120))
        self._publish_channel: Any = None
        self._notice_channel: Any = None
        self._consume_channel: Any = None
        self._consume_generation = -1
        self._consuming: set[str] = set()
        self._consumer_queues: dict[str, str] = {}
        self._qos = 0
        self._buffer: deque[Any] = deque()
        self._declared: set[str] = set()
        self._exchanges: set[str] = set()
        self._confirmed = 0  # highest delivery tag RabbitMQ confirmed on the publish channel
        self._published = 0
        self._nacked: list[int] = []
        self._returned: list[str] = []
        self._delay_declared = False
        self._losses_cache: tuple[float, dict[str, int]] | None = None
        #: (checked, read, count, {id: signal}, version) of the revocations queue
        self._revoked_cache: tuple[float, float, int, dict[str, Any], int] | None = None

    # -- connection and channels ----------------------------------------------------------
    def safe_url(self) -> str:
        return mask_password(self.url)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` under the connection's lock; a lost connection is forgotten and
        raised as ConnectionError naming the server (the caller's retry makes it anew)."""
        amqp = self.line.amqp
        with self.line.lock:
            try:
                return fn()
            except (PublishRefused, PublishUnconfirmed, ImproperlyConfigured):
                raise
            except amqp.exceptions.PreconditionFailed as exc:
                self._channel_lost()
                raise ImproperlyConfigured(self._clash(what, exc)) from None
            except amqp.exceptions.ChannelError as exc:
                self._channel_lost()
                raise ConnectionError(f"RabbitMQ at {self.safe_url()} refused {what}: "
                                      f"{amqp_util.describe(exc)}") from exc
            except Exception as exc:
                if not amqp_util.is_connection_error(amqp, exc) \
                        and not isinstance(exc, (TimeoutError, ConnectionError)):
                    raise
                self._connection_lost()
                raise ConnectionError(f"RabbitMQ at {self.safe_url()} is unreachable "
                                      f"({what}): {amqp_util.describe(exc)}") from exc

    def _clash(self, what: str, exc: Exception) -> str:
        return (f"RabbitMQ refused {what}: {amqp_util.describe(exc)}. The queue or "
                "exchange exists with other arguments than this configuration gives "
                "(task_queues, task_queue_max_priority, task_default_queue_type): make "
                "them match what declared it first, or delete it (rabbitmqctl "
                "delete_queue NAME) if its messages can go")

    def _connection_lost(self) -> None:
        self.line.lost()
        self._publish_channel = self._notice_channel = self._consume_channel = None
        self._consuming.clear()
        self._buffer.clear()  # RabbitMQ gives them again: they were never acked
        self._declared.clear()
        self._exchanges.clear()
        self._delay_declared = False
        self._qos = 0

    def _channel_lost(self) -> None:
        # A channel error closes that channel only; which one is not worth telling
        # apart: making them again is cheap, and the consumer's unacked messages go
        # back to RabbitMQ with its channel.
        for ch in (self._publish_channel, self._notice_channel, self._consume_channel):
            if ch is not None:
                try:
                    ch.close()
                except Exception:
                    pass
        self._publish_channel = self._notice_channel = self._consume_channel = None
        self._consuming.clear()
        self._buffer.clear()
        self._qos = 0

    def _publisher(self) -> Any:
        if self._publish_channel is None or self.line.conn is None:
            ch = self.line.connection().channel()
            if self.confirm_publish:
                ch.confirm_select()
            ch.events["basic_ack"].add(self._on_ack)
            ch.events["basic_nack"].add(self._on_nack)
            ch.events["basic_return"].add(self._on_return)
            self._published = self._confirmed = 0
            self._nacked.clear()
            self._returned.clear()
            self._publish_channel = ch
        return self._publish_channel

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirmed = max(self._confirmed, tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked.append(tag)
        self._confirmed = max(self._confirmed, tag)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str,
                   message: Any) -> None:
        self._returned.append(f"exchange {exchange!r} routing key {routing_key!r}: "
                              f"{amqp_util.describe(exc)}")

    def _wait_unblocked(self, what: str) -> None:
        """While RabbitMQ blocks this connection (a memory or disk alarm), wait for it to
        lift, up to ``confirm_timeout``, before sending anything: a refusal then means
        nothing was sent, and a retry cannot queue a message twice."""
        if self.line.blocked is None or self.line.conn is None:
            return
        deadline = time.monotonic() + self.confirm_timeout
        while self.line.blocked is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishRefused(
                    f"RabbitMQ at {self.safe_url()} blocks publishing ({self.line.blocked}) "
                    f"for more than {self.confirm_timeout:g} s; {what} was not sent")
            try:
                self.line.conn.drain_events(timeout=min(left, 1.0))
            except TimeoutError:
                pass

    def _wait_confirms(self, what: str) -> None:
        if not self.confirm_publish:
            self._confirmed = self._published
            for returned in take_all(deque(self._returned)):
                logger.error("RabbitMQ could not route a message published earlier (%s); "
                             "with confirm_publish off it is lost", returned)
            self._returned.clear()
            return
        conn = self.line.conn
        deadline = time.monotonic() + self.confirm_timeout
        while self._confirmed < self._published:
            left = deadline - time.monotonic()
            if left <= 0:
                if self.line.blocked:
                    # Kept open: RabbitMQ routes what it read once the alarm clears, so
                    # the message is queued once, not lost and not sent again.
                    why = f"the connection is blocked by {self.line.blocked}"
                else:
                    why = "no confirm came"
                    self._connection_lost()
                raise PublishUnconfirmed(
                    f"RabbitMQ at {self.safe_url()} did not confirm {what} within "
                    f"{self.confirm_timeout:g} s ({why}); it may still be queued, so it "
                    "is not sent again (broker_transport_options confirm_timeout sets "
                    "the wait)")
            try:
                conn.drain_events(timeout=min(left, 1.0))
            except TimeoutError:
                continue
        if self._returned or self._nacked:
            returned, nacked = list(self._returned), list(self._nacked)
            self._returned.clear()
            self._nacked.clear()
            if returned:
                raise PublishRefused(f"RabbitMQ could not route {what} to any queue "
                                     f"({returned[0]})")
            raise PublishRefused(f"RabbitMQ refused {what} (nack for {len(nacked)} "
                                 "message(s)); nothing was queued for them")

    # -- topology -------------------------------------------------------------------------
    def _declare_exchange(self, ch: Any, name: str, kind: str, durable: bool = True) -> None:
        if not name or name in self._exchanges:
            return
        ch.exchange_declare(name, kind, durable=durable, auto_delete=False)
        self._exchanges.add(name)

    def _declare_queue(self, name: str) -> QueueSpec:
        spec = self.topology.spec_for(name)
        if name in self._declared:
            return spec
        ch = self._publisher()
        declare_what = f"declaring queue {name!r} with arguments {spec.arguments or 'none'}"
        try:
            ch.queue_declare(name, durable=spec.durable, exclusive=spec.exclusive,
                             auto_delete=spec.auto_delete, arguments=spec.arguments or None)
        except self.line.amqp.exceptions.PreconditionFailed as exc:
            self._channel_lost()
            raise ImproperlyConfigured(self._clash(declare_what, exc)) from None
        if spec.exchange:
            self._declare_exchange(ch, spec.exchange, spec.exchange_type, spec.exchange_durable)
            ch.queue_bind(name, spec.exchange, spec.routing_key)
        # Delayed messages come back through the delivery exchange by the queue's name
        # (its default-exchange key): exactly 28 delay words, then the name.
        self._declare_delays(ch)
        ch.queue_bind(name, DELAY_EXCHANGE, "*." * DELAY_BITS + name)
        self._declared.add(name)
        return spec

    def _declare_delays(self, ch: Any) -> None:
        """The native delayed delivery topology, declared as Celery 5.5 declares it (the
        same names and arguments, so that either may declare it first)."""
        if self._delay_declared:
            return
        kind = self.topology.delayed_queue_type
        key = "1.#"
        for level in range(DELAY_BITS - 1, -1, -1):
            name = level_name(level)
            self._declare_exchange(ch, name, "topic")
            args: dict[str, Any] = {
                "x-queue-type": kind,
                "x-overflow": "reject-publish",
                "x-message-ttl": 2 ** level * 1000,
                "x-dead-letter-exchange": level_name(level - 1) if level else DELAY_EXCHANGE,
            }
            if kind == "quorum":
                args["x-dead-letter-strategy"] = "at-least-once"
            try:
                ch.queue_declare(name, durable=True, exclusive=False, auto_delete=False,
                                 arguments=args)
            except self.line.amqp.exceptions.PreconditionFailed as exc:
                self._channel_lost()
                raise ImproperlyConfigured(self._clash(
                    f"declaring the delay queue {name!r} as {kind} "
                    "(broker_native_delayed_delivery_queue_type)", exc)) from None
            ch.queue_bind(name, name, key)
            key = "*." + key
        key = "0.#"
        for level in range(DELAY_BITS - 1, 0, -1):
            ch.exchange_bind(level_name(level - 1), level_name(level), key)
            key = "*." + key
        self._declare_exchange(ch, DELAY_EXCHANGE, "topic")
        ch.exchange_bind(DELAY_EXCHANGE, level_name(0), key)
        self._delay_declared = True

    # -- publishing -----------------------------------------------------------------------
    def _amqp_message(self, payload: str, priority: int, headers_extra: dict[str, Any] | None
                      = None) -> tuple[Any, str, str | None]:
        try:
            msg = messages.decode_envelope(payload)
        except messages.MalformedMessage:
            return self._broken_message(payload), "", None
        props = msg.properties
        headers = dict(msg.headers)
        if headers_extra:
            headers.update(headers_extra)
        kwargs: dict[str, Any] = {
            "content_type": msg.content_type, "content_encoding": msg.content_encoding,
            "application_headers": headers,
            "delivery_mode": props.get("delivery_mode") or 2,
            "priority": int(priority or props.get("priority") or 0),
        }
        for name in ("correlation_id", "reply_to", "expiration", "message_id"):
            if props.get(name):
                kwargs[name] = str(props[name])
        info = props.get("delivery_info") or {}
        return (self.line.amqp.Message(msg.body, **kwargs), info.get("exchange") or "",
                info.get("routing_key"))

    def _broken_message(self, payload: str) -> Any:
        """What a broken client would send for an envelope that does not decode: its
        headers and body as they are, or the whole text as the body (the worker sets
        it aside with the reason, telling the caller when an id can be read)."""
        try:
            env = json.loads(payload)
        except ValueError:
            env = None
        if not isinstance(env, dict):
            return self.line.amqp.Message(payload, delivery_mode=2)
        headers = env["headers"] if isinstance(env.get("headers"), dict) else {}
        props: dict[str, Any] = (env["properties"] if isinstance(env.get("properties"), dict)
                                 else {})
        body = env.get("body")
        kwargs: dict[str, Any] = {"delivery_mode": 2, "application_headers": headers}
        for key, name in (("content-type", "content_type"),
                          ("content-encoding", "content_encoding")):
            if isinstance(env.get(key), str):
                kwargs[name] = env[key]
        if isinstance(props.get("correlation_id"), str):
            kwargs["correlation_id"] = props["correlation_id"]
        return self.line.amqp.Message(body if isinstance(body, str) else json.dumps(body),
                                      **kwargs)

    def _send(self, queue: str, payload: str, priority: int, eta: float | None,
              extra: dict[str, Any] | None = None, copy: bool = False) -> None:
        """Publish one message (its confirm is awaited by the caller). A ``copy`` of a
        message taken from ``queue`` goes straight back to it, whatever exchange it
        first came through."""
        ch = self._publisher()
        spec = self._declare_queue(queue)
        message, exchange, routing_key = self._amqp_message(payload, priority, extra)
        delay = math.ceil(eta - time.time()) if eta is not None else 0
        if delay >= 1:
            # never early: rounded up to the next second
            ch.basic_publish(message, exchange=level_name(DELAY_BITS - 1),
                             routing_key=delay_routing_key(min(delay, 2 ** DELAY_BITS - 1),
                                                           queue), mandatory=True)
        elif not copy and exchange and (exchange != spec.exchange
                                        or spec.exchange_type != "direct"):
            # a route naming another exchange (topic, fanout): RabbitMQ routes it
            ch.basic_publish(message, exchange=exchange,
                             routing_key=routing_key or queue, mandatory=True)
        else:
            ch.basic_publish(message, exchange="", routing_key=queue, mandatory=True)
        self._published += 1

    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        def run() -> None:
            self._wait_unblocked(f"a message for queue {queue!r}")
            self._send(queue, payload, priority, eta)
            self._wait_confirms(f"a message for queue {queue!r}")
        self._call(f"publishing to {queue!r}", run)

    def publish_many(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return

        def run() -> None:
            self._wait_unblocked(f"a batch of {len(batch)} message(s)")
            for m in batch:
                self._send(m.queue, m.payload, m.priority, m.eta)
            self._wait_confirms(f"{len(batch)} message(s)")
        self._call("publishing a batch", run)

    # -- consuming ------------------------------------------------------------------------
    def _consumer_channel(self, queues: Sequence[str], limit: int) -> Any:
        ch = self._consume_channel
        if ch is None or self.line.conn is None:
            conn = self.line.connection()
            for q in queues:
                self._declare_queue(q)
            ch = conn.channel()
            self._consume_channel = ch
            self._consume_generation = self.line.generation * 1_000_000 + ch.channel_id
            self._consuming.clear()
            self._qos = 0
        if limit != self._qos:
            # Per consumer, not global: quorum queues refuse a global QoS. A prefork
            # pool's children consume on a channel each, so the worker holds
            # concurrency x worker_prefetch_multiplier, as Celery's one channel does.
            # It follows the consumer's limit, which drops to 1 while its siblings are
            # idle, so that a busy consumer is not pushed what they could run.
            ch.basic_qos(0, limit, False)
            self._qos = limit
        for q in queues:
            if q not in self._consuming:
                self._declare_queue(q)
                tag = ch.basic_consume(q, callback=self._buffer.append, no_ack=False)
                self._consumer_queues[tag] = q
                self._consuming.add(q)
        return ch

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        limit = max(1, limit)

        def run(wait: float) -> list[Any]:
            self._consumer_channel(queues, limit)
            if not self._buffer and wait > 0:
                try:
                    self.line.conn.drain_events(timeout=wait)
                except TimeoutError:
                    pass
            if self._buffer:
                self._read_waiting(limit)
            taken: list[Any] = []
            while self._buffer and len(taken) < limit:
                taken.append(self._buffer.popleft())
            return taken

        # The wait is cut in slices with the lock let go in between: the connection is
        # shared with the acks of tasks running on other threads or greenlets, and
        # neither a threading lock nor a green one is fair to a waiter.
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            got = self._call("consuming", lambda: run(min(max(left, 0.0), FETCH_SLICE)))
            if got or left <= FETCH_SLICE:
                break
            time.sleep(0)
        generation = self._consume_generation
        out = []
        for m in got:
            delivery = self._delivery(m, generation)
            if delivery is not None:
                out.append(delivery)
        return out

    def _notice_close(self) -> None:
        """Read what RabbitMQ sent, if anything, before an ack: a ``connection.close``
        (``rabbitmqctl close_connection``, a restart) means the messages fetched on it
        are RabbitMQ's again and being given to others, and must not run here; an ack
        alone reads nothing back, so it would go on running them. A readiness check
        first, so that the usual ack costs no wait."""
        self._read_waiting(10_000)

    def prefetched(self) -> list[Delivery]:
        if not self.line.lock.acquire(blocking=False):
            return []  # the consumer's thread is fetching: it holds nothing unfetched
        try:
            if self._consume_channel is None or self.line.conn is None:
                return []
            self._read_waiting(10_000)
            generation = self._consume_generation
            held = [self._delivery(m, generation) for m in list(self._buffer)]
        except Exception:
            return []  # the consumer's own next call meets the error and says it
        finally:
            self.line.lock.release()
        return [d for d in held if d is not None]

    def _read_waiting(self, limit: int) -> None:
        """Take in what already waits in the socket (one drain reads one message),
        without waiting for more: drained only while the socket has bytes (py-amqp reads
        no more than the frame it parses, so nothing waits in its own buffer)."""
        conn = self.line.conn
        sock = getattr(getattr(conn, "transport", None), "sock", None)
        if sock is None:
            return
        while len(self._buffer) < limit and select.select([sock], [], [], 0)[0]:
            try:
                conn.drain_events(timeout=QUICK_READ)
            except TimeoutError:
                return

    holds_prefetched = True

    def release_prefetched(self) -> int:
        # RabbitMQ pushes up to the QoS while the consumer's thread runs a task; they
        # wait unread in the socket. Read them and give them back, unless the
        # consumer's thread holds the connection (it is not running a task then).
        if not self.line.lock.acquire(blocking=False):
            return 0
        try:
            if self._consume_channel is None or self.line.conn is None:
                return 0
            self._read_waiting(10_000)
            if not self._buffer:
                return 0
            generation = self._consume_generation
            held = [self._delivery(m, generation) for m in take_all(self._buffer)]
        except Exception:
            self._connection_lost()
            raise
        finally:
            self.line.lock.release()
        self.requeue([d for d in held if d is not None])
        return len(held)


    def _delivery(self, m: Any, generation: int) -> Delivery | None:
        info = m.delivery_info
        props = m.properties
        headers = _plain(props.get("application_headers") or {})
        queue = info.get("routing_key") or ""
        consumer_queue = self._queue_of_consumer(info.get("consumer_tag"))
        if consumer_queue:
            queue = consumer_queue
        redelivered = bool(info.get("redelivered"))
        properties: dict[str, Any] = {
            "correlation_id": props.get("correlation_id"),
            "reply_to": props.get("reply_to") or "",
            "delivery_mode": props.get("delivery_mode") or 2,
            "priority": props.get("priority") or 0,
            "delivery_info": {"exchange": info.get("exchange") or "",
                              "routing_key": queue, "priority": props.get("priority") or 0,
                              "redelivered": redelivered},
            "delivery_tag": str(info.get("delivery_tag")),
        }
        if props.get("expiration"):
            properties["expiration"] = props["expiration"]
        body = m.body if isinstance(m.body, bytes) else str(m.body).encode("utf-8")
        message = messages.Message(headers, properties, body, props.get("content_type") or "",
                                   props.get("content_encoding") or "")
        return Delivery((generation, info.get("delivery_tag"), m, redelivered, headers),
                        queue, messages.encode_envelope(message), message)

    def _queue_of_consumer(self, tag: Any) -> str | None:
        # a message published to another exchange has that exchange's routing key:
        # the queue it came from is the one its consumer tag consumes
        return self._consumer_queues.get(tag) if tag is not None else None

    def _mine(self, delivery: Delivery) -> bool:
        return (isinstance(delivery.tag, tuple)
                and delivery.tag[0] == self._consume_generation
                and self._consume_channel is not None)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        def run() -> None:
            self._notice_close()
            for d in deliveries:
                if self._mine(d):
                    self._consume_channel.basic_ack(d.tag[1])
        if deliveries:
            self._call("acking", run)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give back unstarted messages as fresh copies (confirmed, then the originals
        acked), at the end of their queues: a ``basic.reject`` would flag them
        redelivered, and a redelivered acks_late message counts as a loss of its
        consumer (see ``losses``) though these never ran."""
        def run() -> None:
            mine = [d for d in deliveries if self._mine(d)]
            if not mine:
                return
            self._wait_unblocked(f"giving back {len(mine)} message(s)")
            for d in mine:
                self._send(d.queue, d.payload, d.tag[2].properties.get("priority") or 0, None,
                           copy=True)
            self._wait_confirms(f"giving back {len(mine)} message(s)")
            for d in mine:
                self._consume_channel.basic_ack(d.tag[1])
        if deliveries:
            self._call("giving messages back", run)

    def _move(self, delivery: Delivery, what: str, send: Callable[[], None]) -> None:
        """Publish a copy (confirmed), then ack the original: a loss in between leaves
        the original with RabbitMQ, never neither."""
        def run() -> None:
            if not self._mine(delivery):
                return  # RabbitMQ has it back already: moving it would double it
            self._wait_unblocked(what)
            send()
            self._wait_confirms(what)
            self._consume_channel.basic_ack(delivery.tag[1])
        self._call(what, run)

    def defer(self, delivery: Delivery, eta: float) -> None:
        priority = delivery.tag[2].properties.get("priority") or 0 \
            if isinstance(delivery.tag, tuple) else 0
        self._move(delivery, f"deferring a message of {delivery.queue!r}",
                   lambda: self._send(delivery.queue, delivery.payload, priority,
                                      max(eta, time.time() + 1), copy=True))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        extra = {REASON_HEADER: reason, "x-celeriac-queue": delivery.queue,
                 "x-celeriac-time": time.time()}
        self._move(delivery, f"setting aside a message of {delivery.queue!r}",
                   lambda: self._send(self.dead_letter_queue, delivery.payload, 0, None,
                                      extra, copy=True))

    # A classic queue keeps no count of a message's returns. Republishing the message
    # with a count would send it to the end of its queue, behind everything queued
    # since (a killed worker's task would wait for the whole backlog), so each loss is
    # a small marker in a queue of its own instead, read when a message comes back.
    def losses(self, delivery: Delivery) -> int:
        tag = delivery.tag
        if not isinstance(tag, tuple) or not tag[3]:
            return 0
        headers = tag[4]
        count = headers.get("x-delivery-count")  # a quorum queue counts its returns
        if isinstance(count, int) and count > 0:
            return count
        task_id = headers.get("id") or tag[2].properties.get("correlation_id")
        if not task_id:
            return 1
        return self._loss_markers().get(str(task_id), 0) + 1

    def count_loss(self, delivery: Delivery, losses: int) -> bool:
        headers = delivery.tag[4]
        if isinstance(headers.get("x-delivery-count"), int):
            return False
        task_id = headers.get("id") or delivery.tag[2].properties.get("correlation_id")
        if not task_id:
            return False

        def run() -> None:
            ch = self._publisher()
            self._declare_losses(ch)
            ch.basic_publish(self.line.amqp.Message(
                json.dumps({"id": str(task_id)}), content_type="application/json",
                delivery_mode=2, expiration=str(LOSS_MARKER_TTL * 1000)),
                exchange="", routing_key=LOSSES_QUEUE, mandatory=True)
            self._published += 1
            self._wait_confirms("a loss marker")
            self._losses_cache = None
        self._call("counting a lost delivery", run)
        return False

    def _declare_losses(self, ch: Any) -> None:
        if LOSSES_QUEUE not in self._declared:
            ch.queue_declare(LOSSES_QUEUE, durable=True, auto_delete=False)
            self._declared.add(LOSSES_QUEUE)

    def _loss_markers(self) -> dict[str, int]:
        """{task id: losses counted}, read without taking them, kept for a second (a
        worker's loss brings its whole prefetch back at once)."""
        cache = self._losses_cache
        now = time.monotonic()
        if cache is not None and now - cache[0] < 1.0:
            return cache[1]

        def run() -> dict[str, int]:
            ch = self._publisher()
            self._declare_losses(ch)
            reader = self.line.connection().channel()
            counts: dict[str, int] = {}
            try:
                while True:
                    m = reader.basic_get(LOSSES_QUEUE, no_ack=False)
                    if m is None:
                        break
                    try:
                        task_id = str(json.loads(m.body)["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    counts[task_id] = counts.get(task_id, 0) + 1
            finally:
                reader.close()  # unacked: the markers stay
            return counts

        counts = self._call("reading loss markers", run)
        self._losses_cache = (now, counts)
        return counts  # type: ignore[no-any-return]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def run() -> list[DeadLetter]:
            conn = self.line.connection()
            ch = conn.channel()
            found: list[DeadLetter] = []
            try:
                ch.queue_declare(self.dead_letter_queue, durable=True, auto_delete=False)
                for _ in range(limit):
                    m = ch.basic_get(self.dead_letter_queue, no_ack=False)
                    if m is None:
                        break
                    found.append(_dead_letter_of(m))
            finally:
                ch.close()  # unacked: every one stays where it was
            found.reverse()
            return found
        return self._call("reading dead letters", run)  # type: ignore[no-any-return]

    def requeue_dead_letter(self, id: str) -> bool:
        return self._take_dead(id, requeue=True)

    def delete_dead_letter(self, id: str) -> bool:
        return self._take_dead(id, requeue=False)

    def _take_dead(self, id: str, requeue: bool) -> bool:
        """Read the dead-letter queue without taking until ``id`` comes; ack it (after a
        confirmed copy went to its queue, when ``requeue``). The others return when the
        reading channel closes; a dead letter another reader holds meanwhile is not
        seen, so two requeues of one never both find it."""
        def run() -> bool:
            reader = self.line.connection().channel()
            try:
                reader.queue_declare(self.dead_letter_queue, durable=True, auto_delete=False)
                while True:
                    m = reader.basic_get(self.dead_letter_queue, no_ack=False)
                    if m is None:
                        return False
                    dead = _dead_letter_of(m)
                    if dead.id != id:
                        continue
                    if requeue:
                        if not dead.queue:
                            raise ValueError(f"dead letter {id} names no queue: it can only "
                                             "be deleted")
                        what = f"a dead letter back to {dead.queue!r}"
                        self._wait_unblocked(what)
                        self._send(dead.queue, dead.payload, 0, None, copy=True)
                        self._wait_confirms(what)
                    reader.basic_ack(m.delivery_tag)
                    return True
            finally:
                reader.close()
        return bool(self._call("taking a dead letter", run))

    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        """Counts from a passive declare: ready messages and consumers; RabbitMQ tells
        neither priorities, nor unacked ones, nor a queue's share of the delay levels."""
        def run() -> list[QueueCounts]:
            out: list[QueueCounts] = []
            ch = None
            try:
                for queue in queues:
                    if ch is None:
                        ch = self.line.connection().channel()
                    try:
                        _, count, consumers = ch.queue_declare(queue, passive=True)
                    except self.line.amqp.exceptions.NotFound:
                        ch = None  # RabbitMQ closed the channel with its refusal
                        out.append(QueueCounts(queue, 0, consumers=0))
                        continue
                    out.append(QueueCounts(queue, int(count), consumers=int(consumers)))
            finally:
                if ch is not None:
                    ch.close()
            return out
        return self._call("counting queues", run)  # type: ignore[no-any-return]

    def purge(self, queue: str) -> int:
        def run() -> int:
            ch = self._publisher()
            try:
                return int(ch.queue_purge(queue) or 0)
            except self.line.amqp.exceptions.NotFound:
                self._channel_lost()
                return 0
        return self._call(f"purging {queue!r}", run)  # type: ignore[no-any-return]

    def size(self, queue: str) -> int:
        def run() -> int:
            self._declare_queue(queue)
            _, count, _ = self._publisher().queue_declare(queue, passive=True)
            return int(count)
        return self._call(f"declaring {queue!r}", run)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.line.close()
        self._publish_channel = self._notice_channel = self._consume_channel = None

    # -- revocations ----------------------------------------------------------------------
    # Kept in a durable queue as messages that expire with the revocation; read without
    # taking them (a channel's unacked messages return when it closes), at most once a
    # second, and only when the queue's count changed or 30 s passed.
    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        def run() -> None:
            ch = self._publisher()
            self._declare_revoked(ch)
            body = json.dumps({"ids": list(task_ids), "terminate": terminate,
                               "until": time.time() + expires})
            ch.basic_publish(self.line.amqp.Message(
                body, content_type="application/json", delivery_mode=2,
                expiration=str(int(expires * 1000))), exchange="", routing_key=REVOKED_QUEUE,
                mandatory=True)
            self._published += 1
            self._wait_confirms("a revocation")
            self._revoked_cache = None
        self._call("keeping revocations", run)

    def _declare_revoked(self, ch: Any) -> None:
        if REVOKED_QUEUE not in self._declared:
            ch.queue_declare(REVOKED_QUEUE, durable=True, auto_delete=False)
            self._declared.add(REVOKED_QUEUE)

    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        now = time.monotonic()
        cache = self._revoked_cache
        if cache is None or now - cache[0] >= 1.0:
            cache = self._call("reading revocations", lambda: self._read_revoked(cache, now))
            self._revoked_cache = cache
        version = cache[4]
        return version, (None if since == version else dict(cache[3]))

    def _read_revoked(self, cache: Any, now: float) -> tuple[float, float, int, dict[str, Any], int]:
        ch = self._publisher()
        self._declare_revoked(ch)
        _, count, _ = ch.queue_declare(REVOKED_QUEUE, passive=True)
        if cache is not None and count == cache[2] and now - cache[1] < 30:
            return now, cache[1], count, cache[3], cache[4]
        reader = self.line.connection().channel()
        found: dict[str, str | None] = {}
        try:
            for _ in range(int(count)):
                m = reader.basic_get(REVOKED_QUEUE, no_ack=False)
                if m is None:
                    break
                try:
                    entry = json.loads(m.body)
                except ValueError:
                    continue
                if float(entry.get("until") or 0) < time.time():
                    continue
                for task_id in entry.get("ids") or ():
                    found[str(task_id)] = entry.get("terminate")
        finally:
            reader.close()  # unacked: every one stays in the queue
        version = 0 if cache is None else cache[4] + (found != cache[3])
        return now, now, int(count), found, version

    # -- fanout ---------------------------------------------------------------------------
    def _notices(self) -> Any:
        if self._notice_channel is None or self.line.conn is None:
            self._notice_channel = self.line.connection().channel()
        return self._notice_channel

    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        self._send_notices(exchange, notices, persistent=exchange.endswith("pidbox"))

    def reply(self, exchange: str, notices: Sequence[Notice]) -> None:
        self._send_notices(exchange, notices, persistent=False)

    def _send_notices(self, exchange: str, notices: Sequence[Notice], persistent: bool) -> None:
        def run() -> None:
            ch = self._notices()
            kind, durable = _exchange_kind(exchange)
            self._declare_exchange(ch, exchange, kind, durable)
            for n in notices:
                ch.basic_publish(self.line.amqp.Message(
                    n.body, content_type="application/json", content_encoding="utf-8",
                    delivery_mode=2 if persistent else 1, priority=0,
                    application_headers=dict(n.headers)), exchange=exchange,
                    routing_key=n.routing_key)
        if notices:
            self._call(f"sending to {exchange!r}", run)

    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        # As Celery declares them: event_queue_* and control_queue_* settings
        if exchange.endswith("pidbox"):
            conf = self.topology.control_queue
            name = f"celeriac.{uuid.uuid4().hex[:12]}.{exchange}"
            ttl, expires = conf.get("ttl", 300.0), conf.get("expires", 10.0)
        else:
            conf = self.topology.event_queue
            name = f"{conf.get('prefix') or 'celeryev'}.{uuid.uuid4()}"
            ttl, expires = conf.get("ttl", 5.0), conf.get("expires", 60.0)
        args = {}
        if ttl:
            args["x-message-ttl"] = int(float(ttl) * 1000)
        if expires:
            args["x-expires"] = int(float(expires) * 1000)
        return AMQPListener(self, exchange, name, list(patterns), args)

    def replies(self, exchange: str, routing_key: str) -> Listener:
        return AMQPListener(self, exchange, f"{routing_key}.{exchange}", [routing_key],
                            {"x-expires": 60000})


def _dead_letter_of(m: Any) -> DeadLetter:
    """A message of the dead-letter queue as a ``DeadLetter``; its id is a digest of the
    message as stored (RabbitMQ gives a queued message no id of its own)."""
    h = _plain(m.properties.get("application_headers") or {})
    body = m.body if isinstance(m.body, bytes) else str(m.body).encode()
    payload = messages.encode_envelope(messages.Message(
        {k: v for k, v in h.items() if not k.startswith("x-celeriac-")},
        {"correlation_id": m.properties.get("correlation_id")}, body,
        m.properties.get("content_type") or "",
        m.properties.get("content_encoding") or ""))
    digest = hashlib.sha1(json.dumps(h, sort_keys=True).encode() + b"\n" + body)
    return DeadLetter(h.get("x-celeriac-queue") or "", h.get(REASON_HEADER) or "", payload,
                      float(h.get("x-celeriac-time") or 0), digest.hexdigest())


class AMQPListener(Listener):
    """A queue of its own bound to an exchange, on a connection of its own (it is read
    from another thread than the broker's)."""

    def __init__(self, broker: AMQPBroker, exchange: str, queue: str, keys: list[str],
                 arguments: dict[str, Any]) -> None:
        self.broker = broker
        self.exchange = exchange
        self.queue = queue
        self.keys = keys
        self.arguments = arguments
        self.line = Line(broker.url, broker.options, "listening on RabbitMQ", heartbeat=60)
        self._got: deque[Notice] = deque()
        self._channel: Any = None
        self._subscribe()  # now, so that nothing sent after this call is missed

    def _subscribe(self) -> None:
        with self.line.lock:
            ch = self.line.connection().channel()
            kind, durable = _exchange_kind(self.exchange)
            ch.exchange_declare(self.exchange, kind, durable=durable, auto_delete=False)
            ch.queue_declare(self.queue, durable=False, exclusive=True, auto_delete=True,
                             arguments=self.arguments)
            for key in self.keys:
                ch.queue_bind(self.queue, self.exchange, "" if kind == "fanout" else key)
            ch.basic_consume(self.queue, callback=self._on_message, no_ack=True)
            self._channel = ch

    def _on_message(self, m: Any) -> None:
        body = m.body if isinstance(m.body, str) else bytes(m.body).decode("utf-8", "replace")
        headers = _plain(m.properties.get("application_headers") or {})
        self._got.append(Notice(m.delivery_info.get("routing_key") or "", body, headers))

    def get(self, timeout: float) -> list[Notice]:
        if not self._got:
            try:
                with self.line.lock:
                    if self._channel is None:
                        self._subscribe()
                    conn = self.line.conn
                    deadline = time.monotonic() + timeout
                    while not self._got:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        try:
                            conn.drain_events(timeout=left)
                        except TimeoutError:
                            break
            except Exception as exc:
                logger.debug("listener on %r lost its connection: %r", self.exchange, exc)
                self.line.lost()
                self._channel = None
                time.sleep(min(timeout, 0.5))
        return take_all(self._got)

    def close(self) -> None:
        self.line.close()
