"""Redis killed and restarted under a running worker: no task lost, none run twice.

The server is the test's own (never the shared one) and keeps an append-only file
synced on every write, as a production Redis that must not lose queued work would.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess


@pytest.fixture
def server(durable_redis: dict[str, Any]) -> dict[str, Any]:
    return durable_redis


@pytest.fixture
def broker_url(durable_redis: dict[str, Any]) -> str:
    return str(durable_redis["url"])


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_rides_out_a_broker_restart(proj: Any, project: Path, server: dict[str, Any],
                                           pool: str) -> None:
    runs = project / "runs"
    count = 3000
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "2"]) as worker:
        assert proj.add.delay(1, 1).get(timeout=20) == 2
        with proj.app.batch_publish():  # all queued at once, so the kill falls mid-drain
            results = [proj.touch_and_return.delay(str(runs), i) for i in range(count)]
        assert wait_until(lambda: runs.exists() and len(lines(runs)) >= 100)
        server["proc"].send_signal(signal.SIGKILL)  # mid-drain, without warning
        server["proc"].wait()
        assert len(lines(runs)) < count  # the restart does fall in the middle
        with server["restart"]():
            # Waiting clients ride it out too: a get() started before the restart.
            late: list[Any] = []
            waiter = threading.Thread(target=lambda: late.append(
                results[-1].get(timeout=90)))
            waiter.start()
            values = [r.get(timeout=90) for r in results]
            waiter.join(90)
            assert values == list(range(count))
            assert late == [count - 1]
            # each task ran exactly once (one line per run)
            assert len(lines(runs)) == count
            assert worker.proc.poll() is None
            assert proj.add.delay(2, 2).get(timeout=30) == 4
