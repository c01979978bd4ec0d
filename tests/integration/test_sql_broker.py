"""The PostgreSQL and MySQL/MariaDB broker: what is particular to a shared server
database (the contract itself also runs through the worker modules that list
``postgresql`` and ``mysql`` in ``BROKERS_ALSO``).

Each parameter has a schema of its own (dropped at the end), so these tests share the
servers with anything else.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import beat_through, free_port, mysql_answers, postgresql_answers, require

from celeriac.brokers import Outgoing, connect
from celeriac.exceptions import MissingDependency

URLS = {"postgresql": "sqla+postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "mysql": "sqla+mysql+pymysql://root@127.0.0.1:3306/test"}


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``url`` and a fresh ``schema`` on one of the machine's servers."""
    kind = request.param
    module = "psycopg" if kind == "postgresql" else "pymysql"
    try:
        __import__(module)
    except ImportError:
        require(f"{module} is not installed", False)
    require(f"{kind} is not reachable on its standard loopback port",
            postgresql_answers() if kind == "postgresql" else mysql_answers())
    schema = f"celeriac_t_{uuid.uuid4().hex[:8]}"
    info = {"kind": kind, "url": URLS[kind], "schema": schema}
    yield info
    broker = connect(URLS[kind])
    cascade = " CASCADE" if kind == "postgresql" else ""
    drop = f"DROP SCHEMA IF EXISTS {broker.db.quote(schema)}{cascade}"
    broker.db.run(lambda cur: cur.execute(drop))
    broker.close()


def broker(server: dict[str, Any], **options: Any) -> Any:
    return connect(server["url"], {"schema": server["schema"], **options})


def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def test_two_consumers_never_get_the_same_message(server: dict[str, Any]) -> None:
    q = queue()
    producer = broker(server)
    count = 300
    producer.publish_many([_out(q, str(i)) for i in range(count)])
    taken: list[list[str]] = [[] for _ in range(4)]
    # All connected before any drains: on a loaded machine the first thread would
    # otherwise take every message while the others are still connecting.
    ready = threading.Barrier(4)

    def drain(index: int) -> None:
        consumer = broker(server)
        consumer.size(q)
        ready.wait(60)
        while True:
            batch = consumer.fetch([q], 7, timeout=0.05)
            if not batch:
                break
            taken[index].extend(d.payload for d in batch)
            consumer.ack(batch)
        consumer.close()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [p for part in taken for p in part]
    assert sorted(everything, key=int) == [str(i) for i in range(count)]  # once each
    assert sum(1 for part in taken if part) > 1  # they did take turns
    assert producer.size(q) == 0


def _out(q: str, payload: str) -> Outgoing:
    return Outgoing(q, payload)


def test_priorities_eta_purge_and_size(server: dict[str, Any]) -> None:
    q = queue()
    b = broker(server)
    for priority in (9, 6, 0, 3):  # lower runs first, as on Redis and SQLite
        b.publish(q, str(priority), priority)
    due = time.time() + 0.5
    b.publish(q, "later", 0, eta=due)
    assert b.size(q) == 5  # due or not
    batch = b.fetch([q], 10, timeout=0)
    assert [d.payload for d in batch] == ["0", "3", "6", "9"]  # the eta one waits
    b.ack(batch)
    (late,) = b.fetch([q], 10, timeout=30)
    assert late.payload == "later" and time.time() >= due
    b.requeue([late])  # back to its queue, due at once
    b.publish(q, "x")
    assert b.purge(q) == 2 and b.size(q) == 0
    b.publish_many([_out(q, str(i)) for i in range(2500)])  # more than one INSERT takes
    assert b.size(q) == 2500 and b.purge(q) == 2500


@pytest.mark.parametrize("kind", ["postgresql"])
def test_an_idle_fetch_waits_on_listen_and_a_publish_wakes_it(server: dict[str, Any],
                                                              kind: str) -> None:
    if server["kind"] != kind:
        pytest.skip("MySQL polls (there is no LISTEN)")
    q = queue()
    consumer, producer = broker(server), broker(server)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.extend(consumer.fetch([q], 1, timeout=60)))
    waiter.start()
    channel = consumer.db.channel("q", q)

    def listening() -> bool:
        rows = producer.db.run(lambda cur: (cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            [f'LISTEN "{channel}"']), cur.fetchone())[1])
        return bool(rows[0])

    deadline = time.monotonic() + 20
    while not listening() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listening()  # waiting on the notification socket, not polling
    producer.publish(q, "wake")
    waiter.join(30)
    assert not waiter.is_alive() and [d.payload for d in got] == ["wake"]


def test_dead_letters_are_kept_per_dead_letter_queue(server: dict[str, Any]) -> None:
    q = queue()
    mine = broker(server, dead_letter_queue=f"{q}.dead")
    other = broker(server, dead_letter_queue=f"{q}.other")
    mine.publish(q, "bad")
    (d,) = mine.fetch([q], 1, timeout=1)
    mine.dead_letter(d, "cannot decode")
    (letter,) = mine.dead_letters()
    assert (letter.queue, letter.reason, letter.payload) == (q, "cannot decode", "bad")
    assert other.dead_letters() == []
    assert mine.size(q) == 0


def test_a_dead_consumers_messages_return_through_a_live_heartbeat(
        server: dict[str, Any]) -> None:
    q = queue()
    dead = broker(server, lost_timeout=1.0, max_redeliveries=2)
    live = broker(server, lost_timeout=1.0, max_redeliveries=2)
    dead.publish_many([_out(q, p) for p in ("poison", "b", "c")])
    live.heartbeat()
    dead.heartbeat()
    assert len(dead.fetch([q], 10, timeout=1)) == 3
    # "dead" stops beating; the live one finds it out on the database's clock
    released = beat_through(live, 2.0)
    assert released.returned == 3 and not released.poisoned
    again = broker(server, lost_timeout=1.0, max_redeliveries=2)
    again.heartbeat()
    assert [d.payload for d in again.fetch([q], 10, timeout=1)] == ["poison", "b", "c"]
    released = beat_through(live, 2.0)
    # the oldest, the one it was running, counts a second loss: set aside
    assert [p.payload for p in released.poisoned] == ["poison"]
    assert released.returned == 2
    assert [d.payload for d in live.dead_letters()] == ["poison"]
    assert "poison" in released.poisoned[0].reason
    assert live.size(q) == 2


def test_early_acked_tasks_of_a_dead_consumer_are_reported(server: dict[str, Any]) -> None:
    q = queue()
    dead = broker(server, lost_timeout=1.0)
    live = broker(server, lost_timeout=1.0)
    dead.publish_many([_out(q, "running"), _out(q, "waiting")])
    live.heartbeat()
    dead.heartbeat()
    running, waiting = dead.fetch([q], 2, timeout=1)
    dead.ack_started([running])
    released = beat_through(live, 2.0)
    assert released.interrupted == ["running"]  # never run again, but told
    assert released.returned == 1
    assert [d.payload for d in live.fetch([q], 5, timeout=1)] == ["waiting"]


def test_rate_reservations_and_revocations_are_shared(server: dict[str, Any]) -> None:
    a, b = broker(server), broker(server)
    key = f"rate-{uuid.uuid4().hex[:8]}"
    starts = sorted([a.reserve_rate(key, 0.2), b.reserve_rate(key, 0.2),
                     a.reserve_rate(key, 0.2)])
    assert all(later - earlier >= 0.19 for earlier, later in zip(starts, starts[1:]))
    version, ids = a.revoked()
    task_id = str(uuid.uuid4())
    b.revoke([task_id], "SIGTERM", 60)
    new_version, ids = a.revoked(version)
    assert new_version != version and ids is not None and ids[task_id] == "SIGTERM"
    assert a.revoked(new_version) == (new_version, None)


def _create(url: str, schema: str, results: Any) -> None:
    try:
        results.put(connect(url, {"schema": schema}).size("q"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_tables_are_created_once_when_processes_start_together(
        server: dict[str, Any]) -> None:
    schema = f"{server['schema']}_race"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [context.Process(target=_create, args=(server["url"], schema, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes == [0, 0, 0, 0]
    b = connect(server["url"])
    drop = f"DROP SCHEMA IF EXISTS {b.db.quote(schema)}" + (" CASCADE" if b.pg else "")
    b.db.run(lambda cur: cur.execute(drop))


def _backend_pid(b: Any) -> int:
    query = "SELECT pg_backend_pid()" if b.pg else "SELECT CONNECTION_ID()"
    return int(b.db.run(lambda cur: (cur.execute(query), cur.fetchone())[1])[0])


def test_a_forked_child_has_its_own_connection_and_leaves_the_parents_alone(
        server: dict[str, Any]) -> None:
    q = queue()
    b = broker(server)
    parent = _backend_pid(b)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            b.publish(q, "from-child")
            b.fetch([queue()], 1, timeout=0)  # as a consumer
            os.write(write, f"{_backend_pid(b)} {b.consumer_id}".encode())
        finally:
            os._exit(0)
    os.close(write)
    reply = os.read(read, 1000).decode().split()
    os.waitpid(child, 0)
    assert int(reply[0]) != parent  # a connection of its own
    assert reply[1] != b.consumer_id  # and a consumer id of its own
    assert _backend_pid(b) == parent  # the parent's connection still works
    assert [d.payload for d in b.fetch([q], 1, timeout=1)] == ["from-child"]


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(MissingDependency) as info:
        connect("sqla+postgresql://postgres@127.0.0.1/test")
    assert "pip install 'celeriac[postgresql]'" in str(info.value)
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(MissingDependency) as info:
        connect("sqla+mysql+pymysql://root@127.0.0.1/test")
    assert "pip install 'celeriac[mysql]'" in str(info.value)


def test_an_unreachable_database_stops_the_worker_with_the_password_hidden(
        tmp_path: Path) -> None:
    secret = "s3cret-horse"
    url = f"sqla+postgresql+psycopg://celeriac:{secret}@127.0.0.1:{free_port()}/test"
    (tmp_path / "sqlproj.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('sqlproj', broker={url!r}, backend='disabled://')\n"
        "app.conf.broker_connection_retry_on_startup = False\n")
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "sqlproj", "worker",
                           "-c", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    (line,) = [line for line in output.splitlines() if "Cannot start" in line]
    assert "broker sqla+postgresql+psycopg://celeriac:**@127.0.0.1" in line
    assert "connection refused" in line
    assert secret not in output


def test_fanout_reaches_every_listener_bound_to_the_key(server: dict[str, Any]) -> None:
    from celeriac.brokers import Notice

    exchange = f"ev-{uuid.uuid4().hex[:8]}"
    sender, a, b = broker(server), broker(server), broker(server)
    tasks, everything = a.listen(exchange, ["task.#"]), b.listen(exchange, ["#"])
    replies = a.replies(f"{exchange}.reply", "ticket-1")
    try:
        sender.broadcast(exchange, [Notice("task.succeeded", "one", {"hostname": "w1"}),
                                    Notice("worker.heartbeat", "two")])
        sender.reply(f"{exchange}.reply", [Notice("ticket-2", "not mine"),
                                           Notice("ticket-1", "mine")])
        assert [(n.routing_key, n.body, n.headers) for n in tasks.get(timeout=10)] == [
            ("task.succeeded", "one", {"hostname": "w1"})]
        assert [n.body for n in everything.get(timeout=10)] == ["one", "two"]
        assert [n.body for n in replies.get(timeout=10)] == ["mine"]
        assert tasks.get(timeout=0.1) == []  # nothing more, nothing twice
    finally:
        for listener in (tasks, everything, replies):
            listener.close()


def test_options_it_does_not_take_are_named_in_a_warning(server: dict[str, Any]) -> None:
    from celeriac.config import IgnoredSettingWarning

    with pytest.warns(IgnoredSettingWarning, match="queue_tablename: no effect"):
        broker(server, queue_tablename="kombu_queue")  # kombu's SQLAlchemy transport's


def test_the_ledger_sorts_a_consumers_rows_after_the_database_went_away() -> None:
    from celeriac.utils.sqlbroker import Ledger

    ledger = Ledger()
    ledger.fetched([1, 2, 3, 4, 5])
    ledger.settled([1], gone=True)  # acked
    ledger.started([2])  # early ack, task running
    ledger.started([3])
    ledger.ended([3])  # and over
    ledger.settled([4], gone=False)  # requeued: not this consumer's now
    # a crash undid the ack of 1 and the early acks of 2 and 3; 4's requeue held
    assert ledger.verdict(1, started=False) == "delete"
    assert ledger.verdict(2, started=False) == "start"
    assert ledger.verdict(2, started=True) == "keep"
    assert ledger.verdict(3, started=False) == "delete"
    assert ledger.verdict(5, started=False) == "keep"  # fetched, not settled
    assert ledger.verdict(6, started=False) == "return"  # a fetch whose reply was lost
    assert ledger.verdict(7, started=True) == "delete"  # an ended task's note


@pytest.mark.parametrize("broker_url", ["mysql"], indirect=True)
def test_a_prefork_worker_on_mysql(proj: Any, project: Path) -> None:
    """End to end on MySQL/MariaDB (PostgreSQL runs the worker modules themselves)."""
    from celeriac.contrib.testing import WorkerProcess

    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "2"]):
        results = [proj.add.delay(i, i) for i in range(100)]
        later = proj.add.apply_async((1, 2), countdown=0.5)
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(100)]
        assert later.get(timeout=30) == 3
        replies = proj.app.control.ping(timeout=5, limit=1)
        assert [list(r.values()) for r in replies] == [[{"ok": "pong"}]]  # via the notices


def test_after_the_database_went_away_a_consumer_puts_its_rows_right(
        server: dict[str, Any]) -> None:
    q = queue()
    b = broker(server)
    b.publish_many([_out(q, p) for p in ("acked", "running", "unseen", "held")])
    acked, running, unseen, held = b.fetch([q], 4, timeout=1)
    b.ack([acked])
    b.ack_started([running])
    m = b.t["messages"]

    def as_if_the_crash_undid_it(cur: Any) -> None:
        # what a crash may undo: the ack's delete and the early ack's mark ...
        cur.execute(f"INSERT INTO {m} (id, queue, priority, due, consumer, payload) "
                    "VALUES (%s, %s, 0, 0, %s, 'acked')", [acked.tag, q, b.consumer_id])
        cur.execute(f"UPDATE {m} SET due = 0 WHERE id = %s", [running.tag])

    b.db.run(as_if_the_crash_undid_it)
    # ... and a fetch whose reply was lost: its row is marked, the consumer never saw it
    b.ledger.settled([unseen.tag], gone=False)
    b.db.losses += 1  # what a broken connection counts
    other = broker(server)
    assert [d.payload for d in b.fetch([q], 10, timeout=0)] == ["unseen"]  # handed back
    assert other.fetch([q], 10, timeout=0) == []  # nothing else is free
    rows = b.db.run(lambda cur: (cur.execute(
        f"SELECT payload, due FROM {m} WHERE queue = %s ORDER BY id", [q]), cur.fetchall())[1])
    assert [(p, float(d)) for p, d in rows] == [("running", -1.0), ("unseen", 0.0),
                                                ("held", 0.0)]


def test_psycopg2_takes_and_waits_as_psycopg_does(server: dict[str, Any]) -> None:
    if server["kind"] != "postgresql":
        pytest.skip("a PostgreSQL driver")
    pytest.importorskip("psycopg2")
    url = server["url"].replace("+psycopg:", "+psycopg2:")
    consumer = connect(url, {"schema": server["schema"]})
    assert consumer.db.driver == "psycopg2"
    q = queue()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.extend(consumer.fetch([q], 5, timeout=60)))
    waiter.start()
    while not consumer._listening:  # its LISTEN is on (then it waits on the socket)
        time.sleep(0.01)
    broker(server).publish(q, "woken")
    waiter.join(30)
    assert [d.payload for d in got] == ["woken"]
    consumer.ack(got)
    assert consumer.size(q) == 0
