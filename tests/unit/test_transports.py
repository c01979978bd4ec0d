"""The Broker contract (celeriac/brokers/base.py), on the memory and SQLite transports.

Two broker instances on the same URL play two worker processes: each has its own
consumer id, and the store is shared.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import beat_through

from celeriac import backends, brokers
from celeriac.brokers import Broker, Delivery
from celeriac.brokers.memory import MemoryBroker
from celeriac.brokers.sqlite import SQLiteBroker
from celeriac.exceptions import UnknownTransport

Q = "celery"
BrokerFactory = Callable[..., Broker]


@pytest.fixture(params=["memory", "sqlite"])
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerFactory]:
    url = (f"memory://unit-{uuid.uuid4()}" if request.param == "memory"
           else f"sqlite:///{tmp_path}/b.db")
    opened: list[Broker] = []

    def make(options: dict[str, Any] | None = None) -> Broker:
        broker = brokers.connect(url, options)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        broker.close()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> Broker:
    return make_broker()


def publish_all(broker: Broker, payloads: list[str], queue: str = Q) -> None:
    for p in payloads:
        broker.publish(queue, p)


def payloads_of(deliveries: list[Delivery]) -> list[str]:
    return [d.payload for d in deliveries]


def drain(broker: Broker, queues: list[str] | None = None, limit: int = 100) -> list[str]:
    return payloads_of(broker.fetch(queues or [Q], limit, timeout=0))


def test_connect_picks_the_transport_by_scheme(tmp_path: Path) -> None:
    assert isinstance(brokers.connect(f"memory://unit-{uuid.uuid4()}"), MemoryBroker)
    sqlite = brokers.connect(f"sqlite:///{tmp_path}/x.db")
    try:
        assert isinstance(sqlite, SQLiteBroker)
    finally:
        sqlite.close()


def test_fifo(broker: Broker) -> None:
    msgs = [f'{{"n": {i}}}' for i in range(10)]
    publish_all(broker, msgs)
    got = broker.fetch([Q], 100, timeout=0)
    assert payloads_of(got) == msgs
    assert all(d.queue == Q for d in got)


def test_payload_comes_back_unchanged(broker: Broker) -> None:
    payload = '{"body": "W10=", "headers": {"ü": "\\u00e9 \u2603"}, "x": "\\n"}'
    broker.publish(Q, payload)
    assert drain(broker) == [payload]


def test_fetch_limit(broker: Broker) -> None:
    publish_all(broker, ["a", "b", "c", "d", "e"])
    assert drain(broker, limit=2) == ["a", "b"]
    assert drain(broker, limit=2) == ["c", "d"]
    assert drain(broker, limit=2) == ["e"]
    assert drain(broker, limit=2) == []


def test_fetch_reads_only_the_queues_asked_for(broker: Broker) -> None:
    broker.publish("one", "1")
    broker.publish("two", "2")
    broker.publish("three", "3")
    assert sorted(drain(broker, ["one", "two"])) == ["1", "2"]
    assert drain(broker, ["three"]) == ["3"]


def test_fetch_on_an_empty_queue_waits_at_most_the_timeout(broker: Broker) -> None:
    started = time.monotonic()
    assert broker.fetch([Q], 10, timeout=0.05) == []
    assert time.monotonic() - started < 5  # returns, does not hang


def test_fetch_wakes_up_for_a_message_published_while_waiting(
        make_broker: BrokerFactory) -> None:
    consumer, producer = make_broker(), make_broker()
    timer = threading.Timer(0.05, producer.publish, (Q, "late"))
    timer.start()
    try:
        assert payloads_of(consumer.fetch([Q], 10, timeout=5)) == ["late"]
    finally:
        timer.cancel()


def test_fetched_message_is_not_fetched_again(broker: Broker) -> None:
    publish_all(broker, ["a", "b"])
    assert drain(broker, limit=1) == ["a"]
    assert drain(broker) == ["b"]
    assert drain(broker) == []


def test_ack_removes_for_good(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    publish_all(broker, ["a", "b"])
    got = broker.fetch([Q], 10, timeout=0)
    broker.ack(got)
    assert broker.forget_consumer().returned == 0  # nothing left to hand back
    assert drain(broker) == []
    assert drain(make_broker()) == []
    assert broker.size(Q) == 0


def test_ack_of_part_of_a_batch(broker: Broker) -> None:
    publish_all(broker, ["a", "b", "c"])
    got = broker.fetch([Q], 10, timeout=0)
    broker.ack(got[1:2])
    assert broker.forget_consumer().returned == 2
    assert drain(broker) == ["a", "c"]


def test_unacked_messages_survive_in_the_broker(make_broker: BrokerFactory) -> None:
    first = make_broker()
    publish_all(first, ["a", "b"])
    assert drain(first) == ["a", "b"]
    # A second consumer must not see them while the first owns them...
    second = make_broker()
    assert drain(second) == []
    # ...but they come back when the first lets go.
    assert first.forget_consumer().returned == 2
    assert drain(second) == ["a", "b"]


def test_requeue_returns_to_the_front_in_order(broker: Broker) -> None:
    publish_all(broker, ["a", "b", "c", "d"])
    got = broker.fetch([Q], 2, timeout=0)
    assert payloads_of(got) == ["a", "b"]
    broker.publish(Q, "e")
    broker.requeue(got)
    assert drain(broker) == ["a", "b", "c", "d", "e"]


def test_requeue_of_the_tail_of_a_batch(broker: Broker) -> None:
    # What the worker does on shutdown: give back the unstarted rest of a batch.
    publish_all(broker, ["a", "b", "c", "d"])
    got = broker.fetch([Q], 4, timeout=0)
    broker.ack(got[:1])
    broker.requeue(got[1:])
    assert drain(broker) == ["b", "c", "d"]


def test_defer_holds_a_message_until_its_eta(broker: Broker) -> None:
    broker.publish(Q, "later")
    (delivery,) = broker.fetch([Q], 1, timeout=0)
    eta = time.time() + 0.3
    broker.defer(delivery, eta)
    assert drain(broker) == []
    assert broker.size(Q) == 1  # it waits in the broker, not in a worker
    assert broker.forget_consumer().returned == 0  # no longer owned by the consumer
    got = broker.fetch([Q], 1, timeout=5)
    assert payloads_of(got) == ["later"]
    assert time.time() >= eta - 0.01


def test_deferred_message_does_not_block_others(broker: Broker) -> None:
    publish_all(broker, ["slow", "fast"])
    deferred = broker.fetch([Q], 1, timeout=0)[0]
    broker.defer(deferred, time.time() + 60)
    assert drain(broker) == ["fast"]


def test_publish_with_a_future_eta(broker: Broker) -> None:
    eta = time.time() + 0.3
    broker.publish(Q, "eta", eta=eta)
    broker.publish(Q, "now")
    assert drain(broker) == ["now"]
    assert payloads_of(broker.fetch([Q], 1, timeout=5)) == ["eta"]
    assert time.time() >= eta - 0.01


def test_publish_many_keeps_order_priorities_and_etas(broker: Broker) -> None:
    from celeriac.brokers import Outgoing

    broker.publish_many([Outgoing(Q, "a"), Outgoing(Q, "b"), Outgoing("other", "c"),
                         Outgoing(Q, "later", eta=time.time() + 3600)])
    assert drain(broker, [Q, "other"]) == ["a", "b", "c"]
    assert broker.size(Q) == 1  # the one with an eta waits


def test_publish_with_a_past_eta_is_due_now(broker: Broker) -> None:
    broker.publish(Q, "overdue", eta=time.time() - 10)
    assert drain(broker) == ["overdue"]


def test_dead_letter_keeps_reason_and_payload(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    publish_all(broker, ['{"bad": 1}', '{"bad": 2}', "ok"])
    first, second, ok = broker.fetch([Q], 3, timeout=0)
    before = time.time()
    broker.dead_letter(first, "refused content: application/x-python-serialize")
    broker.dead_letter(second, "unregistered task 'x'")
    letters = make_broker().dead_letters()  # visible to any consumer
    assert [(d.queue, d.reason, d.payload) for d in letters] == [
        (Q, "unregistered task 'x'", '{"bad": 2}'),  # newest first
        (Q, "refused content: application/x-python-serialize", '{"bad": 1}'),
    ]
    assert all(d.time >= before - 1 for d in letters)
    assert [d.payload for d in broker.dead_letters(limit=1)] == ['{"bad": 2}']
    # set aside, not requeued and not lost
    assert broker.forget_consumer().returned == 1  # only "ok" was still owned
    assert drain(broker) == ["ok"]


def test_two_consumers_never_fetch_the_same_message(make_broker: BrokerFactory) -> None:
    producer = make_broker()
    msgs = [f"m{i}" for i in range(200)]
    publish_all(producer, msgs)
    consumers = [make_broker(), make_broker()]
    got: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def consume(index: int) -> None:
        try:
            while True:
                batch = consumers[index].fetch([Q], 7, timeout=0)
                if not batch:
                    return
                got[index].extend(payloads_of(batch))
                consumers[index].ack(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(msgs)
    assert len(got[0]) + len(got[1]) == len(msgs)


def test_lost_consumer_messages_are_returned_by_another_consumers_heartbeat(
        make_broker: BrokerFactory) -> None:
    opts = {"lost_timeout": 0.5}
    dying, alive = make_broker(opts), make_broker(opts)
    publish_all(dying, ["a", "b", "c", "d"])
    dying.heartbeat()
    assert drain(dying, limit=3) == ["a", "b", "c"]
    assert alive.heartbeat().returned == 0  # the other consumer is still alive: hands off
    assert drain(alive) == ["d"]
    assert beat_through(alive, 0.9).returned == 3  # `dying` stopped beating
    assert drain(alive) == ["a", "b", "c"]  # back in their original order
    assert alive.heartbeat().returned == 0  # returned once, not twice


def test_a_beating_consumer_keeps_its_messages(make_broker: BrokerFactory) -> None:
    opts = {"lost_timeout": 0.5}
    worker, other = make_broker(opts), make_broker(opts)
    publish_all(worker, ["a"])
    worker.heartbeat()
    assert drain(worker) == ["a"]
    for _ in range(3):
        time.sleep(0.1)
        worker.heartbeat()
        assert other.heartbeat().returned == 0
    assert drain(other) == []


def test_forget_consumer(make_broker: BrokerFactory) -> None:
    a, b = make_broker(), make_broker()
    publish_all(a, ["1", "2", "3"])
    assert drain(a, limit=2) == ["1", "2"]
    assert drain(b, limit=1) == ["3"]
    # another process can forget `a` by id (e.g. `celeriac` noticing it exited)...
    assert b.forget_consumer(a.consumer_id).returned == 2
    assert drain(b) == ["1", "2"]
    # ...and a consumer can forget itself on shutdown
    assert b.forget_consumer().returned == 3
    assert sorted(drain(a)) == ["1", "2", "3"]
    assert a.forget_consumer("no-such-consumer").returned == 0


def test_size_and_purge(broker: Broker) -> None:
    publish_all(broker, ["a", "b", "c"], "q1")
    publish_all(broker, ["x", "y"], "q2")
    broker.publish("q1", "delayed", eta=time.time() + 60)
    assert broker.size("q1") == 4  # due or not
    assert broker.size("q2") == 2
    assert broker.size("empty") == 0
    assert broker.purge("q1") == 4
    assert broker.size("q1") == 0
    assert drain(broker, ["q1"]) == []
    assert broker.size("q2") == 2  # other queues untouched
    assert broker.purge("empty") == 0


def test_purged_delayed_message_never_comes_back(broker: Broker) -> None:
    broker.publish(Q, "delayed", eta=time.time() + 0.1)
    assert broker.purge(Q) == 1
    time.sleep(0.15)
    assert drain(broker) == []
    assert broker.size(Q) == 0


def test_purge_leaves_fetched_messages_to_their_consumer(broker: Broker) -> None:
    publish_all(broker, ["a", "b"])
    assert drain(broker, limit=1) == ["a"]
    assert broker.size(Q) == 1
    assert broker.purge(Q) == 1
    assert broker.forget_consumer().returned == 1  # "a" is still owned and comes back
    assert drain(broker) == ["a"]


def test_sqlite_broker_is_shared_through_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    producer, consumer = brokers.connect(url), brokers.connect(url)
    try:
        producer.publish(Q, "across")
        assert drain(consumer) == ["across"]
        assert (tmp_path / "shared.db").exists()
    finally:
        producer.close()
        consumer.close()


def test_memory_brokers_on_different_urls_are_separate() -> None:
    a = brokers.connect(f"memory://unit-{uuid.uuid4()}")
    b = brokers.connect(f"memory://unit-{uuid.uuid4()}")
    a.publish(Q, "only-a")
    assert drain(b) == []
    assert drain(a) == ["only-a"]


@pytest.mark.parametrize("connect, kind", [(brokers.connect, "broker"),
                                           (backends.connect, "result backend")])
def test_unknown_scheme_lists_the_supported_ones(connect: Callable[[str], Any],
                                                 kind: str) -> None:
    with pytest.raises(UnknownTransport) as info:
        connect("foo://x")
    err = info.value
    text = str(err)
    assert "'foo'" in text and kind in text
    assert "memory" in text and "sqlite" in text and "redis" in text
    assert err.scheme == "foo"
    assert "sqlite" in err.known


def test_a_consumer_declared_lost_cannot_touch_a_message_another_now_owns(
        make_broker: BrokerFactory) -> None:
    # A worker paused longer than lost_timeout (suspended VM, long GC) comes back and
    # settles a message that was meanwhile handed to another worker. It must not delete,
    # defer or dead-letter the other worker's in-flight message: if that worker then
    # died, the task would be lost (ack) or run twice at once (defer).
    opts = {"lost_timeout": 0.5}
    stale, live = make_broker(opts), make_broker(opts)
    publish_all(stale, ["a", "b", "c"])
    stale.heartbeat()
    old = stale.fetch([Q], 3, timeout=0)
    assert beat_through(live, 0.9).returned == 3
    assert drain(live) == ["a", "b", "c"]
    stale.ack(old[:1])
    stale.defer(old[1], time.time())
    stale.dead_letter(old[2], "late verdict")
    assert live.dead_letters() == []
    assert drain(live) == []  # nothing duplicated by the defer
    assert live.forget_consumer().returned == 3  # all three still owned by `live`
    assert drain(live) == ["a", "b", "c"]


def test_message_that_keeps_losing_its_worker_is_dead_lettered(
        make_broker: BrokerFactory) -> None:
    publisher = make_broker({"max_redeliveries": 3})
    publish_all(publisher, ["poison", "fine"])
    for round_ in range(3):
        victim = make_broker({"max_redeliveries": 3})
        got = victim.fetch([Q], 1, timeout=0)
        assert payloads_of(got) == ["poison"]
        # as when its pool process dies running it
        released = victim.forget_consumer(lost=[d.tag for d in got])
    assert [d.payload for d in released.poisoned] == ["poison"]
    assert drain(publisher) == ["fine"]  # the others are unharmed
    (dead,) = publisher.dead_letters()
    assert dead.payload == "poison" and "lost 3 times" in dead.reason
    assert "poison message" in dead.reason


def test_only_the_running_message_counts_a_loss(make_broker: BrokerFactory) -> None:
    # A pool process that dies running a poison task held three more messages behind
    # it: those never ran, and must not be set aside with it.
    publisher = make_broker({"max_redeliveries": 3})
    publish_all(publisher, ["poison", "x", "y", "z"])
    for _ in range(3):
        victim = make_broker({"max_redeliveries": 3})
        got = victim.fetch([Q], 4, timeout=0)
        assert payloads_of(got)[0] == "poison"
        released = victim.forget_consumer(lost=[got[0].tag])
    assert released.returned == 3
    assert [d.payload for d in released.poisoned] == ["poison"]
    assert sorted(drain(publisher)) == ["x", "y", "z"]
    assert [d.payload for d in publisher.dead_letters()] == ["poison"]


def test_a_consumer_found_dead_counts_a_loss_for_its_oldest_message_only(
        make_broker: BrokerFactory) -> None:
    opts = {"lost_timeout": 0.5, "max_redeliveries": 2}
    judge = make_broker(opts)
    publish_all(judge, ["poison", "x"])
    poisoned = []
    for _ in range(2):
        victim = make_broker(opts)
        victim.heartbeat()
        assert drain(victim) == ["poison", "x"]
        poisoned += beat_through(judge, 0.9).poisoned  # the victim is silent
    assert [d.payload for d in poisoned] == ["poison"]
    assert drain(judge) == ["x"]


def test_forget_consumer_drops_what_it_is_told_to(broker: Broker) -> None:
    publish_all(broker, ["timed-out", "waiting"])
    got = broker.fetch([Q], 2, timeout=0)
    released = broker.forget_consumer(drop=[got[0].tag])
    assert released.returned == 1 and not released.poisoned
    assert drain(broker) == ["waiting"]


def test_silence_everyone_shared_is_not_taken_for_death(make_broker: BrokerFactory) -> None:
    # The broker was unreachable (or the machine slept) longer than lost_timeout: no
    # consumer could beat. The first to beat again must not take the others for dead
    # and hand back what they are running: they get a fresh lost_timeout to beat.
    opts = {"lost_timeout": 0.5}
    first, second = make_broker(opts), make_broker(opts)
    publish_all(first, ["running"])
    first.heartbeat()
    second.heartbeat()
    assert drain(first) == ["running"]
    time.sleep(0.8)  # an outage: nobody beats
    assert second.heartbeat().returned == 0
    assert drain(second) == []
    # ...and a consumer that stays silent after the outage is found dead as usual.
    assert beat_through(second, 1.0).returned == 1
    assert drain(second) == ["running"]


def test_an_early_acked_task_of_a_lost_consumer_is_reported_not_redelivered(
        make_broker: BrokerFactory) -> None:
    opts = {"lost_timeout": 0.5}
    lost, judge = make_broker(opts), make_broker(opts)
    publish_all(lost, ["running", "done", "waiting"])
    lost.heartbeat()
    running, done, waiting = lost.fetch([Q], 3, timeout=0)
    lost.ack_started([done])()
    lost.finished([done])
    lost.ack_started([running])()
    assert lost.fetch([Q], 1, timeout=0) == []  # the note of `done` goes with it
    released = beat_through(judge, 0.9)
    assert released.interrupted == ["running"]
    assert released.returned == 1
    assert drain(judge) == ["waiting"]  # the started ones are never delivered again


def test_notes_of_ended_tasks_go_with_the_consumer(broker: Broker) -> None:
    publish_all(broker, ["a", "b"])
    a, b = broker.fetch([Q], 2, timeout=0)
    broker.ack_started([a, b])()
    broker.finished([a])
    released = broker.forget_consumer(drop=[b.tag])
    assert released.interrupted == [] and released.returned == 0


def test_the_worker_asks_a_transport_for_what_it_needs_beyond_the_core() -> None:
    from celeriac.brokers import Broker, DeadLetters, Liveness, capability, require
    from celeriac.exceptions import ImproperlyConfigured
    from celeriac.worker.revocations import Revocations

    class CoreOnly(Broker):
        """A transport with only the core contract (as RabbitMQ's may start out)."""

        def publish(self, queue: str, payload: str, priority: int = 0,
                    eta: float | None = None) -> None: ...
        def fetch(self, queues: Any, limit: int, timeout: float) -> list[Delivery]: return []
        def ack(self, deliveries: Any) -> None: ...
        def requeue(self, deliveries: Any) -> None: ...
        def purge(self, queue: str) -> int: return 0
        def size(self, queue: str) -> int: return 0

    core = CoreOnly("core://")
    assert capability(core, Liveness) is None
    assert Revocations(core).refresh() == {}  # none kept, none to honour
    with pytest.raises(ImproperlyConfigured, match="set aside") as info:
        require(core, DeadLetters, "set aside messages that cannot run")
    assert "DeadLetters" in str(info.value)
    full = brokers.connect(f"memory://unit-{uuid.uuid4()}")
    assert capability(full, Liveness) is full


def test_a_message_whose_early_ack_was_lost_on_the_way_can_be_given_back(
        broker: Broker) -> None:
    # The broker took the early ack, but its reply never came: the consumer cannot know,
    # keeps the task unstarted and gives the message back. It must run, not vanish.
    publish_all(broker, ["acked-unseen"])
    (d,) = broker.fetch([Q], 1, timeout=0)
    broker.ack_started([d])()
    broker.requeue([d])
    assert drain(broker) == ["acked-unseen"]
