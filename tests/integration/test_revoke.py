"""Revocation: queued, scheduled and running tasks; kept in the broker across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import lines, wait_until  # noqa: E402

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import TaskRevokedError

# Also run on RabbitMQ (tests/conftest.py).
BROKERS_ALSO = ("amqp", "postgresql")


def test_revoked_queued_and_eta_tasks_do_not_run(proj: Any, project: Path,
                                                 tmp_path: Path) -> None:
    queued = proj.quiet.delay(str(tmp_path))
    later = proj.add.apply_async((1, 2), countdown=1)
    kept = proj.add.delay(2, 2)
    queued.revoke()
    proj.app.control.revoke([later.id])
    # the worker starts after the revocations were made: they live in the broker
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert kept.get(timeout=20) == 4
        with pytest.raises(TaskRevokedError):
            later.get(timeout=20)
        assert wait_until(lambda: queued.state == "REVOKED")
    assert not (tmp_path / "quiet").exists()


def test_revocations_survive_a_worker_restart(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert proj.add.delay(1, 1).get(timeout=20) == 2
    doomed = proj.add.apply_async((5, 5), countdown=0.5)
    proj.app.control.revoke(doomed.id)
    with WorkerProcess("proj", cwd=project, args=["-P", "threads"]):
        with pytest.raises(TaskRevokedError):
            doomed.get(timeout=20)


def test_terminate_a_running_task(proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]) as worker:
        running = proj.block_late.delay(str(marker), "victim")
        assert wait_until(lambda: lines(marker / "started") == ["victim"])
        proj.app.control.revoke(running.id, terminate=True, signal="SIGKILL")
        with pytest.raises(TaskRevokedError):
            running.get(timeout=20)
        assert "Terminating task" in worker.output
        assert proj.add.delay(3, 3).get(timeout=20) == 6  # a new pool process serves
    # terminated, not requeued: it never finished and did not start again
    assert lines(marker / "started") == ["victim"]
    assert not (marker / "finished").exists()


def test_revoke_without_terminate_lets_a_running_task_finish(proj: Any, project: Path,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        running = proj.block.delay(str(marker), "survivor")
        assert wait_until(lambda: lines(marker / "started") == ["survivor"])
        proj.app.control.revoke(running.id)
        (marker / "go").touch()
        assert running.get(timeout=20) == "survivor"
