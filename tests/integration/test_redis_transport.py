"""The Redis broker and result backend against a real server (db 15, flushed per test)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

import pytest

redis = pytest.importorskip("redis")

from celeriac import states
from celeriac.backends.base import BackendOptions
from celeriac.backends.redis import RedisBackend
from celeriac.brokers.redis import RedisBroker
from celeriac.exceptions import TimeoutError as CeleriacTimeoutError
from celeriac.utils.redis import redis_py_url
from support import beat_through, wait_until

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/15"
SEP = "\x06\x16"


@pytest.fixture
def r():
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError):
        if os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis not reachable on 127.0.0.1:6379")
        pytest.skip("Redis not reachable on 127.0.0.1:6379")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def make_broker(r):
    made = []

    def make(**options):
        b = RedisBroker(URL, options)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def backend(r):
    b = RedisBackend(URL, BackendOptions())
    yield b
    b.close()


def payloads(deliveries):
    return [d.payload for d in deliveries]


# -- broker ------------------------------------------------------------------------

def test_publish_fetch_fifo(broker, r):
    for i in range(5):
        broker.publish("celery", f"m{i}")
    assert r.llen("celery") == 5
    got = broker.fetch(["celery"], 10, 0)
    assert payloads(got) == [f"m{i}" for i in range(5)]
    assert all(d.queue == "celery" for d in got)
    assert broker.fetch(["celery"], 10, 0) == []


def test_publish_many_is_one_pipeline_in_the_same_layout(make_broker, r):
    from celeriac.brokers import Outgoing

    broker = make_broker(delayed_delivery="broker")
    broker.publish_many([Outgoing("celery", "m0"), Outgoing("celery", "p5", priority=5),
                         Outgoing("celery", "m1"),
                         Outgoing("celery", "later", eta=time.time() + 3600)])
    assert r.lrange("celery", 0, -1) == [b"m1", b"m0"]
    assert r.lrange(f"celery{SEP}3", 0, -1) == [b"p5"]
    assert r.zcard("celeriac.delayed") == 1
    assert payloads(broker.fetch(["celery"], 10, 0)) == ["m0", "m1", "p5"]


def test_priority_sublists_use_kombu_names(broker, r):
    broker.publish("celery", "p9", priority=9)
    broker.publish("celery", "p5", priority=5)
    broker.publish("celery", "p0", priority=0)
    assert r.lrange("celery", 0, -1) == [b"p0"]
    assert r.lrange(f"celery{SEP}3", 0, -1) == [b"p5"]
    assert r.lrange(f"celery{SEP}9", 0, -1) == [b"p9"]
    got = broker.fetch(["celery"], 10, 0)
    assert payloads(got) == ["p0", "p5", "p9"]
    assert [d.queue for d in got] == ["celery", f"celery{SEP}3", f"celery{SEP}9"]


def test_list_order_is_step_then_queue(broker):
    broker.publish("b", "b6", priority=6)
    broker.publish("a", "a6", priority=6)
    broker.publish("b", "b0")
    broker.publish("a", "a0")
    assert payloads(broker.fetch(["a", "b"], 10, 0)) == ["a0", "b0", "a6", "b6"]


def test_fetch_limit_and_batching(broker):
    for i in range(10):
        broker.publish("celery", f"m{i}")
    batches = [payloads(broker.fetch(["celery"], 4, 0)) for _ in range(4)]
    assert batches == [["m0", "m1", "m2", "m3"], ["m4", "m5", "m6", "m7"], ["m8", "m9"], []]


def test_ack_removes_from_unacked(broker, r):
    for i in range(3):
        broker.publish("celery", f"m{i}")
    got = broker.fetch(["celery"], 10, 0)
    key = f"celeriac.unacked.{broker.consumer_id}"
    assert r.hlen(key) == 3
    assert r.hget(key, got[0].tag) == b"celery\nm0"
    broker.ack(got[:2])
    assert r.hkeys(key) == [str(got[2].tag).encode()]
    broker.ack(got[2:])
    assert not r.exists(key)


def test_requeue_puts_back_at_front_in_order(broker, r):
    for i in range(5):
        broker.publish("celery", f"m{i}")
    got = broker.fetch(["celery"], 3, 0)
    broker.requeue(got)
    assert not r.exists(f"celeriac.unacked.{broker.consumer_id}")
    assert payloads(broker.fetch(["celery"], 10, 0)) == ["m0", "m1", "m2", "m3", "m4"]


def test_requeue_skips_tags_no_longer_owned(broker):
    broker.publish("celery", "m0")
    got = broker.fetch(["celery"], 1, 0)
    broker.ack(got)
    broker.requeue(got)
    assert broker.size("celery") == 0


def test_eta_goes_on_the_queue_by_default_as_celery_puts_it(broker, r):
    broker.publish("celery", "later", eta=time.time() + 60)
    assert r.lrange("celery", 0, -1) == [b"later"]
    assert r.zcard("celeriac.delayed") == 0


def test_eta_not_fetched_until_due(make_broker, r):
    broker = make_broker(delayed_delivery="broker")
    broker.publish("celery", "later", eta=time.time() + 0.3)
    assert r.zcard("celeriac.delayed") == 1
    assert broker.size("celery") == 1
    assert broker.fetch(["celery"], 10, 0) == []
    got = broker.fetch(["celery"], 10, 2)
    assert payloads(got) == ["later"]
    assert r.zcard("celeriac.delayed") == 0


def test_past_eta_is_published_now(broker, r):
    broker.publish("celery", "now", eta=time.time() - 5)
    assert r.llen("celery") == 1


def test_defer(broker, r):
    broker.publish("celery", "m")
    (d,) = broker.fetch(["celery"], 1, 0)
    broker.defer(d, time.time() + 0.3)
    assert r.zrange("celeriac.delayed", 0, -1) == [b"celery\nm"]
    assert not r.exists(f"celeriac.unacked.{broker.consumer_id}")
    assert broker.fetch(["celery"], 1, 0) == []
    assert payloads(broker.fetch(["celery"], 1, 2)) == ["m"]


def test_blocking_fetch_wakes_on_publish(make_broker):
    consumer, producer = make_broker(), make_broker()

    def publish_later():
        time.sleep(0.3)
        producer.publish("celery", "wake")

    t = threading.Thread(target=publish_later)
    t.start()
    got = consumer.fetch(["celery"], 10, 10)
    t.join()
    assert payloads(got) == ["wake"]
    assert consumer.size("celery") == 0


def test_blocking_fetch_wakes_on_every_source_list(make_broker):
    consumer, producer = make_broker(), make_broker()
    for queue, priority in [("a", 0), ("b", 9), ("a", 6)]:
        t = threading.Timer(0.2, producer.publish, (queue, f"{queue}{priority}", priority))
        t.start()
        got = consumer.fetch(["a", "b"], 10, 10)
        t.join()
        assert payloads(got) == [f"{queue}{priority}"]


def test_blocking_fetch_times_out_empty(broker, r):
    assert broker.fetch(["celery"], 10, 0.3) == []
    assert r.llen(f"celeriac.landing.{broker.consumer_id}") == 0


def test_heartbeat_recovers_dead_consumer(make_broker):
    a = make_broker(lost_timeout=0.5)
    b = make_broker(lost_timeout=0.5)
    for i in range(5):
        a.publish("celery", f"m{i}")
    assert a.heartbeat().returned == 0
    assert payloads(a.fetch(["celery"], 3, 0)) == ["m0", "m1", "m2"]
    assert b.heartbeat().returned == 0
    # b lives on (a silent broker would be an outage)
    assert beat_through(b, 0.9).returned == 3
    assert payloads(b.fetch(["celery"], 10, 0)) == ["m0", "m1", "m2", "m3", "m4"]
    assert b.heartbeat().returned == 0


def test_heartbeat_returns_landing_list(make_broker, r):
    b = make_broker(lost_timeout=0.5)
    # A consumer that died between its BLMOVE and the fetch script that drains it.
    r.zadd("celeriac.consumers", {"ghost": time.time() - 60})
    r.hset("celeriac.landing-source", "ghost", f"celery{SEP}3")
    r.lpush("celeriac.landing.ghost", "landed")
    r.hset("celeriac.unacked.ghost", mapping={"1": f"celery{SEP}3\nfirst"})
    r.lpush(f"celery{SEP}3", "waiting")
    assert b.heartbeat().returned == 2
    assert payloads(b.fetch(["celery"], 10, 0)) == ["first", "landed", "waiting"]
    assert not r.hexists("celeriac.landing-source", "ghost")
    assert r.zscore("celeriac.consumers", "ghost") is None


def test_forget_consumer(make_broker, r):
    a = make_broker()
    b = make_broker()
    for i in range(4):
        a.publish("celery", f"m{i}")
    a.heartbeat()
    a.fetch(["celery"], 2, 0)
    assert b.forget_consumer(a.consumer_id).returned == 2
    assert r.zscore("celeriac.consumers", a.consumer_id) is None
    assert payloads(b.fetch(["celery"], 10, 0)) == ["m0", "m1", "m2", "m3"]
    assert b.forget_consumer().returned == 4
    assert b.size("celery") == 4


def test_dead_letter(broker, r):
    broker.publish("celery", "poison", priority=3)
    (d,) = broker.fetch(["celery"], 1, 0)
    broker.dead_letter(d, "cannot decode")
    assert not r.exists(f"celeriac.unacked.{broker.consumer_id}")
    record = json.loads(r.lindex("celeriac.dead", 0))
    assert record["reason"] == "cannot decode"
    assert record["payload"] == "poison"
    assert record["queue"] == f"celery{SEP}3"
    (letter,) = broker.dead_letters()
    assert (letter.queue, letter.reason, letter.payload) == (record["queue"], "cannot decode",
                                                            "poison")


def test_raw_celery_envelope_is_fetched(broker, r):
    envelope = json.dumps({
        "body": "W1syLCAzXSwge30sIHt9XQ==", "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "tasks.add", "id": "abc"},
        "properties": {"delivery_info": {"exchange": "", "routing_key": "celery"},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": "t-1"},
    })
    r.lpush("celery", envelope)
    (d,) = broker.fetch(["celery"], 10, 1)
    assert d.payload == envelope
    assert json.loads(d.payload)["headers"]["task"] == "tasks.add"


def test_fetch_declares_kombu_binding(broker, r):
    broker.fetch(["celery"], 1, 0)
    assert r.smembers("_kombu.binding.celery") == {f"celery{SEP}{SEP}celery".encode()}


def test_purge_and_size(broker, r):
    broker.publish("celery", "a")
    broker.publish("celery", "b", priority=9)
    broker.publish("celery", "c", eta=time.time() + 60)
    broker.publish("other", "d", eta=time.time() + 60)
    assert broker.size("celery") == 3
    assert broker.purge("celery") == 3  # the delayed one too, as on SQLite and memory
    assert broker.size("celery") == 0 and broker.size("other") == 1
    assert not r.exists("celery", f"celery{SEP}9")


def test_global_keyprefix(make_broker, r):
    b = make_broker(global_keyprefix="app:")
    b.publish("celery", "m", priority=6)
    assert r.llen(f"app:celery{SEP}6") == 1
    (d,) = b.fetch(["celery"], 1, 0)
    assert d.queue == f"celery{SEP}6"
    assert r.hlen(f"app:celeriac.unacked.{b.consumer_id}") == 1


def test_fetch_after_a_lost_reply_hands_out_the_held_messages(broker, r):
    # As after a fetch whose reply was lost and retried: the counter lags the hash. The
    # retry must return what the lost run took, or those messages sit unseen.
    for i in range(4):
        broker.publish("celery", f"m{i}")
    first = broker.fetch(["celery"], 2, 0)
    broker._p().next_tag = first[0].tag
    again = broker.fetch(["celery"], 3, 0)
    assert payloads(again) == ["m0", "m1", "m2"]
    assert [d.tag for d in again[:2]] == [d.tag for d in first]
    assert r.hlen(f"celeriac.unacked.{broker.consumer_id}") == 3
    assert payloads(broker.fetch(["celery"], 5, 0)) == ["m3"]


def _child_fetch(broker, queue):
    got = broker.fetch([queue], 10, 1)
    broker.ack(got)
    queue_out = f"{queue}.out"
    broker.publish(queue_out, json.dumps([broker.consumer_id, payloads(got)]))


def test_forked_child_is_its_own_consumer(broker):
    broker.publish("celery", "m0")
    parent_id = broker.consumer_id
    assert payloads(broker.fetch(["celery"], 1, 0)) == ["m0"]
    broker.publish("celery", "m1")
    p = multiprocessing.get_context("fork").Process(target=_child_fetch,
                                                    args=(broker, "celery"))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    (out,) = broker.fetch(["celery.out"], 1, 1)
    child_id, child_got = json.loads(out.payload)
    assert child_got == ["m1"]
    assert child_id != parent_id
    assert broker.consumer_id == parent_id


def test_url_forms():
    assert redis_py_url("redis+socket:///tmp/r.sock?virtual_host=3") == "unix:///tmp/r.sock?db=3"
    assert redis_py_url("redis+socket:///tmp/r.sock?db=2") == "unix:///tmp/r.sock?db=2"
    assert redis_py_url("rediss://:pw@h:6380/1?ssl_cert_reqs=CERT_REQUIRED") == \
        "rediss://:pw@h:6380/1?ssl_cert_reqs=required"
    assert redis_py_url("redis://:pw@h/0") == "redis://:pw@h/0"


# -- result backend ----------------------------------------------------------------

def test_key_layout(backend, r):
    backend.store_result("abc", 5, states.SUCCESS)
    meta = json.loads(r.get("celery-task-meta-abc"))
    assert meta["status"] == "SUCCESS" and meta["result"] == 5 and meta["task_id"] == "abc"
    assert 0 < r.ttl("celery-task-meta-abc") <= 86400


def test_wait_for_stored_result(backend):
    backend.store_result("t1", {"x": 1}, states.SUCCESS)
    assert backend.wait_for("t1", timeout=1)["result"] == {"x": 1}


def test_waiter_woken_by_later_store(backend):
    def store_later():
        time.sleep(0.2)
        backend.store_result("t2", 42, states.SUCCESS)

    t = threading.Thread(target=store_later)
    t.start()
    assert backend.wait_for("t2", timeout=10)["result"] == 42
    t.join()


def test_waiter_woken_by_other_process_publish(backend, r):
    other = RedisBackend(URL, BackendOptions())
    store = threading.Timer(0.2, other.store_result, ("t3", "x", states.FAILURE))
    store.start()
    try:
        assert backend.wait_for("t3", timeout=10)["status"] == "FAILURE"
    finally:
        store.join()  # the PUBLISH can wake the waiter before the pipeline's reply is read
        other.close()


def test_started_does_not_wake(backend):
    woke = []

    def wait():
        woke.append(backend.wait_for("t4", timeout=10))

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    backend.store_result("t4", {"pid": 1}, states.STARTED)
    backend.store_result("t4", {"current": 1}, "PROGRESS")
    t.join(0.5)
    assert t.is_alive() and not woke
    backend.store_result("t4", 9, states.SUCCESS)
    t.join(5)
    assert woke[0]["result"] == 9


def test_timeout_raises(backend):
    with pytest.raises(CeleriacTimeoutError):
        backend.wait_for("never", timeout=0.3)
    backend.store_result("started", None, states.STARTED)
    with pytest.raises(CeleriacTimeoutError):
        backend.wait_for("started", timeout=0.3)


def test_forget(backend, r):
    backend.store_result("t5", 1, states.SUCCESS)
    backend.forget("t5")
    assert not r.exists("celery-task-meta-t5")
    assert backend.get_task_meta("t5")["status"] == states.PENDING


def test_many_concurrent_waiters(backend):
    results: dict[int, object] = {}

    def wait(i):
        results[i] = backend.wait_for(f"many-{i}", timeout=10)["result"]

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    for i in reversed(range(20)):
        backend.store_result(f"many-{i}", i * 10, states.SUCCESS)
    for t in threads:
        t.join(10)
    assert results == {i: i * 10 for i in range(20)}


def test_store_racing_subscribe_is_not_missed(backend):
    # Stores land at every moment relative to the waiter's GET and SUBSCRIBE.
    for i in range(50):
        t = threading.Thread(target=backend.store_result, args=(f"race-{i}", i, states.SUCCESS))
        t.start()
        assert backend.wait_for(f"race-{i}", timeout=5)["result"] == i
        t.join()


def test_several_waiters_on_one_task(backend):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        backend.wait_for("shared", timeout=10)["result"])) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    backend.store_result("shared", "ok", states.SUCCESS)
    for t in threads:
        t.join(10)
    assert results == ["ok"] * 5


def _child_wait(backend, task_id):
    meta = backend.wait_for(task_id, timeout=10)
    os._exit(0 if meta["result"] == "from-parent" else 1)


def test_forked_child_waits_with_its_own_listener(backend):
    # The parent has a reader thread running when it forks.
    parent = threading.Thread(target=_expect_timeout, args=(backend, "parent-wait"))
    parent.start()
    time.sleep(0.1)
    assert backend._listener is not None
    p = multiprocessing.get_context("fork").Process(target=_child_wait,
                                                    args=(backend, "forked"))
    p.start()
    time.sleep(0.3)
    backend.store_result("forked", "from-parent", states.SUCCESS)
    p.join(10)
    parent.join(5)
    assert p.exitcode == 0


def _expect_timeout(backend, task_id):
    with pytest.raises(CeleriacTimeoutError):
        backend.wait_for(task_id, timeout=0.6)


def test_waiter_survives_pubsub_connection_loss(backend, r):
    woke = []
    t = threading.Thread(target=lambda: woke.append(backend.wait_for("lost", timeout=15)))
    t.start()
    time.sleep(0.2)
    assert r.client_kill_filter(_type="pubsub") >= 1
    # Stored while the listener is disconnected: no PUBLISH reaches it, the GET after
    # resubscribing must find the result.
    r.set("celery-task-meta-lost", json.dumps({"status": "SUCCESS", "result": 1,
                                                 "task_id": "lost"}))
    t.join(15)
    assert woke and woke[0]["result"] == 1


def test_waiter_survives_silent_reconnect_of_the_pubsub_socket(backend, r, monkeypatch):
    # redis-py reopens a closed connection by itself when it is polled or written to; the
    # new socket has no subscriptions. The listener must notice and subscribe again: with
    # the backstop read out of the way, only a notification can wake the waiter.
    from celeriac.backends import redis as redis_backend

    monkeypatch.setattr(redis_backend, "BACKSTOP_INTERVAL", 3600.0)
    woke = []
    t = threading.Thread(target=lambda: woke.append(backend.wait_for("reopened",
                                                                     timeout=30)))
    t.start()
    key = backend.key_for("reopened")

    def subscribed() -> bool:
        listener = backend._listener
        channel = listener.channels.get(key) if listener is not None else None
        return bool(listener is not None and listener.conn is not None
                    and channel is not None and channel.confirmed)

    assert wait_until(subscribed, timeout=10)
    listener = backend._listener
    conn = listener.conn
    with listener.lock:
        conn.disconnect()
        conn.connect()  # what redis-py's can_read or send does on a closed socket
    assert wait_until(lambda: listener.conn is not None and listener.conn is not conn,
                      timeout=5)
    backend.store_result("reopened", "ok", states.SUCCESS)
    t.join(30)
    assert woke and woke[0]["result"] == "ok"


def test_waiter_reads_its_key_when_no_notification_comes(backend, r, monkeypatch):
    from celeriac.backends import redis as redis_backend

    monkeypatch.setattr(redis_backend, "BACKSTOP_INTERVAL", 0.2)
    woke = []
    t = threading.Thread(target=lambda: woke.append(backend.wait_for("quiet", timeout=10)))
    t.start()
    assert wait_until(lambda: backend._listener is not None
                      and backend._listener.channels, timeout=5)
    # Written without the PUBLISH a backend sends: only the backstop read can find it.
    r.set("celery-task-meta-quiet", json.dumps({"status": "SUCCESS", "result": 7,
                                                  "task_id": "quiet"}))
    t.join(10)
    assert woke and woke[0]["result"] == 7


def test_blocking_fetch_survives_connection_loss(make_broker, r):
    consumer, producer = make_broker(), make_broker()
    got = []
    t = threading.Thread(target=lambda: got.extend(consumer.fetch(["solo"], 1, 15)))
    t.start()
    time.sleep(0.2)
    r.client_kill_filter(_type="normal", skipme=True)
    producer.publish("solo", "after")
    t.join(15)
    assert payloads(got) == ["after"]



def test_message_that_keeps_losing_its_worker_is_dead_lettered(make_broker, r):
    publisher = make_broker(max_redeliveries=3, dead_letter_queue="poison.dead")
    publisher.publish("celery", "poison")
    publisher.publish("celery", "fine")
    for _ in range(3):
        victim = make_broker(max_redeliveries=3, dead_letter_queue="poison.dead")
        got = victim.fetch(["celery"], 1, 0)
        assert payloads(got) == ["poison"]
        # as when its pool process dies running it
        released = victim.forget_consumer(lost=[d.tag for d in got])
    assert [d.reason for d in released.poisoned]
    assert "lost 3 times" in released.poisoned[0].reason
    assert payloads(publisher.fetch(["celery"], 5, 0)) == ["fine"]
    (dead,) = publisher.dead_letters()
    assert dead.payload == "poison" and "probable poison message" in dead.reason


# -- the worker's direct line ---------------------------------------------------------------
def test_direct_line_reads_replies_in_order_for_every_ticket(r):
    from celeriac.utils.redis import RedisConnector

    connector = RedisConnector(URL, {}, "test")
    line = connector.line()
    first = line.send(("SET", "a", b"1"), ("INCR", "n"))
    second = line.send(("GET", "a"))
    assert second.replies() == [b"1"]  # reads the first ticket's replies on the way
    assert first.replies() == [b"OK", 1]
    assert line.call(("INCR", "n"), ("GET", "n")) == [2, b"2"]
    connector.close()


def test_direct_line_gives_up_on_error_and_reconnects_next_time(r):
    from celeriac.utils.redis import RedisConnector

    connector = RedisConnector(URL, {}, "test")
    line = connector.line()
    r.set("text", "not a number")
    pending = line.send(("SET", "x", b"1"))
    failing = line.send(("INCR", "text"))
    with pytest.raises(redis.ResponseError):
        failing.replies()
    # the line dropped its connection: the earlier reply was read, later ones are lost
    assert pending.replies() == [b"OK"]
    assert line.conn is None
    assert line.call(("GET", "x")) == [b"1"]  # a new connection on the next send
    r.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(Exception):
        line.call(("GET", "x"))
    assert line.call(("GET", "x")) == [b"1"]
    connector.close()


# -- who counts a loss, and when silence is not death -------------------------------------
def test_only_the_running_message_counts_a_loss(make_broker, r):
    publisher = make_broker(max_redeliveries=3, dead_letter_queue="poison.dead")
    for payload in ("poison", "x", "y", "z"):
        publisher.publish("celery", payload)
    for _ in range(3):
        victim = make_broker(max_redeliveries=3, dead_letter_queue="poison.dead")
        got = victim.fetch(["celery"], 4, 0)
        assert payloads(got)[0] == "poison"
        released = victim.forget_consumer(lost=[got[0].tag])
    assert released.returned == 3
    assert [d.payload for d in released.poisoned] == ["poison"]
    assert sorted(payloads(publisher.fetch(["celery"], 10, 0))) == ["x", "y", "z"]


def test_a_consumer_found_dead_counts_a_loss_for_its_oldest_message_only(make_broker, r):
    opts = dict(lost_timeout=0.5, max_redeliveries=2, dead_letter_queue="poison.dead")
    judge = make_broker(**opts)
    judge.publish("celery", "poison")
    judge.publish("celery", "x")
    poisoned = []
    for _ in range(2):
        victim = make_broker(**opts)
        victim.heartbeat()
        assert payloads(victim.fetch(["celery"], 2, 0)) == ["poison", "x"]
        poisoned += beat_through(judge, 0.9).poisoned  # the victim is silent
    assert [d.payload for d in poisoned] == ["poison"]
    assert payloads(judge.fetch(["celery"], 10, 0)) == ["x"]


def test_forget_consumer_drops_what_it_is_told_to(broker, r):
    broker.publish("celery", "timed-out")
    broker.publish("celery", "waiting")
    got = broker.fetch(["celery"], 2, 0)
    assert broker.forget_consumer(drop=[got[0].tag]).returned == 1
    assert payloads(broker.fetch(["celery"], 10, 0)) == ["waiting"]


def test_silence_everyone_shared_is_not_taken_for_death(make_broker, r):
    first, second = make_broker(lost_timeout=0.5), make_broker(lost_timeout=0.5)
    first.publish("celery", "running")
    first.heartbeat()
    second.heartbeat()
    assert payloads(first.fetch(["celery"], 1, 0)) == ["running"]
    time.sleep(0.8)  # an outage: nobody's beat reaches the server
    assert second.heartbeat().returned == 0
    assert beat_through(second, 1.0).returned == 1  # now `first` really is silent


def test_an_early_acked_task_of_a_lost_consumer_is_reported_not_redelivered(make_broker, r):
    lost, judge = make_broker(lost_timeout=0.5), make_broker(lost_timeout=0.5)
    for payload in ("running", "done", "waiting"):
        lost.publish("celery", payload)
    lost.heartbeat()
    running, done, waiting = lost.fetch(["celery"], 3, 0)
    lost.ack_started([done])()
    lost.finished([done])
    lost.ack_started([running])()  # carries the note of `done` away
    assert r.hkeys(f"celeriac.started.{lost.consumer_id}") == [str(running.tag).encode()]
    released = beat_through(judge, 0.9)
    assert released.interrupted == ["running"] and released.returned == 1
    assert payloads(judge.fetch(["celery"], 10, 0)) == ["waiting"]


def test_notes_of_ended_tasks_go_with_the_next_fetch(broker, r):
    broker.publish("celery", "a")
    (a,) = broker.fetch(["celery"], 1, 0)
    broker.ack_started([a])()
    broker.finished([a])
    broker.fetch(["celery"], 1, 0)
    assert not r.exists(f"celeriac.started.{broker.consumer_id}")


def test_a_message_whose_early_ack_was_lost_on_the_way_can_be_given_back(broker, r):
    broker.publish("celery", "acked-unseen")
    (d,) = broker.fetch(["celery"], 1, 0)
    broker.ack_started([d])()
    broker.requeue([d])
    assert payloads(broker.fetch(["celery"], 1, 0)) == ["acked-unseen"]
    assert not r.exists(f"celeriac.started.{broker.consumer_id}")
