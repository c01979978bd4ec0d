"""The contract every broker transport implements.

A transport moves opaque envelopes (kombu's JSON text) between named queues. Reliability
lives here: a fetched message stays owned by its consumer until ``ack``; a consumer whose
heartbeat stops has its messages handed back to their queues by whoever calls
``heartbeat`` next.
"""

from __future__ import annotations

import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar


@dataclass(slots=True)
class Delivery:
    """A message fetched by one consumer and not yet acked.

    Attributes:
        tag: the transport's handle for ack/requeue.
        queue: the queue (or priority sub-list) the message came from.
        payload: the envelope text.
        message: the message already decoded, when the transport received it in parts
            (RabbitMQ's headers, properties and body), so that it is not parsed again.
    """

    tag: Any
    queue: str
    payload: str
    message: Any = None


@dataclass(slots=True)
class Outgoing:
    """A message to publish: what ``Broker.publish`` takes, as one value."""

    queue: str
    payload: str
    priority: int = 0
    eta: float | None = None


@dataclass(slots=True)
class DeadLetter:
    """A message set aside because it could not be run."""

    queue: str
    reason: str
    payload: str
    time: float
    #: the transport's handle for ``requeue_dead_letter``/``delete_dead_letter`` (a row
    #: id, or a digest of the stored record where the broker keeps no id)
    id: str = ""


@dataclass(slots=True)
class QueueCounts:
    """What a broker can tell of one queue without taking anything from it.

    Attributes:
        queue: the queue's name.
        ready: messages waiting that a consumer may take now (every priority).
        by_priority: ``ready`` per priority where the broker keeps them apart (Redis:
            per priority step; SQLite and SQL: per priority value), else None.
        delayed: eta/countdown messages the broker holds for the queue until due, or
            None where it cannot tell them apart per queue.
        unacked: messages fetched by a consumer and not acked yet, or None.
        consumers: consumers attached to the queue, where the broker knows (RabbitMQ).
    """

    queue: str
    ready: int
    by_priority: dict[int, int] | None = None
    delayed: int | None = None
    unacked: int | None = None
    consumers: int | None = None


def counts_by_queue(queues: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[QueueCounts]:
    """``QueueCounts`` per queue from rows of (queue, priority, ready, delayed, unacked),
    as the SQL transports count them with one GROUP BY."""
    ready: dict[str, dict[int, int]] = {name: {} for name in queues}
    delayed = dict.fromkeys(queues, 0)
    unacked = dict.fromkeys(queues, 0)
    for queue, priority, n_ready, n_delayed, n_unacked in rows:
        if n_ready:
            ready[queue][int(priority)] = int(n_ready)
        delayed[queue] += int(n_delayed or 0)
        unacked[queue] += int(n_unacked or 0)
    return [QueueCounts(name, sum(ready[name].values()), ready[name], delayed[name],
                        unacked[name]) for name in queues]


@dataclass(slots=True)
class Released:
    """What handing back messages of a consumer (or of several) did.

    Attributes:
        returned: messages put back on their queues.
        poisoned: messages set aside instead, because their holder was lost too often
            (their tasks should be marked failed: the transport knows no result store).
    """

    returned: int = 0
    poisoned: list[DeadLetter] = field(default_factory=list)
    #: envelopes of early-acked tasks that were running when their consumer was lost:
    #: they are not run again (they were acked), but their callers must be told
    interrupted: list[str] = field(default_factory=list)

    def add(self, other: Released) -> Released:
        self.returned += other.returned
        self.poisoned.extend(other.poisoned)
        self.interrupted.extend(other.interrupted)
        return self


def poison_reason(losses: int) -> str:
    return (f"its worker was lost {losses} times while holding it; set aside as a "
            "probable poison message (see broker_max_redeliveries)")


def nothing_to_wait_for() -> None:
    """What ``ack_started`` returns when the broker's reply was read already."""
    return None


def take_all(items: deque[Any]) -> list[Any]:
    """Empty ``items`` (which other threads append to) into a list."""
    taken = []
    while True:
        try:
            taken.append(items.popleft())
        except IndexError:
            return taken


def new_consumer_id() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class Broker(ABC):
    """A broker connection, the core every transport has: publish, fetch, ack, requeue,
    purge. One per process and thread family; fork-safe by re-creation.

    What only some transports can do is a capability, one small class each below
    (``DelayedDelivery``, ``Liveness``, ``DeadLetters``, ``RevocationStore``,
    ``RateReservations``, ``Fanout``, ``QueueStats``); a transport declares it by
    inheriting it, and the worker asks with ``isinstance`` (``capability()``) rather
    than assuming.

    Args:
        url: the broker URL.
        options: ``broker_transport_options`` plus celeriac settings the transport reads
            (``dead_letter_queue``, ``lost_timeout``).
    """

    #: whether several processes can share this broker (memory:// cannot)
    shared_between_processes = True

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = options or {}
        self.consumer_id = new_consumer_id()
        self.dead_letter_queue: str = self.options.get("dead_letter_queue", "celeriac.dead")
        self.lost_timeout: float = float(self.options.get("lost_timeout", 10.0))
        #: a message whose consumer was lost this many times is dead-lettered
        self.max_redeliveries: int = int(self.options.get("max_redeliveries") or 5)

    @abstractmethod
    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        """Put ``payload`` on ``queue``; with ``eta`` (epoch seconds) hold it until due."""

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish several messages, in order; transports send them in one round trip."""
        for m in messages:
            self.publish(m.queue, m.payload, m.priority, m.eta)

    @abstractmethod
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Take up to ``limit`` due messages for this consumer, waiting up to ``timeout``."""

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove messages for good."""

    def ack_started(self, deliveries: Sequence[Delivery]) -> Callable[[], None]:
        """Early ack: these messages' tasks start now, and are never delivered again.

        Returns a function that waits for the broker's reply: the broker has the ack
        before the task runs, but the task need not wait for it. A transport with
        ``Liveness`` also keeps a note of each until ``finished`` (see there).
        """
        self.ack(deliveries)
        return nothing_to_wait_for

    def finished(self, deliveries: Sequence[Delivery]) -> None:
        """The tasks of these early-acked messages ended (see ``Liveness``)."""

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give messages back to the front of their queues (unstarted work).

        Also a message whose ``ack_started`` failed on the way: the broker may have
        taken it as started, but its task never ran.
        """

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every waiting message of ``queue``; returns how many."""

    @abstractmethod
    def size(self, queue: str) -> int:
        """How many messages wait on ``queue`` (due or not)."""

    #: whether messages can be delivered to this consumer without a ``fetch`` (a push
    #: transport's prefetch, RabbitMQ's): ``release_prefetched`` then gives them back
    holds_prefetched = False

    def release_prefetched(self) -> int:
        """Give back what was delivered to this consumer and not fetched yet; called
        from another thread while a task runs. Returns how many."""
        return 0

    def prefetched(self) -> list[Delivery]:
        """What was delivered to this consumer and not fetched yet (shown by ``inspect
        reserved``), left where it is; called from another thread."""
        return []

    def close(self) -> None:
        """Release connections."""

    def safe_url(self) -> str:
        from ..utils.urls import mask_password

        return mask_password(self.url)


# -- capabilities ------------------------------------------------------------------------
class DelayedDelivery(ABC):
    """The broker holds a message until it is due (eta and countdown tasks), so that no
    worker keeps it in memory."""

    @abstractmethod
    def defer(self, delivery: Delivery, eta: float) -> None:
        """Atomically move a fetched message back into the broker to run at ``eta``."""


class DeadLetters(ABC):
    """Messages that cannot run are set aside with their reason, never dropped."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Atomically move a fetched message to the dead-letter queue with ``reason``."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The messages set aside, newest first."""

    @abstractmethod
    def requeue_dead_letter(self, id: str) -> bool:
        """Atomically put the dead letter ``id`` back on its queue and remove it from the
        dead letters; False when there is no such dead letter (taken meanwhile)."""

    @abstractmethod
    def delete_dead_letter(self, id: str) -> bool:
        """Remove the dead letter ``id`` for good; False when there is none."""


class QueueStats(ABC):
    """Counts of a queue's messages by kind (ready per priority, delayed, unacked), read
    without taking any: what a dashboard shows."""

    @abstractmethod
    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        """One ``QueueCounts`` per name, in order (a queue that does not exist counts 0)."""


class Liveness(ABC):
    """The transport keeps consumers' messages owned until acked, and hands back those
    of a consumer that stopped beating (a broker that does this itself, as RabbitMQ
    does when a connection closes, has no need of it).

    With it, ``ack_started`` also keeps a note of each early-acked message until
    ``finished``, so that whoever finds its consumer dead meanwhile learns which tasks
    died with it (``Released.interrupted``) and can record them as lost, instead of
    their callers waiting forever. ``finished`` sends no round trip of its own: the
    notes go with a later call of the consumer (its next fetch at the latest).
    """

    @abstractmethod
    def heartbeat(self, consumer_ids: Sequence[str] | None = None) -> Released:
        """Mark consumers alive (default: this one); hand back dead consumers' messages.

        A consumer is dead when no beat for it reached the broker for ``lost_timeout``
        seconds, judged on the broker's clock. Silence that everyone shared proves
        nothing: when no beat at all arrived for ``lost_timeout / 2`` (the broker was
        down or unreachable), every consumer's clock starts again instead.

        Of a dead consumer's messages only the oldest, the one it was most likely
        running, counts a loss towards ``max_redeliveries``; the others never ran.

        Args:
            consumer_ids: the ids to mark alive; a prefork parent beats for its
                children, so a child busy in C code without the GIL stays alive.
        """

    @abstractmethod
    def forget_consumer(self, consumer_id: str | None = None, lost: Sequence[Any] = (),
                        drop: Sequence[Any] = ()) -> Released:
        """Hand back every unacked message of ``consumer_id`` (default: self); drop it.

        Args:
            lost: tags of the messages that were running when the consumer died: each
                counts a loss towards ``max_redeliveries``; the others return as they
                were (they never ran).
            drop: tags of messages to remove for good instead (what an ack would have
                done: a task recorded as timed out or terminated).
        """


class Redeliveries(ABC):
    """The broker gives a message again when its consumer is lost, flagged as such
    (RabbitMQ), instead of the worker reclaiming it (``Liveness``): the consumer counts
    those losses, to set aside a message that keeps killing its workers."""

    @abstractmethod
    def losses(self, delivery: Delivery) -> int:
        """0 for a message delivered for the first time; else which loss of its
        consumer this delivery follows (1 for the first)."""

    @abstractmethod
    def count_loss(self, delivery: Delivery, losses: int) -> bool:
        """Keep ``losses`` with the message where the broker does not count by itself.

        Returns True when the message was put back with its new count (the caller
        must not run it: it comes again), False when it may run now.
        """


class RevocationStore(ABC):
    """Revocations kept in the broker: they survive worker restarts and reach workers
    started later."""

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        """Record revocations (kept ``expires`` seconds) that every worker will honour.

        Args:
            terminate: a signal name to stop the task with if it is running, or None.
        """

    @abstractmethod
    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        """``(version, {task id: terminate signal or None})``; the mapping is None when
        the version is still ``since``, so an unchanged set costs one small read."""


class RateReservations(ABC):
    """Start times of globally rate-limited tasks, handed out by the broker."""

    @abstractmethod
    def reserve_rate(self, key: str, interval: float) -> float:
        """Reserve the next start time of a globally rate-limited task.

        Start times handed out for ``key`` are at least ``interval`` seconds apart.
        Returns the reserved time (epoch seconds; now or later).
        """


@dataclass(slots=True)
class Notice:
    """A message for whoever listens now: an event, a remote-control request or reply.

    Unlike a task message it is never stored for later: a listener that is not there
    when it is sent does not get it (kombu's fanout and topic exchanges, Redis pub/sub).

    Attributes:
        routing_key: the event's type with dots (``task.multi``, ``worker.heartbeat``),
            empty for a broadcast to every listener, or a reply queue's key.
        body: the JSON text.
        headers: kombu's message headers (``hostname`` of an event's sender; ``clock``,
            ``expires`` of a control request; ``ticket`` of a reply).
    """

    routing_key: str
    body: str
    headers: dict[str, Any] = field(default_factory=dict)


class Listener(ABC):
    """What ``Fanout.listen`` and ``Fanout.replies`` return: one subscription."""

    #: times this listener lost its connection and listened again (what was sent
    #: meanwhile was missed): a monitor shows it, since a fanout cannot replay
    reconnects: int = 0

    @abstractmethod
    def get(self, timeout: float) -> list[Notice]:
        """The notices that arrived, waiting up to ``timeout`` seconds for the first.

        A lost connection is re-made here; what was sent meanwhile is missed, as with
        kombu (never an error for the caller, who polls again).
        """

    @abstractmethod
    def close(self) -> None:
        """Stop listening and remove what the subscription put in the broker."""


class Fanout(ABC):
    """Exchanges that copy a message to every current listener, and direct replies:
    what Celery's events (topic exchange ``celeryev``) and remote control (fanout
    exchange ``celery.pidbox``, replies through ``reply.celery.pidbox``) travel on.

    Binding keys are AMQP topic patterns: words split by dots, ``*`` one word, ``#``
    any number of words (``task.#``, ``worker.*``, ``#``).
    """

    @abstractmethod
    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        """Send ``notices`` to every listener of ``exchange`` bound to their keys."""

    @abstractmethod
    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        """Subscribe to what ``exchange`` carries from now on, for these patterns."""

    @abstractmethod
    def reply(self, exchange: str, notices: Sequence[Notice]) -> None:
        """Send each notice to the reply queue bound to ``exchange`` with its
        routing key (nobody bound: it is dropped, as a direct exchange drops it)."""

    @abstractmethod
    def replies(self, exchange: str, routing_key: str) -> Listener:
        """A reply queue bound to ``exchange`` with ``routing_key``, made before the
        request it answers is sent, so that no reply can come before it."""


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more; words split by dots."""
    if pattern in ("#", key):
        return True
    return _match(pattern.split("."), key.split(".") if key else [])


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


C = TypeVar("C")


def capability(broker: Broker, kind: type[C]) -> C | None:
    """``broker`` as a ``kind`` if its transport has that capability, else None."""
    return broker if isinstance(broker, kind) else None


def require(broker: Broker, kind: type[C], needed_for: str) -> C:
    """``broker`` as a ``kind``.

    Raises:
        ImproperlyConfigured: its transport lacks the capability ``needed_for`` needs.
    """
    if isinstance(broker, kind):
        return broker
    from ..exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"the broker {broker.safe_url()} cannot {needed_for}: its transport "
        f"({type(broker).__name__}) has no {kind.__name__}")


class FullBroker(Broker, DelayedDelivery, DeadLetters, Liveness, RevocationStore,
                 RateReservations, Fanout, QueueStats, ABC):
    """A transport with every capability: memory://, sqlite:// and redis:// are."""
