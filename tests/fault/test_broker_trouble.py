"""Dropped broker connections are ridden over, not fatal."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from celeriac.contrib.testing import WorkerProcess


@pytest.fixture
def broker_url(private_redis: str) -> str:
    """Connections to drop exist on Redis only (SQLite has no server), and killing every
    client of the shared one would cut other tests'."""
    return private_redis


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_worker_survives_killed_connections(proj: Any, project: Path, broker_url: str,
                                            pool: str) -> None:
    import redis

    admin = redis.Redis.from_url(broker_url)
    stop = threading.Event()

    def keep_killing() -> None:
        # Drop every other client's connection again and again, so that fetches, acks
        # and result writes are cut while in flight.
        while not stop.wait(0.01):
            admin.client_kill_filter(_type="normal", skipme=True)

    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "1"]) as worker:
        assert proj.add.delay(1, 1).get(timeout=20) == 2
        results = [proj.add.delay(i, i) for i in range(300)]
        killer = threading.Thread(target=keep_killing, daemon=True)
        killer.start()

        def all_stored() -> bool:
            # The test's own reads are cut too (redis-py's pool does not retry a
            # connection killed as it hands it out): ask again.
            try:
                return all(r.ready() for r in results)
            except redis.ConnectionError:
                return False

        try:
            assert wait_until(all_stored, timeout=60)
        finally:
            stop.set()
            killer.join()
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(300)]
        assert worker.proc.poll() is None
        assert proj.add.delay(2, 2).get(timeout=20) == 4
