"""Worker settings a Celery user relies on, each seen doing what Celery's does."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import WorkerLostError


def test_worker_disable_rate_limits(configure: Any, project: Path) -> None:
    proj = configure(worker_disable_rate_limits=True)
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        # 1/m would hold the second and third for minutes
        results = [proj.once_a_minute.delay(i) for i in range(3)]
        assert [r.get(timeout=30) for r in results] == [0, 1, 2]


def test_task_default_rate_limit(configure: Any, project: Path) -> None:
    proj = configure(task_default_rate_limit="1/m")
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        first, second = proj.add.delay(1, 1), proj.add.delay(2, 2)
        assert first.get(timeout=30) == 2
        time.sleep(1.5)
        assert second.state == "PENDING"  # the next start is a minute after the first


def test_task_acks_on_failure_or_timeout_off_sets_a_failed_message_aside(
        configure: Any, project: Path) -> None:
    proj = configure(task_acks_on_failure_or_timeout=False)
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        failed = proj.fail_late.delay("boom")
        with pytest.raises(ValueError):
            failed.get(timeout=30)
        broker = proj.app.connect_broker()
        # the result is stored first, the message set aside just after
        assert wait_until(lambda: [d for d in broker.dead_letters() if failed.id in d.payload
                                   and "acks_on_failure" in d.reason])
        ok = proj.touch_late.delay(str(project / "ok"), 1)  # acked as usual
        assert ok.get(timeout=30) == 1
    assert not [d for d in proj.app.connect_broker().dead_letters() if ok.id in d.payload]


def test_task_reject_on_worker_lost_false_records_the_loss_as_celery_does(
        configure: Any, project: Path, tmp_path: Path) -> None:
    proj = configure(task_reject_on_worker_lost=False)
    marker = tmp_path / "died"
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        lost = proj.exit_process.delay(str(marker))
        with pytest.raises(WorkerLostError):
            lost.get(timeout=30)
        assert proj.add.delay(1, 2).get(timeout=30) == 3
    assert lines(marker) == ["died"]  # acked and recorded, not run again


def test_worker_deduplicate_successful_tasks(configure: Any, project: Path) -> None:
    from celeriac import messages

    proj = configure(worker_deduplicate_successful_tasks=True)
    runs = project / "runs"
    done_id = str(uuid.uuid4())
    # As if a lost worker had run it and stored SUCCESS, but not acked its message:
    proj.app.backend.mark_as_done(done_id, "first run")
    again = messages.task_message("proj.touch_late", done_id, [str(runs), "again"])
    broker = proj.app.producer_broker()
    broker.publish(proj.app.conf.task_default_queue, messages.encode_envelope(again))
    fresh = proj.touch_late.delay(str(runs), "fresh")
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        assert fresh.get(timeout=30) == "fresh"
        assert proj.app.AsyncResult(done_id).get(timeout=30) == "first run"
        assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 0
    assert lines(runs) == ["fresh"]  # the duplicate did not run
