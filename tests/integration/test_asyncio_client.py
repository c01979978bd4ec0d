"""The awaitable client: ``await task.adelay(...)`` and ``await result.aget()`` in an
asyncio app, against a real worker, on SQLite and Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from celeriac.canvas import group
from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import TimeoutError as CeleriacTimeoutError


def test_await_results_without_blocking_the_loop(proj: Any, project: Path) -> None:
    async def main() -> None:
        result = await proj.add.adelay(2, 3)
        assert await result.aget(timeout=20) == 5

        # While one request awaits a slow task, the loop keeps serving the others.
        waiting = True
        ticks = 0

        async def other_requests() -> None:
            nonlocal ticks
            while waiting:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(other_requests())
        slow = await proj.snooze.adelay(0.3)
        assert await slow.aget(timeout=20) == 0.3
        waiting = False
        await ticker
        assert ticks > 1

        # Many at once, each woken on its own.
        sent = [await proj.add.adelay(i, i) for i in range(20)]
        assert await asyncio.gather(*(r.aget(timeout=20) for r in sent)) == \
            [2 * i for i in range(20)]
        assert await group(proj.add.s(i, 1) for i in range(3))().aget(timeout=20) == [1, 2, 3]

        with pytest.raises(ValueError, match="boom"):
            await (await proj.fail.adelay("boom")).aget(timeout=20)
        with pytest.raises(CeleriacTimeoutError):
            await (await proj.snooze.adelay(1.5)).aget(timeout=0.2)

    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "4"]):
        asyncio.run(main())
