"""The dashboard's event listener loses its Redis connection: it listens again, keeps
what it had, and says that events were missed (a fanout cannot replay them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from celeriac import Celery
from celeriac.dashboard.ingest import Ingestor
from celeriac.dashboard.store import HistoryStore

TIMEOUT = 60


def test_a_killed_event_connection_is_counted_logged_and_listened_to_again(
        private_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import redis

    app = Celery("listener", broker=private_redis)
    store = HistoryStore.open(str(tmp_path / "history.sqlite3"))
    admin = redis.Redis.from_url(private_redis)
    caplog.set_level(logging.WARNING)
    try:
        with Ingestor(app, store, flush_every=0.05, enable_events=False) as ingestor:
            sender: Any = app.events.Dispatcher(hostname="w1@host")

            def stored(uuid: str) -> bool:
                sender.send("task-received", uuid=uuid, name="proj.add", args="(1, 1)")
                return wait_until(lambda: store.task(uuid) is not None, 1.0)

            assert wait_until(lambda: stored("before"), TIMEOUT)
            assert ingestor.stats["listener_reconnects"] == 0
            assert admin.client_kill_filter(_type="pubsub") >= 1
            # the listener notices on its next read, subscribes again and goes on
            assert wait_until(lambda: stored("after"), TIMEOUT)
            assert wait_until(lambda: ingestor.stats["listener_reconnects"] >= 1, TIMEOUT)
            sender.close()
        assert store.task("before") is not None and store.task("after") is not None
        assert any("lost its connection" in r.getMessage() and r.levelno == logging.WARNING
                   for r in caplog.records)
    finally:
        store.close()
        admin.close()
        app.close()
