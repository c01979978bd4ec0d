"""Pool sizing with real processes: ``--autoscale`` grows a pool under load and shrinks
it back after the keepalive; ``grow``/``shrink`` change a running prefork pool."""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from support import lines, project_module, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.worker.main import Worker
from celeriac.worker.pools import PreforkPool, create_pool

TASKS = """
import os
import threading
import time

from proj import app, touch, wait_for_file


@app.task
def work(path, i, seconds):
    touch(path, str(i))
    time.sleep(seconds)
    return [os.getpid(), threading.current_thread().name]


@app.task
def hold(marker_dir, name):
    touch(os.path.join(marker_dir, "started"), f"{name}:{os.getpid()}")
    wait_for_file(os.path.join(marker_dir, "go"))
    return os.getpid()
"""

# Short enough for a quick test, long enough that a pool under load never looks idle.
KEEPALIVE = {"AUTOSCALE_KEEPALIVE": "1"}


@pytest.fixture
def tasks(project: Path) -> Iterator[Any]:
    with project_module(project, "scaleproj", TASKS) as module:
        yield module


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces: the fields after its closing parenthesis
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry))
    return found


def _burst(tasks: Any, ran: Path, count: int = 20) -> list[Any]:
    """``count`` slow tasks at once; each writes its number to ``ran`` when it runs."""
    return [tasks.work.delay(str(ran), i, 0.4) for i in range(count)]


def _each_ran_once(results: list[Any], ran: Path) -> list[Any]:
    values = [r.get(timeout=60) for r in results]
    assert sorted(map(int, lines(ran))) == list(range(len(results)))  # none lost or doubled
    return values


def test_prefork_grows_under_load_and_shrinks_back(tasks: Any, project: Path,
                                                   tmp_path: Path) -> None:
    with WorkerProcess("scaleproj", cwd=project, args=["--autoscale=4,1"],
                       env=KEEPALIVE) as worker:
        assert "1..4 (autoscale)" in worker.output
        assert wait_until(lambda: len(children_of(worker.pid)) == 1)
        results = _burst(tasks, tmp_path / "ran")
        assert wait_until(lambda: len(children_of(worker.pid)) == 4)
        pids = {pid for pid, _ in _each_ran_once(results, tmp_path / "ran")}
        assert len(pids) >= 3
        assert wait_until(lambda: len(children_of(worker.pid)) == 1)
        assert worker.wait_for_output("Scaling down")
        # the one left still serves, and the pool grows again for the next burst
        again = _burst(tasks, tmp_path / "again")
        assert wait_until(lambda: len(children_of(worker.pid)) >= 3)
        _each_ran_once(again, tmp_path / "again")
        assert "Traceback" not in worker.output


def test_threads_grow_under_load_and_shrink_back(tasks: Any, project: Path,
                                                 tmp_path: Path) -> None:
    with WorkerProcess("scaleproj", cwd=project, args=["-P", "threads", "--autoscale=4,1"],
                       env=KEEPALIVE) as worker:
        assert "1..4 (autoscale) · threads" in worker.output
        results = _burst(tasks, tmp_path / "ran")
        values = _each_ran_once(results, tmp_path / "ran")
        assert len({pid for pid, _ in values}) == 1
        assert len({thread for _, thread in values}) >= 3
        assert wait_until(lambda: re.search(r"Scaling down \d+ slot\(s\) to 1:",
                                            worker.output))
        assert "Traceback" not in worker.output


# -- grow and shrink on a running prefork pool, supervised by the test ---------------------------
@contextmanager
def running_pool(app: Any, **options: Any) -> Iterator[tuple[PreforkPool, Callable[..., bool]]]:
    """A prefork pool forked from this process; ``until(predicate)`` supervises it (as
    the worker's main thread does) until the predicate holds."""
    worker = Worker(app, pool="prefork", banner=False, **options)
    pool = create_pool(worker)
    assert isinstance(pool, PreforkPool)
    app.close()  # nothing of the test's own connections goes into the children

    def until(predicate: Callable[[], Any], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pool.supervise()
            if predicate():
                return True
            time.sleep(0.05)
        return False

    pool.start()
    try:
        yield pool, until
    finally:
        pool.warm_stop()
        if not until(lambda: not pool.alive()):
            pool.cold_stop()


def _started(marker: Path) -> dict[str, int]:
    return {name: int(pid) for name, pid in (line.split(":") for line in
                                             lines(marker / "started"))}


def test_grow_and_shrink_a_running_prefork_pool(tasks: Any, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with running_pool(tasks.app, concurrency=1) as (pool, until):
        assert until(lambda: len(pool.children) == 1)
        pool.grow(2)
        assert pool.size == 3 and until(lambda: len(pool.children) == 3)
        assert pool.info()["processes"] == sorted(pool.children)
        assert pool._rate_share() == pytest.approx(1 / 3)
        held = [tasks.hold.delay(str(marker), f"h{i}") for i in range(3)]
        # one task at a time per child: three held at once are in three processes
        assert until(lambda: len(_started(marker)) == 3)
        assert set(_started(marker).values()) == set(pool.children)

        pool.shrink(2)  # all busy: two finish their task, then stop
        assert pool.size == 1
        assert until(lambda: len(pool.retired) == 2)
        assert pool._rate_share() == 1.0
        assert len(pool.children) == 3  # still running their tasks
        (marker / "go").touch()
        assert until(lambda: all(r.ready() for r in held))
        assert sorted(r.get(timeout=5) for r in held) == sorted(_started(marker).values())
        assert until(lambda: len(pool.children) == 1 and not pool.retired)
        for _ in range(5):  # a few more rounds of supervision: nothing refills them
            pool.supervise()
            time.sleep(0.05)
        assert len(pool.children) == 1

        (marker / "go").unlink()
        (marker / "started").unlink()
        pool.grow()
        assert until(lambda: len(pool.children) == 2)
        busy = tasks.hold.delay(str(marker), "busy")
        assert until(lambda: "busy" in _started(marker))
        busy_pid = _started(marker)["busy"]
        pool.shrink()  # the idle child goes, the busy one stays
        assert until(lambda: list(pool.children) == [busy_pid])
        (marker / "go").touch()
        assert until(busy.ready) and busy.get(timeout=5) == busy_pid
        with pytest.raises(ValueError, match="below one slot"):
            pool.shrink()
