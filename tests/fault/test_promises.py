"""The README's promises, each broken on purpose and counted: tasks lost, tasks run twice.

Each test kills something a production worker meets sooner or later (the worker's main
process, a pool process) or starves what keeps a worker looking alive, and asserts that
every task ran exactly once (or was recorded as failed with a reason). On SQLite and on
Redis. The broker's own outages are in test_broker_outage.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import WorkerLostError


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- what keeps a worker looking alive ---------------------------------------------------------
def test_a_task_holding_the_gil_past_the_lost_timeout_runs_once(
        proj: Any, project: Path, tmp_path: Path) -> None:
    # 6 s inside one C call that keeps the GIL: the pool process's own heartbeat
    # thread cannot run, for twice the test app's worker_lost_timeout (3 s). A second
    # pool process (and a second worker) are there to take it for dead if they could.
    marker = tmp_path / "gil"
    with WorkerProcess("proj", cwd=project, args=["-c", "2"]), \
            WorkerProcess("proj", cwd=project, args=["-c", "1", "-n", "other@%h"]):
        result = proj.hold_gil.delay(str(marker), 6)
        assert isinstance(result.get(timeout=60), int)
        time.sleep(1.0)  # a second run, had there been one, would have started by now
    assert lines(marker) == ["start"]


# -- poison ----------------------------------------------------------------------------------
def test_poison_message_is_set_aside_without_harming_those_behind_it(
        proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "poison"
    with proj.app.batch_publish():  # the poison and three innocents in one fetch
        poison = proj.exit_process.delay(str(marker))
        innocents = [proj.add.delay(i, i) for i in range(3)]
    with WorkerProcess("proj", cwd=project, args=["-c", "1", "--prefetch-multiplier", "4"]):
        assert [r.get(timeout=90) for r in innocents] == [0, 2, 4]
        with pytest.raises(WorkerLostError) as info:
            poison.get(timeout=90)
        assert "poison" in str(info.value)
    # five deliveries (broker_max_redeliveries), each killed its process; no more
    assert lines(marker) == ["died"] * 5
    dead = proj.app.connect_broker().dead_letters()
    assert [d.payload for d in dead if poison.id in d.payload]
    assert not [d for d in dead if any(r.id in d.payload for r in innocents)]


# -- the main process dies -------------------------------------------------------------------------
def test_pool_processes_stop_when_the_main_process_is_killed(
        proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    worker = WorkerProcess("proj", cwd=project, args=["-c", "2"])
    with worker:
        running = proj.block_late.delay(str(marker), "held")
        assert wait_until(lambda: lines(marker / "started") == ["held"])
        children = children_of(worker.pid)
        assert len(children) == 2
        worker.signal(signal.SIGKILL)  # the main process only
        worker.proc.wait()
        # The idle child leaves at once; the busy one finishes its task first.
        assert wait_until(lambda: sum(alive(c) for c in children) <= 1, timeout=30)
        late = [proj.pid.delay() for _ in range(20)]
        (marker / "go").touch()
        assert wait_until(lambda: not any(alive(c) for c in children), timeout=30)
        assert running.get(timeout=30) == "held"
    # Nobody consumed while orphaned: a new worker runs all that was sent meanwhile.
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        pids = [r.get(timeout=60) for r in late]
    assert not set(pids) & set(children)


# -- an idle slot never waits while a sibling holds the work -----------------------------------------
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_burst_of_n_tasks_runs_on_n_slots_at_once(proj: Any, project: Path,
                                                    pool: str) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "3",
                                                  "--prefetch-multiplier", "4"]):
        assert proj.add.delay(1, 1).get(timeout=30) == 2
        for _ in range(5):
            with proj.app.batch_publish():
                burst = [proj.span.delay(1.0) for _ in range(3)]
            spans = [r.get(timeout=30) for r in burst]
            # all three started before any of them ended: no slot waited for another
            assert max(s[0] for s in spans) < min(s[1] for s in spans), spans


# -- the whole worker dies with early-acked tasks running ----------------------------------------
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_an_early_acked_task_killed_with_its_worker_is_recorded_as_lost(
        proj: Any, project: Path, tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    first = WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "1",
                                                     "--prefetch-multiplier", "4"])
    with first:
        running = proj.block.delay(str(marker), "early")  # acked when it starts
        behind = [proj.add.delay(i, 1) for i in range(3)]
        assert wait_until(lambda: lines(marker / "started") == ["early"])
        first.kill()  # the main process and its pool processes, at once
    # The next worker finds the first one dead: the task that was running is not run
    # again (its message was acked), but its caller learns it was lost.
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        with pytest.raises(WorkerLostError):
            running.get(timeout=60)
        assert [r.get(timeout=60) for r in behind] == [1, 2, 3]
    assert lines(marker / "started") == ["early"]
