"""``worker --detach``/``beat --detach``, pidfiles, ``--umask``, ``--workdir`` and the
``worker_pidfile``... settings, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.utils.daemon import pid_alive

IS_ROOT = os.geteuid() == 0
NOGROUP = 65534


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    """Detaching does not depend on the broker: SQLite only, to keep these fast."""
    return f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"


def celeriac(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextmanager
def reaped(*pidfiles: Path) -> Iterator[list[int]]:
    """Every pid seen in ``pidfiles`` (tests add to the list) is SIGKILLed at the end."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for path in pidfiles:
            pid = pid_in(path)
            if pid:
                pids.append(pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def stop(pid: int, pidfile: Path) -> None:
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_alive(pid), 30)
    assert wait_until(lambda: not pidfile.exists(), 5), "the pidfile is removed at exit"


def test_detach_returns_at_once_while_the_worker_runs(proj: Any, project: Path) -> None:
    pidfile, logfile = project / "w.pid", project / "w.log"
    with reaped(pidfile):
        done = celeriac(project, "-A", "proj", "worker", "--detach", "-P", "threads",
                        "-c", "1", "--pidfile", str(pidfile), "-f", str(logfile))
        assert done.returncode == 0, done.stderr
        # the starter waited for the pidfile only: it is there already, the worker alive
        pid = pid_in(pidfile)
        assert pid and pid_alive(pid)
        assert os.getsid(pid) != os.getsid(0), "the daemon has a session of its own"
        assert proj.add.delay(2, 2).get(timeout=30) == 4
        assert wait_until(lambda: " ready." in read(logfile), 10), read(logfile)
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)}
        assert fds == {0: os.devnull, 1: os.devnull, 2: str(logfile)}
        stop(pid, pidfile)


def test_detach_without_a_logfile_logs_to_the_node_name(proj: Any, project: Path) -> None:
    pidfile = project / "d.pid"
    with reaped(pidfile):
        done = celeriac(project, "-A", "proj", "worker", "-D", "-P", "threads", "-c", "1",
                        "-n", "dnode@%h", "--pidfile", str(pidfile))
        assert done.returncode == 0, done.stderr
        logfile = project / "dnode.log"  # %n%I.log, as celery multi's default
        assert wait_until(lambda: " ready." in read(logfile), 30), read(logfile)
        stop(pid_in(pidfile) or 0, pidfile)


def test_stale_pidfile_is_replaced_and_a_live_one_refuses(proj: Any, project: Path) -> None:
    pidfile, logfile = project / "w.pid", project / "w.log"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    args = ["-A", "proj", "worker", "-P", "threads", "-c", "1", "--pidfile", str(pidfile),
            "-f", str(logfile)]
    with reaped(pidfile):
        done = celeriac(project, *args, "--detach")
        assert done.returncode == 0, done.stderr
        assert f"stale pidfile {pidfile}: process {dead.pid} is not running" in done.stderr
        pid = pid_in(pidfile)
        assert pid and pid != dead.pid and pid_alive(pid)

        for again in ([*args, "--detach"], args):  # detached or not: refused
            refused = celeriac(project, *again)
            assert refused.returncode == 73, refused.stderr
            assert f"the pidfile {pidfile} already exists and its process {pid} is alive" \
                in refused.stderr
            assert pid_in(pidfile) == pid
        assert proj.add.delay(1, 2).get(timeout=30) == 3
        stop(pid, pidfile)


def test_workdir_umask_and_the_worker_settings(configure: Any, project: Path,
                                               tmp_path: Path) -> None:
    settings: dict[str, Any] = {"worker_pidfile": "%n.pid", "worker_logfile": "%n%I.log",
                                "worker_umask": "077"}
    if IS_ROOT:  # the user stays root, the group changes: seen on the files it creates
        settings.update(worker_uid="root", worker_gid="nogroup")
    proj = configure(**settings)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pidfile, logfile = project / "set.pid", project / "set.log"
    with reaped(pidfile):
        # Celery 4's order: the program's options after the command name
        done = celeriac(elsewhere, "worker", "--workdir", str(project), "-A", "proj",
                        "--detach", "-P", "threads", "-c", "1", "-n", "set@%h")
        assert done.returncode == 0, done.stderr
        pid = pid_in(pidfile)
        assert pid and pid_alive(pid), list(project.iterdir())
        assert wait_until(lambda: " ready." in read(logfile), 30), read(logfile)
        assert proj.add.delay(3, 4).get(timeout=30) == 7
        assert os.readlink(f"/proc/{pid}/cwd") == str(project)
        for path in (pidfile, logfile):
            assert path.stat().st_mode & 0o777 == 0o600, path
            if IS_ROOT:
                assert path.stat().st_gid == NOGROUP, path
        assert not list(elsewhere.iterdir())
        stop(pid, pidfile)


def test_beat_detaches_with_its_settings(configure: Any, project: Path) -> None:
    settings: dict[str, Any] = {"beat_pidfile": "beat.pid", "beat_logfile": "beat.log",
                                "beat_umask": 0o027}
    if IS_ROOT:
        settings.update(beat_uid="0", beat_gid=str(NOGROUP))
    configure(**settings)
    pidfile, logfile = project / "beat.pid", project / "beat.log"
    with reaped(pidfile):
        done = celeriac(project, "beat", "-A", "proj", "--detach", "-l", "info")
        assert done.returncode == 0, done.stderr
        pid = pid_in(pidfile)
        assert pid and pid_alive(pid)
        assert wait_until(lambda: "beat" in read(logfile).lower(), 30), read(logfile)
        for path in (pidfile, logfile):
            assert path.stat().st_mode & 0o777 == 0o640, path
            if IS_ROOT:
                assert path.stat().st_gid == NOGROUP, path
        stop(pid, pidfile)


def test_pidfile_without_detach_is_written_and_removed(proj: Any, project: Path) -> None:
    pidfile = project / "fg.pid"
    worker = WorkerProcess("proj", cwd=project,
                           args=["-P", "threads", "-c", "1", "--pidfile", str(pidfile)])
    with worker:
        assert pid_in(pidfile) == worker.pid
        assert proj.add.delay(5, 5).get(timeout=30) == 10
        worker.stop()
        assert not pidfile.exists()
