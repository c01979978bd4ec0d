"""AsyncResult.get's on_message, on_interval, follow_parents and callback through a real
worker, on SQLite and Redis; ResultSet.get/join take and pass on the same arguments.

Each task that must be seen in an intermediate state waits for a file that only the
callback under test creates, so the test cannot pass by luck of timing: if the callback
were not called, the task would never finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.canvas import chain, group
from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import TimeoutError
from celeriac.result import ResultSet


@pytest.fixture
def worker(proj: Any, project: Path) -> Iterator[Any]:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "4"]):
        yield proj


@pytest.fixture
def marker(project: Path) -> Path:
    path = project / "markers"
    path.mkdir()
    return path


def test_on_message_sees_custom_states_and_the_final_one(worker: Any, marker: Path) -> None:
    proj = worker
    seen: list[dict[str, Any]] = []

    def on_message(meta: dict[str, Any]) -> None:
        seen.append(meta)
        if meta["status"] == "PROGRESS":
            (marker / "go").touch()  # the task finishes only once PROGRESS was seen

    result = proj.progress.delay(str(marker))
    assert result.get(timeout=20, on_message=on_message) == "finished"
    statuses = [meta["status"] for meta in seen]
    assert statuses[-1] == "SUCCESS" and "PROGRESS" in statuses
    assert set(statuses) <= {"STARTED", "PROGRESS", "SUCCESS"}
    progress = next(meta for meta in seen if meta["status"] == "PROGRESS")
    assert progress["result"] == {"done": 1, "total": 2}
    assert progress["task_id"] == result.id
    assert seen[-1]["result"] == "finished"


def test_on_message_sees_started(worker: Any, marker: Path) -> None:
    proj = worker
    seen: list[dict[str, Any]] = []

    def on_message(meta: dict[str, Any]) -> None:
        seen.append(meta)
        if meta["status"] == "STARTED":
            (marker / "go").touch()

    assert proj.started_then_wait.delay(str(marker)).get(
        timeout=20, on_message=on_message) == "ok"
    assert [meta["status"] for meta in seen] == ["STARTED", "SUCCESS"]
    assert "pid" in seen[0]["result"]


def test_on_message_gets_a_failure_as_an_exception(worker: Any) -> None:
    proj = worker
    seen: list[dict[str, Any]] = []
    with pytest.raises(ValueError, match="boom"):
        proj.fail.delay("boom").get(timeout=20, on_message=seen.append)
    assert seen[-1]["status"] == "FAILURE"
    assert isinstance(seen[-1]["result"], ValueError)


def test_on_interval_is_called_while_waiting(worker: Any, marker: Path) -> None:
    proj = worker
    calls: list[int] = []

    def on_interval() -> None:
        calls.append(1)
        if len(calls) == 2:
            (marker / "go").touch()  # the task finishes only after two intervals

    result = proj.block.delay(str(marker), "waited")
    assert result.get(timeout=20, interval=0.1, on_interval=on_interval) == "waited"
    assert len(calls) >= 2


def test_follow_parents_raises_a_failed_earlier_step(worker: Any) -> None:
    proj = worker
    # The third step never runs: without following its parents, get() would wait
    # until its timeout.
    res = chain(proj.add.si(1, 1), proj.fail.si("middle"), proj.add.si(2, 2)).delay()
    with pytest.raises(ValueError, match="middle"):
        res.get(timeout=20)
    assert res.parent.failed() and res.state == "PENDING"
    with pytest.raises(TimeoutError):
        res.get(timeout=1, follow_parents=False)
    with pytest.raises(TimeoutError):  # only with propagate, as in Celery
        res.get(timeout=1, propagate=False)


def test_follow_parents_notices_a_parent_failing_while_waiting(worker: Any,
                                                             marker: Path) -> None:
    proj = worker
    res = chain(proj.block.si(str(marker), "first"), proj.fail.si("late"),
                proj.add.si(1, 1)).delay()
    # The failure happens only after get() began waiting: the go file is created by
    # its first interval.
    with pytest.raises(ValueError, match="late"):
        res.get(timeout=20, interval=0.1,
                on_interval=lambda: (marker / "go").touch())


def test_callback_gets_the_value(worker: Any) -> None:
    proj = worker
    got: list[Any] = []
    assert proj.add.delay(2, 3).get(timeout=20, callback=lambda *a: got.append(a)) == 5
    failing = proj.fail.delay("quiet")
    value = failing.get(timeout=20, propagate=False, callback=lambda *a: got.append(a))
    assert isinstance(value, ValueError)
    assert got[0][1] == 5 and got[1] == (failing.id, value)


def test_group_get_and_join_pass_the_options_on(worker: Any, marker: Path) -> None:
    proj = worker
    seen: list[dict[str, Any]] = []
    calls: list[int] = []

    def on_interval() -> None:
        calls.append(1)
        (marker / "go").touch()

    res = group(proj.add.s(i, i) for i in range(3))()
    waiting = proj.block.delay(str(marker), "last")
    assert res.get(timeout=20, on_message=seen.append, no_ack=False) == [0, 2, 4]
    assert sorted(meta["task_id"] for meta in seen) == sorted(r.id for r in res.results)
    assert all(meta["status"] == "SUCCESS" for meta in seen)
    both = ResultSet([proj.add.delay(1, 1), waiting])
    assert both.join(timeout=20, interval=0.1, on_interval=on_interval) == [2, "last"]
    assert calls
    streamed: list[tuple[str, Any]] = []
    assert both.join_native(timeout=20, callback=lambda *a: streamed.append(a)) == []
    assert streamed == [(both.results[0].id, 2), (waiting.id, "last")]
