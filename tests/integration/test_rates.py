"""Rate limits: per worker (Celery's rate_limit) and shared by all workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from support import project_module

from celeriac.contrib.testing import WorkerProcess
from celeriac.worker.ratelimit import parse_rate

BROKERS_ALSO = ("postgresql",)  # the shared limit is reserved in the database there
RATE_TASKS = '''
import time

from proj import app


@app.task(rate_limit="5/s")
def limited(i):
    return time.time()


@app.task(global_rate_limit="4/s")
def shared_limit(i):
    return time.time()


@app.task
def quick(i):
    return i
'''


@pytest.fixture
def rates(project: Path) -> Iterator[Any]:
    with project_module(project, "rateproj", RATE_TASKS) as module:
        yield module


def test_parse_rate() -> None:
    assert parse_rate("10/s") == 10 and parse_rate("120/m") == 2
    assert parse_rate("3600/h") == 1 and parse_rate(4) == 4 and parse_rate(None) is None
    with pytest.raises(ValueError, match="invalid rate limit"):
        parse_rate("fast")


def test_rate_limit_spaces_the_starts_of_one_worker(rates: Any, project: Path) -> None:
    with WorkerProcess("rateproj", cwd=project, args=["-c", "2"]):
        starts = sorted(r.get(timeout=30) for r in [rates.limited.delay(i) for i in range(10)])
    # 10 starts at 5/s over two pool processes cannot fit in less than (10 - 2) / 5 s
    assert starts[-1] - starts[0] >= (10 - 2) / 5


def test_rate_limited_tasks_do_not_hold_up_others(rates: Any, project: Path) -> None:
    with WorkerProcess("rateproj", cwd=project, args=["-P", "solo"]):
        limited = [rates.limited.delay(i) for i in range(10)]
        quick = [rates.quick.delay(i) for i in range(5)]
        assert [r.get(timeout=30) for r in quick] == list(range(5))
        # the quick ones ran while most rate-limited ones were still waiting their turn
        assert sum(r.ready() for r in limited) < 10
        assert len([r.get(timeout=30) for r in limited]) == 10


def test_global_rate_limit_is_shared_by_all_workers(rates: Any, project: Path) -> None:
    with WorkerProcess("rateproj", cwd=project, args=["-P", "solo", "-n", "a@%h"]), \
            WorkerProcess("rateproj", cwd=project, args=["-P", "solo", "-n", "b@%h"]):
        starts = sorted(r.get(timeout=30) for r in [rates.shared_limit.delay(i)
                                                     for i in range(8)])
    # 8 starts at 4/s in all, whichever worker ran them: at least 7 intervals of 1/4 s
    # (a little slack for clocks read in two processes)
    assert starts[-1] - starts[0] >= 7 / 4 - 0.05
