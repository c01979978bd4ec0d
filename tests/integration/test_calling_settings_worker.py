"""Calling settings through a real worker (SQLite and Redis).

``task_inherit_parent_priority``: a task sent from a running task, a chain's next step
and a callback get the priority of the message their parent came in.
``task_allow_error_cb_on_chord_header``: a chord's errback is also called for the header
task that failed. ``task_remote_tracebacks``: a task's error is raised in the client
with the worker's traceback.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import lines, project_module, wait_until

from celeriac import chain, chord
from celeriac.contrib.testing import WorkerProcess

SETTINGS_TASKS = '''
from proj import app, touch

app.conf.task_inherit_parent_priority = True
app.conf.task_allow_error_cb_on_chord_header = True
app.conf.task_remote_tracebacks = True


@app.task(bind=True)
def priority_of(self, *args):
    return self.request.priority


@app.task(bind=True)
def send_child(self):
    return priority_of.delay().id


@app.task
def explode(message):
    return deep_inside(message)


def deep_inside(message):
    raise ValueError(message)


@app.task
def total(values):
    return sum(values)


@app.task
def record_failure(failed_id=None, path=None):
    touch(path, failed_id or "none")
'''


@pytest.fixture
def calling(project: Path) -> Iterator[Any]:
    with project_module(project, "callingproj", SETTINGS_TASKS) as module:
        yield module


def test_task_inherit_parent_priority_through_a_worker(calling: Any, project: Path) -> None:
    with WorkerProcess("callingproj", cwd=project, args=["-P", "threads", "-c", "2"]):
        # sent from inside a running task
        child_id = calling.send_child.apply_async(priority=6).get(timeout=30)
        assert calling.app.AsyncResult(child_id).get(timeout=30) == 6
        # the next step of a chain: the chain's options go to its first step only
        steps = chain(calling.priority_of.s(), calling.priority_of.s(),
                      app=calling.app).apply_async(priority=5)
        assert steps.get(timeout=30) == 5 and steps.parent.get(timeout=30) == 5
        # a callback
        first = calling.priority_of.apply_async(priority=3,
                                                link=calling.priority_of.s())
        assert first.get(timeout=30) == 3
        assert wait_until(lambda: bool(first.children))
        assert first.children[0].get(timeout=30) == 3
        # what the parent did not get, the child does not either
        plain = calling.send_child.delay().get(timeout=30)
        assert calling.app.AsyncResult(plain).get(timeout=30) in (0, None)


def test_task_allow_error_cb_on_chord_header_through_a_worker(calling: Any, project: Path,
                                                              tmp_path: Path) -> None:
    marker = tmp_path / "errbacks"
    with WorkerProcess("callingproj", cwd=project, args=["-P", "threads", "-c", "2"]):
        c = chord([calling.priority_of.s(), calling.explode.s("header")],
                  calling.total.s(), app=calling.app)
        c.link_error(calling.record_failure.s(path=str(marker)))
        result = c.apply_async()
        with pytest.raises(Exception, match="header"):
            result.get(timeout=30)
        failed_header_id = result.parent.results[1].id
        # Called twice: for the header task that failed (with its id), and for the body.
        assert wait_until(lambda: len(lines(marker)) == 2)
        assert sorted(lines(marker)) == sorted([failed_header_id, result.id])


def test_task_remote_tracebacks_through_a_worker(calling: Any, project: Path) -> None:
    pytest.importorskip("tblib")
    with WorkerProcess("callingproj", cwd=project, args=["-P", "solo"]):
        result = calling.explode.delay("far away")
        with pytest.raises(ValueError, match="far away") as info:
            result.get(timeout=30)
    frames = [(f.name, f.filename) for f in traceback.extract_tb(info.value.__traceback__)]
    # The worker's frames, down to where the error was raised, in the task module.
    assert frames[-1][0] == "deep_inside" and frames[-1][1].endswith("callingproj.py")
    assert "explode" in [name for name, _ in frames]
    # Off, the error is raised from the client's own frames only.
    calling.app.conf.task_remote_tracebacks = False
    fresh = calling.app.AsyncResult(result.id)
    with pytest.raises(ValueError) as plain:
        fresh.get(timeout=30)
    assert "deep_inside" not in [f.name for f in
                                 traceback.extract_tb(plain.value.__traceback__)]
