"""RabbitMQ as Celery declares it: priorities, quorum queues, exchanges and routing keys,
clashing declarations, unroutable messages, poison messages, with real workers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import WorkerLostError

pytestmark = pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)


@contextmanager
def channel() -> Iterator[Any]:
    import amqp

    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()


def queue_arguments(name: str) -> dict[str, str]:
    """``rabbitmqctl``'s view of a queue: its type and arguments."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "type", "arguments"],
                         capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if parts and parts[0] == name:
            return {"type": parts[1], "arguments": parts[2] if len(parts) > 2 else ""}
    raise AssertionError(f"no queue {name!r} in {out!r}")


def test_priority_higher_number_runs_first(configure: Any, tmp_path: Path, project: Path) -> None:
    proj = configure(task_queue_max_priority=10)
    order = tmp_path / "order"
    for priority in (9, 6, 0, 3):  # queued before any worker runs: RabbitMQ orders them
        proj.record.apply_async((str(order), str(priority)), priority=priority)
    with WorkerProcess("proj", cwd=project, args=["-P", "solo", "--prefetch-multiplier", "1"]):
        assert wait_until(lambda: len(lines(order)) == 4)
    assert lines(order) == ["9", "6", "3", "0"]
    assert "x-max-priority" in queue_arguments(proj.app.conf.task_default_queue)["arguments"]


def test_a_clashing_declaration_is_named_at_start_up(proj: Any, project: Path) -> None:
    name = proj.app.conf.task_default_queue
    with channel() as ch:
        ch.queue_declare(name, durable=True, auto_delete=False,
                         arguments={"x-max-priority": 5})
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-P",
                           "solo"], cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert name in done.stderr and "x-max-priority" in done.stderr


def test_quorum_default_queue_runs_tasks_and_countdowns(configure: Any,
                                                        project: Path) -> None:
    proj = configure(task_default_queue_type="quorum")
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert proj.add.delay(2, 3).get(timeout=20) == 5
        assert proj.add.apply_async((1, 1), countdown=1).get(timeout=30) == 2
    assert queue_arguments(proj.app.conf.task_default_queue)["type"] == "quorum"


def test_a_countdown_waits_in_rabbitmq_not_in_the_worker(proj: Any, project: Path) -> None:
    # Sent while no worker runs; the worker started after it still gets it, when due.
    later = proj.add.apply_async((4, 4), countdown=2)
    with channel() as ch:
        assert ch.queue_declare(proj.app.conf.task_default_queue, passive=True)[1] == 0
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert later.get(timeout=30) == 8


def test_routes_through_a_topic_exchange(configure: Any, project: Path) -> None:
    base = f"t-{uuid.uuid4().hex[:8]}"
    proj = configure(source=(
        "\nfrom celeriac import Exchange, Queue\n"
        f"feed = Exchange({base + '-x'!r}, type='topic')\n"
        f"app.conf.task_queues = [Queue(app.conf.task_default_queue),"
        f" Queue({base + '-feed'!r}, feed, routing_key='feed.#')]\n"
        f"app.conf.task_routes = {{'proj.add': {{'exchange': {base + '-x'!r},"
        f" 'routing_key': 'feed.news', 'queue': {base + '-feed'!r}}}}}\n"))
    try:
        with WorkerProcess("proj", cwd=project,
                           args=["-P", "solo", "-Q", f"{base}-feed"]):
            assert proj.add.delay(20, 22).get(timeout=20) == 42
    finally:
        with channel() as ch:
            ch.queue_delete(f"{base}-feed")
            ch.exchange_delete(f"{base}-x")


def test_an_unroutable_message_is_an_error_not_a_silent_loss(configure: Any) -> None:
    base = f"u-{uuid.uuid4().hex[:8]}"
    proj = configure(source=(
        "\nfrom celeriac import Exchange, Queue\n"
        f"feed = Exchange({base + '-x'!r}, type='topic')\n"
        f"app.conf.task_queues = [Queue({base + '-feed'!r}, feed, routing_key='feed.#')]\n"
        f"app.conf.task_routes = {{'proj.add': {{'exchange': {base + '-x'!r},"
        f" 'routing_key': 'sport.news', 'queue': {base + '-feed'!r}}}}}\n"))
    try:
        with pytest.raises(ConnectionError, match="could not route"):
            proj.add.apply_async((1, 2), retry=False)
    finally:
        with channel() as ch:
            ch.queue_delete(f"{base}-feed")
            ch.exchange_delete(f"{base}-x")


POISON = '''
import os

app.conf.broker_max_redeliveries = 2


@app.task(acks_late=True)
def kills_its_worker():
    os._exit(1)
'''


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_message_that_keeps_killing_workers_is_set_aside(configure: Any, project: Path,
                                                           queue_type: str) -> None:
    proj = configure(source=POISON, task_default_queue_type=queue_type)
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]) as worker:
        poison = proj.kills_its_worker.delay()
        with pytest.raises(WorkerLostError, match="lost 2 times"):
            poison.get(timeout=60)
        assert proj.add.delay(1, 1).get(timeout=20) == 2  # the others are unharmed
        assert "probable poison message" in worker.output
    dead = proj.app.connect_broker().dead_letters()
    assert any(poison.id in d.payload and "lost 2 times" in d.reason for d in dead)


def test_a_global_rate_limit_is_refused_at_start_up(configure: Any, project: Path) -> None:
    configure(source="\n@app.task(global_rate_limit='2/s')\ndef throttled():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-P",
                           "solo"], cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "proj.throttled" in done.stderr and "RateReservations" in done.stderr


def test_the_readme_example_runs(tmp_path: Path, broker_url: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- rabbitmq-example -->", 1)[1].split("```python\n", 1)[1]
    (tmp_path / "rabbit_tasks.py").write_text(block.split("```", 1)[0])
    queue = "rabbit-example"
    try:
        with WorkerProcess("rabbit_tasks", cwd=tmp_path, args=["-P", "solo"]):
            done = subprocess.run(
                [sys.executable, "-c", "from rabbit_tasks import add; "
                 "print(add.delay(2, 3).get(timeout=10))"],
                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "5", done.stderr
    finally:
        with channel() as ch:
            ch.queue_delete(queue)


def test_a_failover_list_skips_a_dead_server(configure: Any, project: Path) -> None:
    proj = configure(source=("\napp.conf.broker_url = "
                             "'amqp://guest:guest@127.0.0.1:1//;"
                             "amqp://guest:guest@127.0.0.1:5672//'\n"))
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert proj.add.delay(1, 2).get(timeout=20) == 3


def test_purge_empties_the_queue(proj: Any, project: Path) -> None:
    for i in range(3):
        proj.add.delay(i, i)
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "purge", "-f"],
                          cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Purged 3 message(s)" in done.stdout
    assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 0


def test_an_unreachable_rabbitmq_is_said_at_start_up(configure: Any, project: Path) -> None:
    configure(source="\napp.conf.broker_url = 'amqp://guest:guest@127.0.0.1:1//'\n",
              broker_connection_retry_on_startup=False)
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-P",
                           "solo"], cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "127.0.0.1:1" in done.stderr and "Connection refused" in done.stderr
