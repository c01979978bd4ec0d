"""The beat page's data (celeriac.dashboard.beat): entries from the settings or the
SQLite schedule store, last runs from beat's state and from the leader lock, the leader."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import answers, require

from celeriac import Celery
from celeriac.beat import Beat, RedisLock, SQLiteLock
from celeriac.beat.service import default_lock_name
from celeriac.beat.store import ScheduleStore
from celeriac.dashboard.beat import beat_schedule
from celeriac.schedules import crontab

# this module's Redis database (the dashboard's queues tests share it, with names of
# their own)
REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    app = Celery("beatpage", broker=f"sqlite:///{tmp_path / 'broker.sqlite3'}",
                 backend=f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    app.conf.task_default_queue = f"q-{uuid.uuid4().hex[:8]}"
    app.conf.beat_schedule_filename = str(tmp_path / "beat-state")
    app.conf.result_expires = None  # no backend_cleanup entry: only the test's own
    yield app
    app.close()


def by_name(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in page["entries"]}


def test_config_entries_with_the_persistent_schedulers_last_runs(
        app: Celery, tmp_path: Path) -> None:
    app.conf.beat_schedule = {
        "every-ten": {"task": "proj.tick", "schedule": 10.0, "args": (1, 2),
                      "options": {"queue": "slow"}},
        "nightly": {"task": "proj.night", "schedule": crontab(minute=0, hour=3)},
    }
    last = datetime.now(timezone.utc) - timedelta(seconds=4)
    (tmp_path / "beat-state.json").write_text(json.dumps({"version": 1, "entries": {
        "every-ten": {"last_run_at": last.isoformat(), "total_run_count": 7}}}))
    page = beat_schedule(app)
    assert page["source"] == "config"
    assert page["leader"] is None  # no beat holds the lock
    entries = by_name(page)
    tick = entries["every-ten"]
    assert tick["task"] == "proj.tick" and tick["args"] == [1, 2]
    assert tick["options"] == {"queue": "slow"}
    assert tick["schedule"]["type"] == "interval" and tick["schedule"]["every"] == 10.0
    assert tick["last_run_at"] == pytest.approx(last.timestamp())
    assert tick["total_run_count"] == 7 and tick["enabled"] and not tick["due"]
    # the next run is the last one plus the interval
    assert tick["next_run_at"] == pytest.approx(last.timestamp() + 10, abs=0.01)
    night = entries["nightly"]
    assert night["last_run_at"] is None and night["total_run_count"] == 0
    assert night["schedule"]["type"] == "crontab" and night["schedule"]["hour"] == 3
    following = datetime.fromtimestamp(night["next_run_at"], timezone.utc)
    assert (following.minute, following.second) == (0, 0)


def test_an_overdue_entry_is_due_now(app: Celery, tmp_path: Path) -> None:
    app.conf.beat_schedule = {"late": {"task": "proj.tick", "schedule": 5.0}}
    last = datetime.now(timezone.utc) - timedelta(hours=1)
    (tmp_path / "beat-state.json").write_text(json.dumps({"version": 1, "entries": {
        "late": {"last_run_at": last.isoformat(), "total_run_count": 1}}}))
    entry = by_name(beat_schedule(app))["late"]
    assert entry["due"]
    assert entry["next_run_at"] <= datetime.now(timezone.utc).timestamp()


def test_sqlite_schedule_store_entries_enabled_or_not_with_their_runs(
        app: Celery, tmp_path: Path) -> None:
    store = ScheduleStore(str(tmp_path / "beat-state.sqlite3"))
    store.set("cleanup", "proj.cleanup", crontab(minute=30, hour=4), kwargs={"deep": True})
    store.set("ping", "proj.ping", 30.0, enabled=False)
    ran = datetime.now(timezone.utc) - timedelta(minutes=2)
    store.save_state({"cleanup": {"last_run_at": ran.isoformat(), "total_run_count": 3}})
    store.close()
    app.conf.beat_scheduler = "sqlite"
    app.conf.beat_schedule = {"only-in-config": {"task": "proj.x", "schedule": 1.0}}
    page = beat_schedule(app)
    assert page["source"] == "sqlite"
    entries = by_name(page)
    # the store rules once it exists: the settings' entry is beat's to add, not ours
    assert set(entries) == {"cleanup", "ping"}
    cleanup = entries["cleanup"]
    assert cleanup["enabled"] and cleanup["kwargs"] == {"deep": True}
    assert cleanup["total_run_count"] == 3
    assert cleanup["last_run_at"] == pytest.approx(ran.timestamp())
    assert cleanup["schedule"]["minute"] == 30
    ping = entries["ping"]
    assert not ping["enabled"] and ping["next_run_at"] is None and not ping["due"]


def test_sqlite_leader_lock_gives_the_leader_and_its_shared_last_runs(app: Celery) -> None:
    app.conf.beat_schedule = {"every-ten": {"task": "proj.tick", "schedule": 10.0}}
    lock = SQLiteLock(str(app.broker_url).split("sqlite:///", 1)[1], default_lock_name(app))
    shared = datetime.now(timezone.utc) - timedelta(seconds=3)
    try:
        assert lock.acquire("leader-1", 60)
        lock.save_state("leader-1", {"every-ten": {"last_run_at": shared.isoformat(),
                                                   "total_run_count": 12}})
        page = beat_schedule(app)
        assert page["leader"]["owner"] == "leader-1"
        assert page["leader"]["expires"] > datetime.now(timezone.utc).timestamp()
        entry = by_name(page)["every-ten"]
        # no state file: the run times come from what the leader left beside the lock
        assert entry["last_run_at"] == pytest.approx(shared.timestamp())
        assert entry["total_run_count"] == 12
        lock.release("leader-1")
        assert beat_schedule(app)["leader"] is None
    finally:
        lock.close()


def test_a_running_beat_service_shows_as_leader(app: Celery) -> None:
    app.conf.beat_schedule = {"soon": {"task": "proj.tick", "schedule": 3600.0}}
    beat = Beat(app, owner=f"beat-{uuid.uuid4().hex[:6]}", lock_ttl=60)
    beat.setup()
    try:
        beat.turn()
        assert beat.is_leader
        page = beat_schedule(app)
        assert page["leader"]["owner"] == beat.owner
        assert by_name(page)["soon"]["enabled"]
    finally:
        beat.close()
    assert beat_schedule(app)["leader"] is None  # released when it stopped


@pytest.fixture
def redis_app(tmp_path: Path) -> Iterator[Celery]:
    pytest.importorskip("redis")
    require("Redis is not reachable on its standard loopback port",
            answers(6379, b"PING\r\n", b"+PONG"))
    app = Celery("beatpage", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.task_default_queue = f"q-{uuid.uuid4().hex[:8]}"  # the lock's name has it
    app.conf.beat_schedule_filename = str(tmp_path / "beat-state")
    app.conf.result_expires = None
    yield app
    app.close()


def test_redis_leader_lock(redis_app: Celery) -> None:
    redis_app.conf.beat_schedule = {"every-ten": {"task": "proj.tick", "schedule": 10.0}}
    lock = RedisLock(REDIS_URL, default_lock_name(redis_app))
    shared = datetime.now(timezone.utc) - timedelta(seconds=2)
    try:
        assert lock.acquire("redis-leader", 60)
        lock.save_state("redis-leader", {"every-ten": {"last_run_at": shared.isoformat(),
                                                       "total_run_count": 5}})
        page = beat_schedule(redis_app)
        assert page["leader"]["owner"] == "redis-leader"
        assert page["leader"]["expires"] > datetime.now(timezone.utc).timestamp()
        assert by_name(page)["every-ten"]["total_run_count"] == 5
        lock.release("redis-leader")
        assert beat_schedule(redis_app)["leader"] is None
    finally:
        lock.connector.client().delete(lock.key, lock.state_key)
        lock.close()
