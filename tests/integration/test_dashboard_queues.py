"""The queues page's data (celeriac.dashboard.queues) on real brokers: depths per
priority with delayed and unacked counts, and dead letters set aside by a real worker,
listed with their reason, requeued (and run) or deleted.

Each test has its own queue names, dead-letter queue and (SQL) schema; Redis is db 11.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import (answers, delete_rabbitmq, load_proj, mysql_answers, postgresql_answers,
                     rabbitmq_answers, require, wait_until)

from celeriac import Celery, messages
from celeriac.contrib.testing import WorkerProcess
from celeriac.dashboard.queues import (dead_letters, delete_dead_letter, known_queues,
                                       purge_queue, queue_depths, requeue_dead_letter)
from celeriac.routing import Queue

REDIS = "redis://127.0.0.1:6379/11"
SQL = {"postgresql": ("sqla+postgresql+psycopg://postgres@127.0.0.1:5432/test", "psycopg",
                      postgresql_answers, " CASCADE"),
       "mysql": ("sqla+mysql+pymysql://root@127.0.0.1:3306/test", "pymysql", mysql_answers,
                 "")}
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Setup:
    """A broker of one kind for one test: the URLs, the settings that keep it apart
    from other tests, and what to remove afterwards."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.queue = unique("dq")
        self.options: dict[str, Any] = {}
        self.schema: str | None = None
        #: more queues the test made, removed with its own
        self.extra: list[str] = []
        if kind == "sqlite":
            self.broker = self.backend = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
        elif kind == "redis":
            pytest.importorskip("redis")
            require("Redis is not reachable on its standard loopback port",
                    answers(6379, b"PING\r\n", b"+PONG"))
            self.broker = self.backend = REDIS
        elif kind in SQL:
            url, module, reachable, _ = SQL[kind]
            pytest.importorskip(module)
            require(f"{kind} is not reachable on its standard loopback port", reachable())
            self.broker, self.backend = url, REDIS
            self.schema = unique("celeriac_dq").replace("-", "_")
            self.options = {"schema": self.schema}
        else:
            pytest.importorskip("amqp")
            require("RabbitMQ is not reachable on its standard loopback port",
                    rabbitmq_answers())
            self.broker, self.backend = AMQP, REDIS

    def settings(self) -> dict[str, Any]:
        return {"task_default_queue": self.queue,
                "broker_dead_letter_queue": f"{self.queue}.dead",
                "broker_transport_options": self.options,
                "event_exchange": unique("ev"), "control_exchange": unique("ctl"),
                "worker_heartbeat_interval": 0.5, "worker_lost_timeout": 3.0}

    def app(self) -> Celery:
        app = Celery("dq", broker=self.broker, backend=self.backend)
        for name, value in self.settings().items():
            setattr(app.conf, name, value)
        return app

    def clean(self) -> None:
        names = [self.queue, f"{self.queue}.dead", *self.extra]
        if self.kind == "amqp":
            delete_rabbitmq(*names)
        elif self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS)
            client.delete(*[f"{n}{sep}" for n in names for sep in ("", "\x06\x163",
                                                                   "\x06\x166", "\x06\x169")])
            client.close()
        elif self.schema is not None:
            from celeriac.brokers import connect

            broker = connect(self.broker)
            cascade = SQL[self.kind][3]
            broker.db.run(lambda cur: cur.execute(
                f"DROP SCHEMA IF EXISTS {broker.db.quote(self.schema)}{cascade}"))
            broker.close()


@pytest.fixture(params=["sqlite", "redis", "postgresql", "mysql", "amqp"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(request.param, tmp_path)
    yield made
    made.clean()


def envelope(name: str, task_id: str, args: list[Any], **headers: Any) -> str:
    msg = messages.task_message(name, task_id, args)
    msg.headers.update(headers)
    return messages.encode_envelope(msg)


def test_known_queues_from_settings_routes_and_workers(setup: Setup) -> None:
    app = setup.app()
    app.conf.task_queues = [Queue(setup.queue), Queue("dq-declared")]
    app.conf.task_routes = {"proj.slow": {"queue": "dq-routed"}, "proj.*": "dq-glob"}
    replies = {"w1@host": [{"name": "dq-consumed"}, {"name": setup.queue}]}
    try:
        assert known_queues(app, replies) == [setup.queue, "dq-declared", "dq-routed",
                                              "dq-glob", "dq-consumed"]
    finally:
        app.close()


def test_depths_per_priority_with_delayed_and_unacked(setup: Setup) -> None:
    app = setup.app()
    other = unique("dq-empty")
    setup.extra.append(other)
    broker = app.connect_broker()
    try:
        producer = app.producer_broker()
        for i in range(3):
            producer.publish(setup.queue, envelope("proj.add", str(uuid.uuid4()), [i]))
        producer.publish(setup.queue, envelope("proj.add", str(uuid.uuid4()), [9]),
                         priority=9)
        if setup.kind == "redis":
            broker.heartbeat()  # a consumer the others see (what unacked is counted by)
        taken = broker.fetch([setup.queue], 1, timeout=10)
        assert len(taken) == 1
        # held by the broker until due (Redis: parked there by a worker, as here)
        if setup.kind == "redis":
            broker.defer(broker.fetch([setup.queue], 1, timeout=10)[0], 4e9)
        else:
            producer.publish(setup.queue, envelope("proj.add", str(uuid.uuid4()), [0]),
                             eta=4e9)
        depths = {d.name: d for d in queue_depths(app, [setup.queue, other])}
        mine, empty = depths[setup.queue], depths[other]
        assert empty.messages == 0
        if setup.kind == "amqp":
            # RabbitMQ tells ready messages and consumers only; the fetched one (the
            # consumer's whole prefetch) is unacked, the eta one waits in the delay levels
            assert wait_until(lambda: queue_depths(app, [setup.queue])[0].messages == 3,
                              timeout=30)
            assert mine.by_priority is None and mine.unacked is None
            assert mine.delayed is None and mine.consumers == 1
            return
        assert mine.delayed == 1 and mine.unacked == 1
        if setup.kind == "redis":
            # kombu's priority steps (0, 3, 6, 9), 0 first: both fetches took from it
            assert mine.by_priority == {0: 1, 9: 1}
            assert mine.messages == 2
        else:
            assert mine.by_priority == {0: 2, 9: 1}  # lower numbers are taken first
            assert mine.messages == 3
        assert purge_queue(app, setup.queue) >= mine.messages
        after = queue_depths(app, [setup.queue])[0]
        assert after.messages == 0 and after.unacked == 1  # held ones stay held
        broker.ack(taken)
    finally:
        broker.close()
        app.close()


PROJ = '''
import os

from celeriac import Celery

app = Celery("proj", broker={broker!r}, backend={backend!r})
for name, value in {settings!r}.items():
    setattr(app.conf, name, value)
# a worker lost once while holding a message sets it aside
app.conf.broker_max_redeliveries = 1


@app.task
def add(x, y):
    return x + y


@app.task(acks_late=True)
def die_unless(path):
    """Kills the process running it until ``path`` exists: a poison message that can
    run once the cause is mended."""
    if not os.path.exists(path):
        os._exit(1)
    return "ran"
'''


@pytest.fixture
def project(setup: Setup, tmp_path: Path) -> Iterator[Any]:
    if setup.kind == "mysql":
        pytest.skip("the SQL broker's dead letters are the same code on MariaDB: "
                    "PostgreSQL covers them")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "proj.py").write_text(PROJ.format(broker=setup.broker, backend=setup.backend,
                                                settings=setup.settings()))
    proj = load_proj(folder)
    proj.folder = folder
    yield proj
    proj.app.close()


def listed(app: Any, task_id: str) -> dict[str, Any] | None:
    return next((d for d in dead_letters(app, 1000) if d["task_id"] == task_id), None)


def test_dead_letters_set_aside_by_a_worker_requeued_and_deleted(
        setup: Setup, project: Any, tmp_path: Path) -> None:
    app = project.app
    producer = app.producer_broker()
    broken_id = str(uuid.uuid4())
    producer.publish(setup.queue, envelope("proj.add", broken_id, [1, 2], eta="not-a-date"))
    garbage_id = str(uuid.uuid4())
    garbage = json.dumps({"body": "not base64 json", "headers": {"id": garbage_id},
                          "content-type": "application/json"})
    producer.publish(setup.queue, garbage)
    marker = tmp_path / "mended"
    poison = project.die_unless.delay(str(marker))
    with WorkerProcess("proj", cwd=project.folder,
                       args=["-c", "1", "-n", f"{unique('dq')}@%h"]) as worker:
        assert wait_until(lambda: listed(app, poison.id) and listed(app, broken_id)
                          and listed(app, garbage_id), timeout=90), worker.output
        broken = listed(app, broken_id)
        assert broken is not None
        assert broken["queue"] == setup.queue and "eta" in broken["reason"]
        assert broken["task_name"] == "proj.add"
        assert broken["args"] == "(1, 2)"  # the sender's repr: the message does not decode
        assert broken["time"] > 0 and broken_id in broken["payload_preview"]
        poisoned = listed(app, poison.id)
        assert poisoned is not None
        assert "lost" in poisoned["reason"], poisoned
        assert poisoned["task_name"] == "proj.die_unless"
        assert poisoned["args"] == [str(marker)]
        # no task name, a body that is not JSON: still listed, with what can be read
        unreadable = listed(app, garbage_id)
        assert unreadable is not None and "decode" in unreadable["reason"]
        assert unreadable["task_name"] is None and unreadable["args"] is None

        marker.touch()
        assert requeue_dead_letter(app, poisoned["id"])
        assert not requeue_dead_letter(app, poisoned["id"])  # once
        # the run stores its result over the WorkerLostError the poisoning stored
        assert wait_until(lambda: app.backend.get_task_meta(poison.id)["status"]
                          == "SUCCESS", timeout=60), worker.output
        assert app.backend.get_task_meta(poison.id)["result"] == "ran"
        assert listed(app, poison.id) is None

        assert delete_dead_letter(app, broken["id"])
        assert not delete_dead_letter(app, broken["id"])
        assert listed(app, broken_id) is None


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_beat_leader_held_in_the_sql_brokers_database(kind: str, tmp_path: Path) -> None:
    from celeriac.beat.service import default_lock_name
    from celeriac.beat.sql_lock import SQLLock
    from celeriac.dashboard.beat import beat_schedule

    made = Setup(kind, tmp_path)
    app = made.app()
    app.conf.beat_schedule = {"tick": {"task": "proj.add", "schedule": 30.0}}
    app.conf.beat_schedule_filename = str(tmp_path / "beat-state")
    lock = SQLLock(made.broker, default_lock_name(app), made.options)
    try:
        assert beat_schedule(app)["leader"] is None
        assert lock.acquire("sql-leader", 60)
        leader = beat_schedule(app)["leader"]
        assert leader is not None and leader["owner"] == "sql-leader"
        assert leader["expires"] > time.time()
        lock.release("sql-leader")
        assert beat_schedule(app)["leader"] is None
    finally:
        lock.close()
        app.close()
        made.clean()
