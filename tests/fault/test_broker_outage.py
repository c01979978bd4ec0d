"""The broker killed mid-drain under two workers, for less and for more than the lost
timeout: every task runs exactly once, on the same workers, never restarted."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess


def runs_per_value(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in lines(path):
        counts[value] = counts.get(value, 0) + 1
    return counts


@pytest.fixture
def broker_url(durable_redis: dict[str, Any]) -> str:
    return str(durable_redis["url"])


# Outages shorter and longer than the test app's worker_lost_timeout (3 s): after the
# long one, no worker may take the others for dead because nobody could beat meanwhile.
# acks_late tasks (touch_late), and early-acked ones (touch_early), whose acks fail
# with the broker gone.
@pytest.mark.parametrize("outage, task", [(0.5, "touch_late"), (7.0, "touch_late"),
                                          (3.0, "touch_early")])
def test_two_workers_ride_out_a_broker_outage_each_task_once(
        proj: Any, project: Path, durable_redis: dict[str, Any], outage: float,
        task: str) -> None:
    runs = project / "runs"
    count = 1500
    first = WorkerProcess("proj", cwd=project, args=["-c", "2", "-n", "one@%h"])
    second = WorkerProcess("proj", cwd=project, args=["-c", "2", "-n", "two@%h"])
    with first, second:
        with proj.app.batch_publish():  # all queued at once, so the kill falls mid-drain
            results = [getattr(proj, task).delay(str(runs), i) for i in range(count)]
        assert wait_until(lambda: len(lines(runs)) >= 150)
        durable_redis["proc"].send_signal(signal.SIGKILL)
        durable_redis["proc"].wait()
        assert len(lines(runs)) < count  # the kill does fall in the middle
        time.sleep(outage)
        with durable_redis["restart"]():
            values = [r.get(timeout=120) for r in results]
            assert values == list(range(count))  # nothing lost
            doubled = {v: n for v, n in runs_per_value(runs).items() if n > 1}
            assert doubled == {}  # nothing run twice
            assert len(lines(runs)) == count
            # the same workers, never restarted, still serve
            assert first.proc.poll() is None and second.proc.poll() is None
            assert proj.add.delay(2, 2).get(timeout=30) == 4
        # The outage is told as changes of state, not a line per retry: at most a
        # line down and a line back per consumer, heartbeat and supervisor.
        for worker in (first, second):
            told = [line for line in worker.output.splitlines() if "rror" in line
                    or "unreachable" in line or "reachable again" in line]
            assert len(told) <= 12, told


