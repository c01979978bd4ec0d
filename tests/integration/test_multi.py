"""``celeriac multi`` with real detached workers: start, refuse a second start, stopwait,
restart, kill."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from celeriac.utils.daemon import pid_alive

HOST = socket.gethostname()


def celeriac(cwd: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_multi_start_runs_workers_and_stopwait_stops_them(proj: Any, project: Path) -> None:
    run = project / "run"
    files = [f"--pidfile={run}/%n.pid", f"--logfile={run}/%n%I.log"]
    # Celery's order: names, then the app and the worker's options
    start = ["multi", "start", "2", "-A", "proj", *files, "-P", "threads", "-c", "1",
             "-l", "info"]
    pidfiles = [run / "celery1.pid", run / "celery2.pid"]
    pids: list[int] = []
    try:
        done = celeriac(project, *start)
        pids.extend(p for p in map(pid_in, pidfiles) if p)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"\t> celery1@{HOST}: OK" in done.stdout
        assert f"\t> celery2@{HOST}: OK" in done.stdout
        assert len(pids) == 2 and all(map(pid_alive, pids))
        for name in ("celery1", "celery2"):
            log = run / f"{name}.log"
            assert wait_until(lambda: " ready." in read(log), 30), read(log)
        results = [proj.whoami.delay() for _ in range(4)]
        seen = {r.get(timeout=30)["hostname"] for r in results}
        assert seen <= {f"celery1@{HOST}", f"celery2@{HOST}"} and seen

        again = celeriac(project, *start)
        assert again.returncode == 1
        assert again.stdout.count("FAILED") == 2
        assert "already exists and its process" in again.stderr
        assert list(map(pid_in, pidfiles)) == pids

        stopped = celeriac(project, "multi", "stopwait", "2", *files)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for name, pid in zip(("celery1", "celery2"), pids):
            assert f"\t> {name}@{HOST}: TERM -> {pid}" in stopped.stdout
            assert f"\t> {name}@{HOST}: OK" in stopped.stdout
        assert not any(map(pid_alive, pids))
        assert not any(p.exists() for p in pidfiles)
    finally:
        kill_all(pids)


@pytest.mark.parametrize("broker_url", ["sqlite"], indirect=True)
def test_multi_restart_kill_and_stop(proj: Any, project: Path) -> None:
    files = ["--pidfile=%n.pid", "--logfile=%n%I.log"]
    worker = ["-P", "threads", "-c", "1"]
    pidfile = project / "w1.pid"
    pids: list[int] = []
    try:
        # the app before multi, for every node
        done = celeriac(project, "-A", "proj", "multi", "start", "w1", *files, *worker)
        assert done.returncode == 0, done.stdout + done.stderr
        first = pid_in(pidfile)
        assert first and pid_alive(first)
        pids.append(first)

        restarted = celeriac(project, "-A", "proj", "multi", "restart", "w1", *files,
                             *worker)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert f"> Restarting node w1@{HOST}: OK" in restarted.stdout
        second = pid_in(pidfile)
        assert second and second != first and pid_alive(second)
        pids.append(second)
        assert not pid_alive(first)
        assert proj.add.delay(20, 22).get(timeout=30) == 42

        killed = celeriac(project, "multi", "kill", "w1", *files)
        assert killed.returncode == 0
        assert f"Sending KILL to node w1@{HOST} ({second})" in killed.stdout
        assert wait_until(lambda: not pid_alive(second), 10)
        assert not pidfile.exists()

        down = celeriac(project, "multi", "stop", "w1", *files)
        assert down.returncode == 0 and f"> w1@{HOST}: DOWN" in down.stdout
    finally:
        kill_all(pids)


@pytest.mark.parametrize("broker_url", ["sqlite"], indirect=True)
def test_a_node_that_cannot_start_fails_the_start(project: Path) -> None:
    done = celeriac(project, "multi", "start", "w1", "-A", "no_such_module_x",
                    "--pidfile=%n.pid", "--logfile=%n%I.log")
    assert done.returncode == 1
    assert f"\t> w1@{HOST}: FAILED" in done.stdout
    assert "* Child terminated with exit code" in done.stdout
    assert "no_such_module_x" in done.stderr
    assert not (project / "w1.pid").exists()
