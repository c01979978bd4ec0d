"""AsyncResult.children lists the tasks a task's success sent: its link callbacks and
the next step of its chain, as Celery records them (real worker, SQLite and Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.canvas import chain
from celeriac.contrib.testing import WorkerProcess
from celeriac.result import AsyncResult, GroupResult

@pytest.fixture
def worker(proj: Any, project: Path) -> Iterator[Any]:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        yield proj


def test_a_link_callback_is_a_child(worker: Any) -> None:
    proj = worker
    result = proj.add.apply_async((2, 2), link=proj.add.s(16))
    assert result.get(timeout=20) == 4
    (child,) = result.children
    assert isinstance(child, AsyncResult) and child.get(timeout=20) == 20
    # immutable callbacks too
    fixed = proj.add.apply_async((2, 2), link=proj.add.si(1, 1))
    assert fixed.get(timeout=20) == 4
    assert [c.get(timeout=20) for c in fixed.children] == [2]


def test_several_link_callbacks_are_one_group_child(worker: Any) -> None:
    # Celery sends several callbacks as one group, recorded as one GroupResult child.
    proj = worker
    result = proj.add.apply_async((2, 2), link=[proj.add.s(16), proj.mul.s(10)])
    assert result.get(timeout=20) == 4
    (child,) = result.children
    assert isinstance(child, GroupResult)
    assert child.get(timeout=20) == [20, 40]


def test_the_next_step_of_a_chain_is_a_child(worker: Any) -> None:
    proj = worker
    last = chain(proj.add.s(1, 1), proj.add.s(2)).delay()
    assert last.get(timeout=20) == 4
    # The next step is sent before the first one's result is stored (as in Celery, so
    # that the stored result can list it): the last step may be done first.
    assert last.parent.get(timeout=20) == 2
    assert last.parent.children == [last]


def test_a_task_sent_from_the_body_is_a_child(worker: Any) -> None:
    # What already works, and what the callbacks must match.
    proj = worker
    result = proj.send_square.delay(3)
    result.get(timeout=20)
    (child,) = result.children
    assert child.get(timeout=20) == 9
