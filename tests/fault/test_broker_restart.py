"""Redis killed and restarted under a running worker: no task lost, none run twice.

The server is the test's own (never the shared one) and keeps an append-only file
synced on every write, as a production Redis that must not lose queued work would.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, lines, private_redis_server, wait_until

from celeriac.contrib.testing import WorkerProcess

DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]


@pytest.fixture
def redis_binary(redis_server: str) -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not on PATH")
    return path


@pytest.fixture
def server(redis_binary: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    import redis

    port = free_port()
    workdir = tmp_path / "redis-data"
    workdir.mkdir()
    url = f"redis://127.0.0.1:{port}/0"

    def probe() -> Any:
        return redis.Redis.from_url(url, socket_timeout=1)

    options = ["--port", str(port), "--bind", "127.0.0.1", *DURABLE]
    with private_redis_server(redis_binary, workdir, options, probe) as proc:
        yield {"url": url, "proc": proc, "restart": lambda: private_redis_server(
            redis_binary, workdir, options, probe)}


@pytest.fixture
def broker_url(server: dict[str, Any]) -> str:
    return str(server["url"])


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_rides_out_a_broker_restart(proj: Any, project: Path, server: dict[str, Any],
                                           pool: str) -> None:
    runs = project / "runs"
    count = 3000
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "2"]) as worker:
        assert proj.add.delay(1, 1).get(timeout=20) == 2
        with proj.app.batch_publish():  # all queued at once, so the kill falls mid-drain
            results = [proj.touch_and_return.delay(str(runs), i) for i in range(count)]
        assert wait_until(lambda: runs.exists() and len(lines(runs)) >= 100)
        server["proc"].send_signal(signal.SIGKILL)  # mid-drain, without warning
        server["proc"].wait()
        assert len(lines(runs)) < count  # the restart does fall in the middle
        with server["restart"]():
            # Waiting clients ride it out too: a get() started before the restart.
            late: list[Any] = []
            waiter = threading.Thread(target=lambda: late.append(
                results[-1].get(timeout=90)))
            waiter.start()
            values = [r.get(timeout=90) for r in results]
            waiter.join(90)
            assert values == list(range(count))
            assert late == [count - 1]
            # each task ran exactly once (one line per run)
            assert len(lines(runs)) == count
            assert worker.proc.poll() is None
            assert proj.add.delay(2, 2).get(timeout=30) == 4
