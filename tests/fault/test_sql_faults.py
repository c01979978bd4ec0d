"""The PostgreSQL broker under fault: the database crashes mid-drain, a worker is killed
mid-drain. Each run counts the tasks lost (no result) and doubled (run twice).

The database is a private cluster (tests/pg_node.py) on a free port, never the shared
one; results go to the shared Redis (db 13, keyed by task id).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from pg_node import PGNode, private_postgresql
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess

# one broker, the private cluster (not the sqlite/redis pair conftest gives by default)
pytestmark = pytest.mark.parametrize("broker_url", ["private-postgresql"], indirect=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[PGNode]:
    with private_postgresql() as node:
        yield node


@pytest.fixture
def broker_url(pg: PGNode, redis_server: str) -> str:
    if not pg.answers():  # a test that failed between crash and start
        pg.start()
    return pg.url


def tally(runs: Path, count: int) -> tuple[int, int]:
    """``(lost, doubled)`` of tasks 0..count-1, from the one line each run leaves."""
    seen = [int(v) for v in lines(runs)]
    lost = len(set(range(count)) - set(seen))
    return lost, len(seen) - len(set(seen))


@pytest.mark.parametrize("task", ["touch_late", "touch_early"])
def test_worker_rides_out_a_database_crash_mid_drain(proj: Any, project: Path,
                                                     pg: PGNode, task: str) -> None:
    runs = project / "runs"
    count = 1500
    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "2"]) as worker:
        assert proj.add.delay(1, 1).get(timeout=20) == 2
        with proj.app.batch_publish():  # all queued at once, so the crash falls mid-drain
            results = [getattr(proj, task).delay(str(runs), i) for i in range(count)]
        assert wait_until(lambda: len(lines(runs)) >= 150)
        pg.crash()  # no checkpoint, no goodbye to the clients
        assert len(lines(runs)) < count  # the crash does fall in the middle
        time.sleep(1.0)  # the worker meets the outage: fetches, acks and beats fail
        # A client waiting for a result meanwhile (results are in Redis) rides it out.
        late: list[Any] = []
        waiter = threading.Thread(target=lambda: late.append(results[-1].get(timeout=120)))
        waiter.start()
        pg.start()  # same data: recovery replays the WAL
        values = [r.get(timeout=120) for r in results]
        waiter.join(120)
        assert values == list(range(count))
        assert late == [count - 1]
        lost, doubled = tally(runs, count)
        print(f"database crash mid-drain ({task}): {lost} lost, {doubled} doubled of {count}; "
              f"worker log: {worker.output.count('unreachable')} outage lines")
        # Every run's ack (late or early) is kept and said again once the database is
        # back; what the crash undid of the acks committed without waiting for their
        # flush is redone from the consumer's ledger; the worker's rows are not
        # reclaimed (everyone was silent, so no one is judged dead): nothing runs twice.
        assert (lost, doubled) == (0, 0), worker.output[-6000:]
        assert worker.proc.poll() is None
        assert proj.add.delay(2, 2).get(timeout=30) == 4
    assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 0


def test_killed_worker_messages_come_back_through_another_workers_heartbeat(
        proj: Any, project: Path) -> None:
    runs = project / "runs"
    count = 300
    doomed = WorkerProcess("proj", cwd=project,
                           args=["-P", "solo", "-n", "doomed@%h", "--prefetch-multiplier", "8"])
    survivor = WorkerProcess("proj", cwd=project, args=["-P", "solo", "-n", "survivor@%h"])
    with doomed, survivor:
        with proj.app.batch_publish():
            results = [proj.touch_late.delay(str(runs), i) for i in range(count)]
        assert wait_until(lambda: len(lines(runs)) >= 60)
        doomed.kill()  # SIGKILL: what it fetched stays marked with its consumer id
        values = [r.get(timeout=120) for r in results]
        assert values == list(range(count))
    lost, doubled = tally(runs, count)
    print(f"worker killed mid-drain: {lost} lost, {doubled} doubled of {count}")
    # Only the task the killed worker was running may run again (acks_late); the ones
    # it had prefetched never ran, and come back once.
    assert lost == 0
    assert doubled <= 1
