"""The path of one task through a real worker process, on SQLite and on Redis."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import lines, load_proj, wait_until  # noqa: F401 - load_proj for test_canvas

from celeriac import messages
from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import ContentDisallowed, NotRegistered

# Also run on RabbitMQ (tests/conftest.py).
BROKERS_ALSO = ("amqp", "postgresql")


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_delay_get_round_trip(proj: Any, project: Path, pool: str) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "2"]):
        result = proj.add.delay(4, 4)
        assert result.get(timeout=20) == 8
        assert result.ready() and result.successful() and not result.failed()
        assert result.state == result.status == "SUCCESS"
        assert result.traceback is None
        assert proj.app.AsyncResult(result.id).get(timeout=5) == 8
        assert proj.add.AsyncResult(result.id).result == 8


def test_failure_comes_back_as_the_original_exception(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        failed = proj.fail.delay("boom")
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=20)
        assert failed.state == "FAILURE" and failed.failed()
        assert "ValueError: boom" in failed.traceback
        assert isinstance(failed.result, ValueError)

        custom = proj.fail_custom.delay("mine")
        with pytest.raises(proj.CustomError, match="mine"):
            custom.get(timeout=20)
        assert isinstance(custom.get(propagate=False), proj.CustomError)


def test_request_context_and_send_task(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo", "-n", "node1@%h"]):
        info = proj.whoami.apply_async((1, 2), {"k": "v"}).get(timeout=20)
        assert info["args"] == [1, 2] and info["kwargs"] == {"k": "v"}
        assert info["retries"] == 0 and info["is_eager"] is False
        assert info["hostname"].startswith("node1@")
        assert info["routing_key"] == proj.app.conf.task_default_queue
        assert info["root_id"] == info["id"]
        by_name = proj.app.send_task("proj.add", args=[2, 3])
        assert by_name.get(timeout=20) == 5


def test_async_tasks_run_concurrently(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "asyncio", "-c", "50"]):
        results = [proj.nap.delay(1.0) for _ in range(20)]
        spans = [r.get(timeout=30) for r in results]
    # every nap started before any finished: they ran at once, not one after another
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_concurrent_async_tasks_each_see_their_own_request(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "asyncio", "-c", "20"]):
        results = [proj.whoami_async.delay(0.3) for _ in range(10)]
        seen = [r.get(timeout=30) for r in results]
    assert seen == [[r.id, r.id] for r in results]


def test_async_tasks_in_the_default_pool(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        spans = [r.get(timeout=30) for r in [proj.nap.delay(1.0) for _ in range(4)]]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_states_started_and_custom(proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        started = proj.started_then_wait.delay(str(marker))
        assert wait_until(lambda: started.state == "STARTED")
        assert started.info["hostname"] and started.info["pid"]
        (marker / "go").touch()
        assert started.get(timeout=20) == "ok"
        (marker / "go").unlink()
        progressing = proj.progress.delay(str(marker))
        assert wait_until(lambda: progressing.state == "PROGRESS")
        assert progressing.info == {"done": 1, "total": 2}
        assert not progressing.ready()
        (marker / "go").touch()
        assert progressing.get(timeout=20) == "finished"


def test_ignore_result_and_unserializable_result(proj: Any, project: Path,
                                                 tmp_path: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        quiet = proj.quiet.delay(str(tmp_path))
        assert wait_until(lambda: (tmp_path / "quiet").exists())
        bad = proj.unserializable.delay()
        with pytest.raises(Exception, match="cannot be encoded"):
            bad.get(timeout=20)
        assert quiet.state == "PENDING"  # nothing was stored for it


def test_unknown_task_is_reported_and_kept(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]) as worker:
        ghost = proj.app.send_task("proj.no_such_task", args=[1])
        with pytest.raises(NotRegistered):
            ghost.get(timeout=20)
        assert proj.add.delay(1, 1).get(timeout=20) == 2  # the worker carries on
        assert worker.wait_for_output("proj.no_such_task")
        assert worker.wait_for_output(ghost.id)
    dead = proj.app.connect_broker().dead_letters()
    assert any("unregistered task 'proj.no_such_task'" in d.reason for d in dead)


def test_bad_messages_are_set_aside_never_fatal(proj: Any, project: Path) -> None:
    broker = proj.app.producer_broker()
    refused_id = str(uuid.uuid4())
    pickled = messages.task_message("proj.add", refused_id, [1, 2], serializer="pickle")
    queue = proj.app.conf.task_default_queue
    broker.publish(queue, messages.encode_envelope(pickled))
    broker.publish(queue, "this is not json")
    no_type = json.loads(messages.encode_envelope(messages.task_message("proj.add", "x", [1])))
    del no_type["content-type"]
    broker.publish(queue, json.dumps(no_type))
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]) as worker:
        assert proj.add.delay(2, 2).get(timeout=20) == 4
        assert worker.wait_for_output(refused_id)
    reasons = [d.reason for d in proj.app.connect_broker().dead_letters()]
    assert any("refused content" in r and "pickle" in r for r in reasons)
    if proj.app.conf.broker_url.startswith("amqp"):
        # RabbitMQ carries no envelope: the text arrives as a body with no content
        # type, and both broken messages are set aside for that
        assert sum("no content type" in r for r in reasons) == 2
    else:
        assert any("not valid JSON" in r for r in reasons)
        assert any("no content type" in r for r in reasons)
    refused = proj.app.AsyncResult(refused_id)
    with pytest.raises(ContentDisallowed, match="pickle"):  # never run, and says why
        refused.get(timeout=5)


def test_queues_option(proj: Any, project: Path) -> None:
    q1, q2 = (f"{proj.app.conf.task_default_queue}-{n}" for n in (1, 2))
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-Q", f"{q1},{q2}"]):
        assert proj.add.apply_async((1, 2), queue=q2).get(timeout=20) == 3
        info = proj.whoami.apply_async(queue=q1).get(timeout=20)
        assert info["routing_key"] == q1
        left = proj.add.apply_async((5, 5))
        time.sleep(0.5)
        assert not left.ready()
    assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 1


def test_max_tasks_per_child_replaces_the_process(proj: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "1", "--max-tasks-per-child", "1"]):
        pids = {proj.pid.delay().get(timeout=20) for _ in range(3)}
    assert len(pids) == 3


def test_warm_shutdown_finishes_running_and_returns_the_rest(proj: Any, project: Path,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    worker = WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "1",
                                                      "--prefetch-multiplier", "4"]).start()
    try:
        running = proj.block.delay(str(marker), "first")
        waiting = [proj.add.delay(i, i) for i in range(3)]
        assert wait_until(lambda: lines(marker / "started") == ["first"])
        worker.signal(signal.SIGTERM)
        assert worker.wait_for_output("Warm shutdown")
        (marker / "go").touch()
        assert worker.proc.wait(30) == 0
        assert running.get(timeout=5) == "first"
        assert not any(r.ready() for r in waiting)
        assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 3
    finally:
        worker.kill()
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert [r.get(timeout=20) for r in waiting] == [0, 2, 4]


def test_cold_shutdown_on_second_signal(proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    worker = WorkerProcess("proj", cwd=project, args=["-c", "1"]).start()
    try:
        late = proj.block_late.delay(str(marker), "late")
        assert wait_until(lambda: lines(marker / "started") == ["late"])
        worker.signal(signal.SIGTERM)
        assert worker.wait_for_output("Warm shutdown")
        worker.signal(signal.SIGTERM)
        assert worker.proc.wait(30) != 0 or worker.wait_for_output("Cold shutdown")
    finally:
        worker.kill()
    # the acks_late task was interrupted, so its message went back to the queue
    assert not late.ready()
    assert proj.app.connect_broker().size(proj.app.conf.task_default_queue) == 1


def test_a_long_task_does_not_hold_up_the_ones_prefetched_behind_it(
        proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    # Both messages arrive before the worker starts, so one consumer prefetches both.
    long_one = proj.block.delay(str(marker), "long")
    quick = proj.add.delay(1, 1)
    with WorkerProcess("proj", cwd=project, args=["-c", "2", "--prefetch-multiplier", "4"]):
        assert wait_until(lambda: lines(marker / "started") == ["long"])
        assert quick.get(timeout=20) == 2  # ran while the long task still runs
        assert not long_one.ready()
        (marker / "go").touch()
        assert long_one.get(timeout=20) == "long"


def test_eta_task_waits_in_the_broker_across_worker_restarts(proj: Any, project: Path,
                                                             tmp_path: Path) -> None:
    order = tmp_path / "order"
    due = time.monotonic() + 2  # taken before the eta is set: never after it
    later = proj.record.apply_async((str(order), "later"), countdown=2)
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        proj.record.delay(str(order), "now").get(timeout=20)
    if time.monotonic() < due:  # a loaded machine may start the worker past the eta
        # the first worker stopped before the eta: nothing of it stayed in its memory
        assert lines(order) == ["now"]
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert later.get(timeout=30) == "later"
    assert sorted(lines(order)) == ["later", "now"]  # and it ran once


def test_task_events_requested_are_on_in_the_banner(proj: Any, project: Path) -> None:
    # what is sent is tested in test_events.py
    with WorkerProcess("proj", cwd=project, args=["-P", "solo", "-E"]) as worker:
        assert proj.add.delay(1, 1).get(timeout=30) == 2
        assert "task events:  ON" in worker.output
        assert "sends no task events" not in worker.output
