"""A schedule kept in a database, changed while beat runs (django-celery-beat's idea).

``ScheduleStore`` keeps entries in an SQLite file: one row per entry with its task,
schedule (as JSON), arguments, options and whether it is enabled, plus its last run
time. Any change to an entry's definition bumps a version number (by trigger, so edits
made with the ``sqlite3`` shell count too); ``SQLiteScheduler`` checks the version at
every tick and re-reads the entries when it moved, keeping the last run times it knows.
It never sleeps longer than ``DEFAULT_MAX_INTERVAL`` (5 s), so a change takes effect
within that time.

    store = ScheduleStore("celerybeat-schedule.sqlite3")
    store.set("cleanup", "proj.cleanup", crontab(minute=0, hour=3))
    store.set("ping", "proj.ping", 30.0, enabled=False)

Run beat with ``-S sqlite -s celerybeat-schedule.sqlite3``. At start, entries from
``beat_schedule`` that the store lacks are added to it; from then on the store rules.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from ..schedules import BaseSchedule, crontab, maybe_schedule, schedule, solar
from ..utils.sqlite import SQLiteFile
from .scheduler import ScheduleEntry, Scheduler, entries_from_config

__all__ = ["ScheduleStore", "SQLiteScheduler", "schedule_to_json", "schedule_from_json"]

DEFAULT_MAX_INTERVAL = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_beat_entry (
    name TEXT PRIMARY KEY, task TEXT NOT NULL, schedule TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '[]', kwargs TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}', enabled INTEGER NOT NULL DEFAULT 1,
    last_run_at TEXT, total_run_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS celeriac_beat_version (id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL);
INSERT OR IGNORE INTO celeriac_beat_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS celeriac_beat_ins AFTER INSERT ON celeriac_beat_entry
BEGIN UPDATE celeriac_beat_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS celeriac_beat_del AFTER DELETE ON celeriac_beat_entry
BEGIN UPDATE celeriac_beat_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS celeriac_beat_upd
AFTER UPDATE OF task, schedule, args, kwargs, options, enabled ON celeriac_beat_entry
BEGIN UPDATE celeriac_beat_version SET version = version + 1; END;
"""


def _field(value: Any) -> Any:
    return value if isinstance(value, (str, int)) else sorted(value)


def schedule_to_json(value: Any) -> dict[str, Any]:
    """A JSON-able description of a schedule.

    Raises:
        TypeError: a schedule type this store cannot describe.
    """
    sched = maybe_schedule(value)
    if isinstance(sched, crontab):
        minute, hour, dow, dom, moy = sched._orig
        return {"type": "crontab", "minute": _field(minute), "hour": _field(hour),
                "day_of_week": _field(dow), "day_of_month": _field(dom),
                "month_of_year": _field(moy)}
    if isinstance(sched, solar):
        return {"type": "solar", "event": sched.event, "lat": sched.lat, "lon": sched.lon}
    if isinstance(sched, schedule):
        return {"type": "interval", "every": sched.seconds, "relative": sched.relative}
    raise TypeError(f"cannot store {value!r} in the schedule store")


def schedule_from_json(data: dict[str, Any], app: Any = None) -> BaseSchedule:
    kind = data.get("type")
    if kind == "crontab":
        return crontab(data.get("minute", "*"), data.get("hour", "*"),
                       data.get("day_of_week", "*"), data.get("day_of_month", "*"),
                       data.get("month_of_year", "*"), app=app)
    if kind == "solar":
        return solar(data["event"], data["lat"], data["lon"], app=app)
    if kind == "interval":
        return schedule(timedelta(seconds=data["every"]), bool(data.get("relative")), app=app)
    raise ValueError(f"unknown schedule type {kind!r}")


class ScheduleStore:
    """Periodic task entries in an SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = SQLiteFile(path, _SCHEMA)

    def set(self, name: str, task: str, schedule: Any, args: Any = (),
            kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
            enabled: bool = True) -> None:
        """Add or change an entry (its last run time is kept)."""
        row = (task, json.dumps(schedule_to_json(schedule)), json.dumps(list(args or ())),
               json.dumps(dict(kwargs or {})), json.dumps(dict(options or {})), int(enabled))
        self.db.write(lambda conn: conn.execute(
            "INSERT INTO celeriac_beat_entry (name, task, schedule, args, kwargs, options, "
            "enabled) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "task=excluded.task, schedule=excluded.schedule, args=excluded.args, "
            "kwargs=excluded.kwargs, options=excluded.options, enabled=excluded.enabled",
            (name, *row)))

    def add_missing(self, entries: dict[str, ScheduleEntry]) -> None:
        have = set(self.names())
        for name, entry in entries.items():
            if name not in have:
                self.set(name, entry.task, entry.schedule, entry.args, entry.kwargs,
                         entry.options)

    def delete(self, name: str) -> None:
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM celeriac_beat_entry WHERE name = ?", (name,)))

    def names(self) -> list[str]:
        rows = self.db.connection().execute("SELECT name FROM celeriac_beat_entry").fetchall()
        return [r[0] for r in rows]

    def version(self) -> int:
        row = self.db.connection().execute(
            "SELECT version FROM celeriac_beat_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def entries(self, app: Any = None) -> dict[str, ScheduleEntry]:
        """The enabled entries."""
        rows = self.db.connection().execute(
            "SELECT name, task, schedule, args, kwargs, options FROM celeriac_beat_entry "
            "WHERE enabled = 1").fetchall()
        return {name: ScheduleEntry(name, task, schedule_from_json(json.loads(sched), app),
                                    json.loads(args), json.loads(kwargs), json.loads(options),
                                    app=app)
                for name, task, sched, args, kwargs, options in rows}

    def load_state(self) -> dict[str, Any]:
        rows = self.db.connection().execute(
            "SELECT name, last_run_at, total_run_count FROM celeriac_beat_entry").fetchall()
        return {name: {"last_run_at": last, "total_run_count": count}
                for name, last, count in rows}

    def save_state(self, state: dict[str, Any]) -> None:
        def txn(conn: Any) -> None:
            conn.executemany(
                "UPDATE celeriac_beat_entry SET last_run_at = ?, total_run_count = ? "
                "WHERE name = ?",
                [(s["last_run_at"], s["total_run_count"], name) for name, s in state.items()])

        self.db.write(txn)

    def close(self) -> None:
        self.db.close()


class SQLiteScheduler(Scheduler):
    """Entries and last run times in a ``ScheduleStore``; re-read when they change.

    Args:
        schedule_filename: the SQLite file (default ``beat_schedule_filename``, with a
            ``.sqlite3`` suffix added when the name has none).
    """

    def __init__(self, app: Any, max_interval: float | None = None,
                 schedule_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, max_interval or DEFAULT_MAX_INTERVAL, **kwargs)
        name = schedule_filename or app.conf.beat_schedule_filename
        if not os.path.splitext(name)[1]:
            name += ".sqlite3"
        self.store = ScheduleStore(os.path.abspath(name))
        self._version = -1

    def read_entries(self) -> dict[str, ScheduleEntry]:
        if self._version < 0:
            self.store.add_missing(entries_from_config(self.app))
        self._version = self.store.version()
        return self.store.entries(self.app)

    def load_state(self) -> dict[str, Any]:
        return self.store.load_state()

    def save_state(self, state: dict[str, Any]) -> None:
        self.store.save_state(state)

    def tick(self) -> float:
        if self.store.version() != self._version:
            self.setup()
        return super().tick()

    def close(self) -> None:
        super().close()
        self.store.close()
