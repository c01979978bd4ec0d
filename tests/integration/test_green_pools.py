"""The gevent and eventlet pools, with real worker processes on SQLite and on Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import lines, project_module, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import TaskRevokedError, TimeLimitExceeded

pytestmark = pytest.mark.parametrize("pool", ["gevent", "eventlet"])

GREEN_TASKS = '''
import time

from celeriac.exceptions import SoftTimeLimitExceeded
from proj import app


@app.task(soft_time_limit=0.5)
def soft_sleeper():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "caught soft limit"
    return "slept"


@app.task(time_limit=1)
def hard_sleeper():
    time.sleep(30)
'''


@pytest.fixture
def green(project: Path) -> Iterator[Any]:
    with project_module(project, "greenproj", GREEN_TASKS) as module:
        yield module


def most_at_once(spans: list[list[float]]) -> int:
    """The largest number of spans that were open at one moment."""
    edges = sorted([(start, 1) for start, *_ in spans] + [(end, -1) for _, end, *_ in spans],
                   key=lambda edge: (edge[0], edge[1]))
    open_now = most = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_round_trip_and_failure(proj: Any, project: Path, pool: str) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "10"]) as worker:
        assert proj.add.delay(2, 2).get(timeout=20) == 4
        failed = proj.fail.delay("boom")
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=20)
        assert "ValueError: boom" in failed.traceback
        # AsyncResult.get() inside a task: it waits on its greenlet, the other runs
        assert proj.get_inside.delay(False).get(timeout=20) == 2
        assert f"({pool})" in worker.output  # the banner names the pool


def test_200_sleeping_tasks_run_at_once(proj: Any, project: Path, pool: str) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "200"]):
        results = [proj.span.delay(1.0) for _ in range(200)]
        spans = [r.get(timeout=60) for r in results]
    assert all(r.state == "SUCCESS" for r in results)
    assert len({pid for _, _, pid in spans}) == 1  # one process: greenlets, not forks
    assert most_at_once(spans) >= 100


def test_warm_shutdown_finishes_running_and_gives_back_the_rest(
        proj: Any, project: Path, tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    names = [f"t{i}" for i in range(20)]
    # -c 5 with the default multiplier (4) holds all 20: 5 run, 15 wait for a slot
    worker = WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "5"]).start()
    try:
        sent = [proj.block.delay(str(marker), name) for name in names]
        assert wait_until(lambda: len(lines(marker / "started")) == 5)
        worker.signal(signal.SIGTERM)
        assert worker.wait_for_output("Warm shutdown")
        assert worker.proc is not None and worker.proc.poll() is None  # still finishing
        (marker / "go").touch()
        assert worker.proc.wait(30) == 0
    finally:
        worker.kill()
    ran = lines(marker / "finished")
    assert len(ran) == 5
    # the 15 that never started went back to the queue; another worker runs them
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "20"]):
        assert [r.get(timeout=30) for r in sent] == names
    assert sorted(lines(marker / "started")) == sorted(names)  # none twice, none lost
    assert sorted(lines(marker / "finished")) == sorted(names)


def test_time_limits_end_the_task_on_its_greenlet(green: Any, project: Path,
                                                  pool: str) -> None:
    with WorkerProcess("greenproj", cwd=project, args=["-P", pool, "-c", "10"]) as worker:
        overrun = green.hard_sleeper.delay()
        assert green.soft_sleeper.delay().get(timeout=20) == "caught soft limit"
        with pytest.raises(TimeLimitExceeded):
            overrun.get(timeout=30)
        assert "exceeded its hard time limit" in worker.output
        assert green.app.send_task("proj.add", (1, 2)).get(timeout=20) == 3  # it goes on


def test_revoke_terminate_kills_the_greenlet(proj: Any, project: Path, tmp_path: Path,
                                            pool: str) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "10"]) as worker:
        victim = proj.block_late.delay(str(marker), "victim")
        other = proj.block.delay(str(marker), "other")
        assert wait_until(lambda: sorted(lines(marker / "started")) == ["other", "victim"])
        proj.app.control.revoke(victim.id, terminate=True)
        with pytest.raises(TaskRevokedError):
            victim.get(timeout=20)
        assert "Terminating task" in worker.output
        (marker / "go").touch()
        assert other.get(timeout=20) == "other"
    assert lines(marker / "finished") == ["other"]


def test_pool_chosen_in_settings_is_refused_unpatched(configure: Any, project: Path,
                                                      pool: str) -> None:
    configure(worker_pool=pool)
    with pytest.raises(RuntimeError, match=f"worker -P {pool}"):
        WorkerProcess("proj", cwd=project).start()


def test_missing_library_names_the_extra(tmp_path: Path, pool: str) -> None:
    hide_and_run = ("import sys\n"
                    f"sys.modules[{pool!r}] = None\n"
                    f"sys.argv = ['celeriac', '-A', 'proj', 'worker', '--pool={pool}']\n"
                    "from celeriac.cli.main import main\n"
                    "main()\n")
    done = subprocess.run([sys.executable, "-c", hide_and_run], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"pip install 'celeriac[{pool}]'" in done.stderr
