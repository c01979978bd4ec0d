"""The scheduler: which periodic tasks are due, sending them, remembering when they ran.

Entries come from ``beat_schedule`` (old name ``CELERYBEAT_SCHEDULE``), which
``app.add_periodic_task`` and ``@app.on_after_configure.connect`` handlers fill in.

Last run times are kept in a JSON state file (``-s``/``beat_schedule_filename``),
written atomically (a temporary file renamed over the old one) after every run.

Restart rule (Celery's): an entry whose last run is older than its interval runs once,
at once, when beat starts; runs missed while beat was down are not repeated one by one.
An entry seen for the first time counts as having run at start: an every-10-minutes
entry first runs 10 minutes after beat starts, a crontab entry at its next matching time.
An entry whose schedule changed in the settings keeps its last run time.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from typing import Any, Iterable

from ..schedules import BaseSchedule, crontab, maybe_schedule

__all__ = ["ScheduleEntry", "Scheduler", "PersistentScheduler", "entries_from_config"]

logger = logging.getLogger("celeriac.beat")

DEFAULT_MAX_INTERVAL = 300.0


class ScheduleEntry:
    """One periodic task: what to send, when, and when it last ran.

    Args:
        name: the entry's key in ``beat_schedule``.
        task: the task's name.
        schedule: a schedule, a timedelta or a number of seconds.
        args, kwargs: the task's arguments.
        options: ``apply_async`` options (``queue``, ``expires``, ``priority``...).
        relative: for interval schedules, round to the interval's resolution.
        last_run_at: aware datetime of the last run (None: never).
        total_run_count: how many times beat sent it.
    """

    def __init__(self, name: str, task: str, schedule: Any, args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 relative: bool = False, last_run_at: datetime | None = None,
                 total_run_count: int = 0, app: Any = None) -> None:
        self.name = name
        self.task = task
        self.schedule: BaseSchedule = maybe_schedule(schedule, relative, app)
        self.args = list(args or ())
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.last_run_at = last_run_at
        self.total_run_count = total_run_count

    def is_due(self) -> tuple[bool, float]:
        assert self.last_run_at is not None
        due, next_check = self.schedule.is_due(self.last_run_at)
        return bool(due), float(next_check)

    def __repr__(self) -> str:
        return f"<ScheduleEntry: {self.name} {self.task}(*{self.args}, **{self.kwargs}) " \
               f"{self.schedule!r}>"


def entries_from_config(app: Any) -> dict[str, ScheduleEntry]:
    """The entries of ``app.conf.beat_schedule``.

    Raises:
        ValueError: an entry lacks ``task`` or ``schedule``.
    """
    entries = {}
    for name, spec in dict(app.conf.beat_schedule or {}).items():
        spec = dict(spec)
        if "task" not in spec or "schedule" not in spec:
            raise ValueError(f"beat_schedule entry {name!r} needs 'task' and 'schedule'")
        entries[name] = ScheduleEntry(
            name, spec["task"], spec["schedule"], spec.get("args") or (),
            spec.get("kwargs") or {}, spec.get("options") or {},
            bool(spec.get("relative", False)), app=app)
    return entries


def install_default_entries(app: Any, entries: dict[str, ScheduleEntry]) -> None:
    """Add Celery's ``celery.backend_cleanup`` entry (daily at 04:00, expiring after
    12 hours) when results expire and the backend cannot expire them itself, unless
    an entry of that name is configured already."""
    if "celery.backend_cleanup" in entries or not app.conf.result_expires:
        return
    if app.backend.supports_autoexpire:
        return
    entries["celery.backend_cleanup"] = ScheduleEntry(
        "celery.backend_cleanup", "celery.backend_cleanup", crontab(minute="0", hour="4"),
        options={"expires": 12 * 3600}, app=app)


class Scheduler:
    """Keeps the entries and sends the due ones; state lives in memory only.

    Subclasses override ``load_state``/``save_state`` to persist last run times, and
    ``read_entries`` to take entries from somewhere other than the settings.

    Args:
        app: the app whose ``send_task`` is used.
        max_interval: longest sleep between checks (seconds).
    """

    def __init__(self, app: Any, max_interval: float | None = None, **kwargs: Any) -> None:
        self.app = app
        self.max_interval = float(max_interval or app.conf.beat_max_loop_interval
                                  or DEFAULT_MAX_INTERVAL)
        self.entries: dict[str, ScheduleEntry] = {}
        self.on_run: Any = None  # called with the entry just before it is sent

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    # -- entries and state -------------------------------------------------------------
    def read_entries(self) -> dict[str, ScheduleEntry]:
        """The entries as configured now (last run times not filled in)."""
        return entries_from_config(self.app)

    def load_state(self) -> dict[str, Any]:
        """``{entry name: {"last_run_at": iso, "total_run_count": n}}`` as saved."""
        return {}

    def save_state(self, state: dict[str, Any]) -> None:
        """Keep the state (called after every run)."""

    def state(self) -> dict[str, Any]:
        return {name: {"last_run_at": e.last_run_at.isoformat() if e.last_run_at else None,
                       "total_run_count": e.total_run_count}
                for name, e in self.entries.items()}

    def setup(self, extra_state: dict[str, Any] | None = None) -> None:
        """(Re)build the entries and merge the saved last run times (the latest wins)."""
        now = self.now()
        saved = self.load_state()
        entries = self.read_entries()
        install_default_entries(self.app, entries)
        for name, entry in entries.items():
            last = _latest(self.entries.get(name), saved.get(name),
                           (extra_state or {}).get(name))
            entry.last_run_at = last[0] or now
            entry.total_run_count = last[1]
        self.entries = entries

    # -- running -----------------------------------------------------------------------
    def tick(self) -> float:
        """Send what is due; return how long to sleep before the next check."""
        sleep = self.max_interval
        for entry in list(self.entries.values()):
            due, next_check = entry.is_due()
            if due:
                self.apply_entry(entry)
            sleep = min(sleep, next_check)
        return max(sleep, 0.0)

    def apply_entry(self, entry: ScheduleEntry) -> None:
        """Record the run, then send the task (a crash in between loses the run
        rather than sending it twice)."""
        entry.last_run_at = self.now()
        entry.total_run_count += 1
        if self.on_run is not None:
            self.on_run(entry)
        self.save_state(self.state())
        logger.info("beat: Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.app.send_task(entry.task, entry.args, entry.kwargs, **entry.options)
        except Exception:
            logger.exception("beat: could not send due task %s (%s)", entry.name, entry.task)

    def close(self) -> None:
        self.save_state(self.state())


def _latest(*sources: Any) -> tuple[datetime | None, int]:
    best: datetime | None = None
    count = 0
    for source in sources:
        if source is None:
            continue
        if isinstance(source, ScheduleEntry):
            when, runs = source.last_run_at, source.total_run_count
        else:
            raw = source.get("last_run_at")
            when = datetime.fromisoformat(raw) if raw else None
            runs = int(source.get("total_run_count") or 0)
        if when is not None and (best is None or when > best):
            best = when
        count = max(count, runs)
    return best, count


class PersistentScheduler(Scheduler):
    """Keeps last run times in a JSON file.

    Args:
        schedule_filename: the state file (default ``beat_schedule_filename``); a
            ``.json`` suffix is added when the name has none.
    """

    def __init__(self, app: Any, max_interval: float | None = None,
                 schedule_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, max_interval, **kwargs)
        name = schedule_filename or app.conf.beat_schedule_filename
        if not os.path.splitext(name)[1]:
            name += ".json"
        self.filename = os.path.abspath(name)

    def load_state(self) -> dict[str, Any]:
        try:
            with open(self.filename, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("beat: ignoring unreadable state file %s: %s", self.filename, exc)
            return {}
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        return entries if isinstance(entries, dict) else {}

    def save_state(self, state: dict[str, Any]) -> None:
        folder = os.path.dirname(self.filename) or "."
        fd, tmp = tempfile.mkstemp(prefix=".celeriac-beat-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "entries": state}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.filename)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
