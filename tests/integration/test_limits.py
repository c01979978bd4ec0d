"""Time limits and lost pool processes, with real workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from support import project_module

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import (
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)

LIMIT_TASKS = '''
import asyncio
import os
import time

from celeriac.exceptions import SoftTimeLimitExceeded
from proj import app

app.conf.broker_max_redeliveries = 2


@app.task(soft_time_limit=0.5)
def soft_sleeper():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "caught soft limit"
    return "slept"


@app.task(soft_time_limit=0.5)
def soft_spinner():
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            pass
    except SoftTimeLimitExceeded:
        return "caught soft limit"
    return "spun"


@app.task(time_limit=1)
def hard_sleeper():
    time.sleep(30)


@app.task
def plain_sleeper(seconds):
    time.sleep(seconds)
    return "slept"


@app.task(time_limit=1)
async def async_sleeper():
    await asyncio.sleep(30)


@app.task
def dies():
    os._exit(3)


@app.task(acks_late=True)
def dies_late():
    os._exit(3)


@app.task
def whose_pid():
    return os.getpid()
'''


@pytest.fixture
def limits(project: Path) -> Iterator[Any]:
    with project_module(project, "limitproj", LIMIT_TASKS) as module:
        yield module


def test_soft_limit_raises_inside_the_task_in_prefork(limits: Any, project: Path) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-c", "1"]):
        assert limits.soft_sleeper.delay().get(timeout=20) == "caught soft limit"
        # per call, overriding a task without limits
        call = limits.plain_sleeper.apply_async((30,), soft_time_limit=0.5)
        with pytest.raises(SoftTimeLimitExceeded):
            call.get(timeout=20)


def test_hard_limit_kills_the_process_and_the_worker_goes_on(limits: Any,
                                                             project: Path) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-c", "1"]) as worker:
        before = limits.whose_pid.delay().get(timeout=20)
        overrun = limits.hard_sleeper.delay()
        with pytest.raises(TimeLimitExceeded):
            overrun.get(timeout=30)
        assert overrun.state == "FAILURE"
        after = limits.whose_pid.delay().get(timeout=20)
        assert after != before  # a fresh pool process took the slot
        assert "exceeded its hard time limit" in worker.output
        per_call = limits.plain_sleeper.apply_async((30,), time_limit=1)
        with pytest.raises(TimeLimitExceeded):
            per_call.get(timeout=30)


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_soft_limit_in_thread_pools(limits: Any, project: Path, pool: str) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-P", pool]):
        assert limits.soft_spinner.delay().get(timeout=20) == "caught soft limit"


def test_async_task_is_cancelled_at_the_hard_limit(limits: Any, project: Path) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-P", "asyncio"]):
        overrun = limits.async_sleeper.delay()
        with pytest.raises(TimeLimitExceeded):
            overrun.get(timeout=30)
        assert limits.whose_pid.delay().get(timeout=20)


def test_pool_process_dying_mid_task_is_reported(limits: Any, project: Path) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-c", "1"]):
        lost = limits.dies.delay()
        with pytest.raises(WorkerLostError, match="exitcode 3"):
            lost.get(timeout=30)
        assert limits.whose_pid.delay().get(timeout=20)


def test_message_that_kills_every_worker_is_set_aside(limits: Any, project: Path) -> None:
    with WorkerProcess("limitproj", cwd=project, args=["-c", "1"]) as worker:
        poison = limits.dies_late.delay()
        with pytest.raises(WorkerLostError, match="lost 2 times"):
            poison.get(timeout=60)
        assert limits.whose_pid.delay().get(timeout=20)  # the others are unharmed
        assert "probable poison message" in worker.output
    dead = limits.app.connect_broker().dead_letters()
    assert any(poison.id in d.payload and "lost 2 times" in d.reason for d in dead)


MEMORY_TASKS = '''
import os

from proj import app

app.conf.worker_max_memory_per_child = 150_000  # KiB
HELD = []


@app.task
def hog():
    HELD.append(bytearray(200 * 1024 * 1024))  # touch 200 MiB and keep it
    HELD[-1][::4096] = b"x" * len(HELD[-1][::4096])
    return os.getpid()


@app.task
def whose_pid():
    return os.getpid()
'''


def test_pool_process_over_its_memory_limit_is_replaced(project: Path) -> None:
    with project_module(project, "memproj", MEMORY_TASKS) as memproj, \
            WorkerProcess("memproj", cwd=project, args=["-c", "1"]) as worker:
        hog_pid = memproj.hog.delay().get(timeout=30)
        assert memproj.whose_pid.delay().get(timeout=30) != hog_pid
        assert "over worker_max_memory_per_child" in worker.output
