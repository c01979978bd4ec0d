"""The beat schedule as the beat page shows it: entries, last and next run, leader.

Read, never run: the entries come from where the app's beat takes them (the
``beat_schedule`` setting, the SQLite schedule store of ``-S sqlite``, or the Django
tables of ``-S django``), the last run times from where that beat keeps them (its state
file, the store, the tables) and from the leader lock, which the leader updates at every
run; the lock also tells who leads and until when.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from ..beat.lease import LeaderLock
from ..beat.lock import lock_for_url
from ..beat.scheduler import (PersistentScheduler, ScheduleEntry, Scheduler,
                              entries_from_config, install_default_entries)
from ..beat.service import default_lock_name, scheduler_class
from ..beat.store import SQLiteScheduler, schedule_from_json, schedule_to_json


def beat_schedule(app: Any, schedule_filename: str | None = None) -> dict[str, Any]:
    """``{"entries": [...], "leader": {"owner", "expires"} | None, "source": ...}``.

    Each entry: ``name, task, schedule`` (``schedule_to_json``'s description plus
    ``"human"``, its repr), ``args, kwargs, options, enabled, last_run_at,
    next_run_at`` (epoch seconds or None), ``total_run_count``, ``due`` (bool).
    ``source`` is ``config``, ``sqlite``, ``django``, or a custom scheduler's class
    name (its entries are read from the settings). An entry that never ran counts
    from now, as beat counts it from its start.

    Args:
        schedule_filename: beat's ``-s`` (default ``beat_schedule_filename``).
    """
    cls = scheduler_class(app)
    lock, leader, shared = _leader(app)
    try:
        if issubclass(cls, SQLiteScheduler):
            source, rows = "sqlite", _sqlite_rows(app, schedule_filename)
        elif _is_django(cls):
            source, rows = "django", _django_rows(app)
        else:
            source = "config" if cls in (Scheduler, PersistentScheduler) else cls.__name__
            rows = _config_rows(app, cls, schedule_filename)
    finally:
        if lock is not None:
            lock.close()
    now = datetime.now(timezone.utc)
    for entry, _ in rows:
        _merge_shared(entry, shared)
    entries = [_describe(entry, enabled, now) for entry, enabled in rows]
    return {"entries": sorted(entries, key=lambda e: e["name"]), "leader": leader,
            "source": source}


def _is_django(cls: type) -> bool:
    return cls.__module__.startswith("celeriac.contrib.django")


# -- entries --------------------------------------------------------------------------
def _config_rows(app: Any, cls: type,
                 schedule_filename: str | None) -> list[tuple[ScheduleEntry, bool]]:
    entries = entries_from_config(app)
    install_default_entries(app, entries)
    saved: dict[str, Any] = {}
    if issubclass(cls, PersistentScheduler):
        saved = PersistentScheduler(app, schedule_filename=schedule_filename).load_state()
    for name, entry in entries.items():
        _apply_state(entry, saved.get(name))
    return [(entry, True) for entry in entries.values()]


def _sqlite_rows(app: Any, schedule_filename: str | None) -> list[tuple[ScheduleEntry, bool]]:
    import sqlite3

    name = schedule_filename or app.conf.beat_schedule_filename
    if not os.path.splitext(name)[1]:
        name += ".sqlite3"  # as SQLiteScheduler names it
    if not os.path.exists(name):
        return []
    # Read only: the dashboard must not create the store, nor seed it as beat does.
    conn = sqlite3.connect(f"file:{os.path.abspath(name)}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT name, task, schedule, args, kwargs, options, enabled, "
                            "last_run_at, total_run_count FROM celeriac_beat_entry").fetchall()
    finally:
        conn.close()
    out = []
    for name, task, sched, args, kwargs, options, enabled, last, count in rows:
        entry = ScheduleEntry(name, task, schedule_from_json(json.loads(sched), app),
                              json.loads(args), json.loads(kwargs), json.loads(options),
                              app=app)
        _apply_state(entry, {"last_run_at": last, "total_run_count": count})
        out.append((entry, bool(enabled)))
    return out


def _django_rows(app: Any) -> list[tuple[ScheduleEntry, bool]]:
    from ..contrib.django.beat.schedulers import ModelEntry, from_db
    from ..contrib.django.fixup import setup_django

    setup_django()
    from ..contrib.django.beat.models import PeriodicTask

    out: list[tuple[ScheduleEntry, bool]] = []
    for row in PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked"):
        try:
            entry = ModelEntry(row, app)
        except (ValueError, TypeError, LookupError):
            continue  # beat skips it too (and logs why)
        entry.last_run_at = from_db(row.last_run_at)
        entry.total_run_count = row.total_run_count
        out.append((entry, bool(row.enabled)))
    return out


def _apply_state(entry: ScheduleEntry, state: dict[str, Any] | None) -> None:
    if not state:
        return
    raw = state.get("last_run_at")
    entry.last_run_at = datetime.fromisoformat(raw) if raw else None
    entry.total_run_count = int(state.get("total_run_count") or 0)


def _merge_shared(entry: ScheduleEntry, shared: dict[str, Any]) -> None:
    """Give the entry the later of its own last run and the one the leader shared."""
    state = shared.get(entry.name)
    if not isinstance(state, dict):
        return
    raw = state.get("last_run_at")
    if raw:
        when = datetime.fromisoformat(raw)
        if entry.last_run_at is None or when > entry.last_run_at:
            entry.last_run_at = when
            entry.total_run_count = max(entry.total_run_count,
                                        int(state.get("total_run_count") or 0))


def _describe(entry: ScheduleEntry, enabled: bool, now: datetime) -> dict[str, Any]:
    sched = entry.schedule
    try:
        shape: dict[str, Any] = schedule_to_json(sched)
    except TypeError:
        shape = {"type": type(sched).__name__}
    shape["human"] = repr(sched)
    last = entry.last_run_at
    due, next_run_at = False, None
    if enabled:
        entry.last_run_at = last or now
        try:
            due, _ = entry.is_due()
            next_run_at = _next_run(sched, entry.last_run_at, now)
        except (NotImplementedError, ValueError, TypeError):
            pass  # a schedule that cannot tell: shown without a next run
    return {"name": entry.name, "task": entry.task, "schedule": shape,
            "args": entry.args, "kwargs": entry.kwargs, "options": _plain(entry.options),
            "enabled": enabled, "last_run_at": last.timestamp() if last else None,
            "next_run_at": next_run_at, "total_run_count": entry.total_run_count,
            "due": bool(due)}


def _next_run(sched: Any, last: datetime, now: datetime) -> float:
    """When beat sends it next (epoch seconds); now when it is overdue."""
    after = getattr(sched, "next_run_after", None)
    if after is not None:
        # a crontab says its exact time, where now + remaining would drift by the
        # moment between the two clock reads
        when = after(last).timestamp()
    else:
        when = now.timestamp() + sched.remaining_estimate(last).total_seconds()
    return max(when, now.timestamp())


def _plain(value: Any) -> Any:
    """Options as JSON carries them (a datetime ``expires``, a ``Queue``...)."""
    return json.loads(json.dumps(value, default=str))


# -- the leader -----------------------------------------------------------------------
def _leader(app: Any) -> tuple[LeaderLock | None, dict[str, Any] | None, dict[str, Any]]:
    """(the lock, its holder, the state its leader shared) for the app's broker; the
    holder is None when nobody holds it, or where the lock cannot tell (RabbitMQ's:
    an exclusive queue names no owner)."""
    try:
        lock = lock_for_url(app.broker_url, default_lock_name(app), app._broker_options())
    except Exception:  # noqa: BLE001 - no lock for this broker: no leader to show
        return None, None, {}
    try:
        held = lock.holder()
        holder = None if held is None else {"owner": held[0], "expires": held[1]}
        shared = lock.load_state() or {}
    except Exception:  # noqa: BLE001 - the store is away: show the schedule without it
        holder, shared = None, {}
    return lock, holder, shared


__all__ = ["beat_schedule"]
