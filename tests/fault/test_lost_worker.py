"""A worker that dies does not take its messages with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from support import lines, wait_until  # noqa: E402

from celeriac.contrib.testing import WorkerProcess


def test_killed_worker_messages_go_to_another_worker(proj: Any, project: Path,
                                                     tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    first = WorkerProcess("proj", cwd=project, args=["-P", "solo", "--prefetch-multiplier", "4"])
    first.start()
    try:
        running = proj.block_late.delay(str(marker), "late")
        queued = [proj.add.delay(i, 1) for i in range(3)]
        assert wait_until(lambda: lines(marker / "started") == ["late"])
        first.kill()  # SIGKILL: no chance to give anything back
    finally:
        first.kill()
    (marker / "go").touch()
    # A second worker notices the first one's heartbeat stopped and takes over its
    # unacked messages: the acks_late task runs again, the prefetched ones run once.
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert running.get(timeout=60) == "late"
        assert [r.get(timeout=60) for r in queued] == [1, 2, 3]
    assert lines(marker / "started") == ["late", "late"]


def test_killed_pool_process_is_replaced_and_its_messages_returned(
        proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]) as worker:
        child = proj.pid.delay().get(timeout=20)
        late = proj.block_late.delay(str(marker), "again")
        assert wait_until(lambda: lines(marker / "started") == ["again"])
        os.kill(child, signal.SIGKILL)
        assert worker.wait_for_output("exited with signal 9")
        (marker / "go").touch()
        assert late.get(timeout=30) == "again"
        assert proj.pid.delay().get(timeout=20) != child
    assert lines(marker / "started") == ["again", "again"]
