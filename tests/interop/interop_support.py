"""Helpers for the interop tests: a Celery worker process, Redis clean-up, waiting."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from celeriac.contrib.testing import WorkerProcess

APPS_DIR = Path(__file__).parent / "apps"

# The queues the tests use; their lists (and priority sub-lists) are emptied per test.
QUEUES = ("celery", "interop.other", "interop.unserved", "interop.prio")
SEP = "\x06\x16"


class CeleryWorkerProcess(WorkerProcess):
    """``celery -A <app> worker`` as a subprocess: celeriac's WorkerProcess contract
    (ready on ``ready.``, SIGTERM on leaving, then the process group killed)."""

    def __init__(self, app: str, cwd: str | os.PathLike[str] | None = None,
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 loglevel: str = "INFO", ready_timeout: float = 60.0) -> None:
        super().__init__(app, cwd=cwd, args=args, env=env, loglevel=loglevel,
                         ready_timeout=ready_timeout)
        self.command = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", loglevel,
                        "--without-mingle", "--without-gossip", *args]


def worker(kind: str, name: str, args: Sequence[str] = ()) -> Any:
    """A not yet started worker of ``kind`` ('celery' or 'celeriac') on the test apps."""
    if kind == "celery":
        return CeleryWorkerProcess("interop_celery", cwd=APPS_DIR, env=worker_env(),
                                   args=["-n", f"{name}@%h", *args])
    return WorkerProcess("interop_celeriac", cwd=APPS_DIR, env=worker_env(),
                         args=["-n", f"{name}@%h", *args])


def worker_env() -> dict[str, str]:
    """Environment for worker subprocesses: the app modules importable, nothing else."""
    path = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def clear_messages(broker: Any) -> None:
    """Empty the test queues, the delayed set and the dead-letter list.

    Bindings, consumer records and in-flight hashes are left alone: running workers
    own them.
    """
    keys = [f"{q}{SEP}{step}" if step else q for q in QUEUES for step in (0, 3, 6, 9)]
    broker.delete(*keys, "celeriac.delayed", "celeriac.dead")


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)
