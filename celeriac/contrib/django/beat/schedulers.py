"""``beat -S django``: periodic tasks read from the Django database while beat runs.

``DatabaseScheduler`` reads the enabled ``PeriodicTask`` rows, keeps their last run
times and run counts in the rows, and re-reads them whenever ``PeriodicTasks`` says
something changed (checked at every tick; beat sleeps at most ``--max-interval``,
5 s by default). Entries of ``beat_schedule`` that the database lacks are added to it
at start, as django-celery-beat does; from then on the database rules.

A task with ``start_time`` waits for it; one whose ``expires`` passed is not sent; a
one-off task and a clocked one run once and are then disabled.
"""

from __future__ import annotations

import json
import logging
import zoneinfo
from datetime import datetime, timedelta, tzinfo
from typing import Any

from ....beat.scheduler import ScheduleEntry, Scheduler, entries_from_config
from ....exceptions import ImproperlyConfigured
from ....schedules import BaseSchedule, crontab, schedstate, schedule, solar
from ..fixup import setup_django

logger = logging.getLogger("celeriac.beat")

APP = "celeriac.contrib.django.beat"
DEFAULT_MAX_INTERVAL = 5.0
#: how long a disabled, expired or finished entry waits before it is looked at again
IDLE = 5.0


class ZonedCrontab(crontab):
    """A crontab read in its row's time zone rather than the app's."""

    def __init__(self, minute: Any, hour: Any, day_of_week: Any, day_of_month: Any,
                 month_of_year: Any, zone: str, app: Any = None) -> None:
        super().__init__(minute, hour, day_of_week, day_of_month, month_of_year, app=app)
        self.zone = zoneinfo.ZoneInfo(zone)

    @property
    def tz(self) -> tzinfo:
        return self.zone


class clocked(BaseSchedule):  # noqa: N801 - django-celery-beat's name
    """Due once, at ``when`` (an aware datetime)."""

    def __init__(self, when: datetime, app: Any = None) -> None:
        super().__init__(app=app)
        self.when = when

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.when - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        return schedstate(remaining <= 0, IDLE if remaining <= 0 else remaining)

    def __repr__(self) -> str:
        return f"<clocked: {self.when.isoformat()}>"


def from_db(value: datetime | None) -> datetime | None:
    """An aware datetime for one read from the database: with ``USE_TZ = False`` Django
    gives naive ones, in ``TIME_ZONE``."""
    if value is None or value.tzinfo is not None:
        return value
    from django.utils import timezone

    return timezone.make_aware(value, timezone.get_default_timezone())


def to_db(value: datetime) -> datetime:
    """``value`` as Django stores it: naive, in ``TIME_ZONE``, with ``USE_TZ = False``."""
    from django.conf import settings
    from django.utils import timezone

    if settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def schedule_of(row: Any, app: Any = None) -> BaseSchedule:
    """The celeriac schedule a ``PeriodicTask`` row stands for.

    Raises:
        ValueError: the row has no schedule, or a field does not parse.
    """
    if row.interval_id:
        interval = row.interval
        return schedule(timedelta(**{interval.period: interval.every}), app=app)
    if row.crontab_id:
        c = row.crontab
        return ZonedCrontab(c.minute, c.hour, c.day_of_week, c.day_of_month,
                            c.month_of_year, zone=c.timezone or "UTC", app=app)
    if row.solar_id:
        s = row.solar
        return solar(s.event, float(s.latitude), float(s.longitude), app=app)
    if row.clocked_id:
        return clocked(from_db(row.clocked.clocked_time), app=app)  # type: ignore[arg-type]
    raise ValueError("it has no schedule (interval, crontab, solar or clocked)")


def options_of(row: Any) -> dict[str, Any]:
    """The sending options of a ``PeriodicTask`` row (``apply_async``'s names)."""
    options: dict[str, Any] = {}
    for name in ("queue", "exchange", "routing_key", "priority"):
        value = getattr(row, name)
        if value not in (None, ""):
            options[name] = value
    headers = json.loads(row.headers or "{}")
    # django-celery-beat names the entry in the message, where monitors look for it
    headers.setdefault("periodic_task_name", row.name)
    options["headers"] = headers
    if row.expire_seconds:
        options["expires"] = row.expire_seconds
    elif row.expires:
        options["expires"] = from_db(row.expires)
    return options


class ModelEntry(ScheduleEntry):
    """An entry read from a row, with the row's start time, expiry and one-off flag."""

    def __init__(self, row: Any, app: Any = None) -> None:
        super().__init__(row.name, row.task, schedule_of(row, app),
                         json.loads(row.args or "[]"), json.loads(row.kwargs or "{}"),
                         options_of(row), app=app)
        self.start_time = from_db(row.start_time)
        self.expires = from_db(row.expires)
        self.once = bool(row.one_off or row.clocked_id)

    def is_due(self) -> tuple[bool, float]:
        now = self.schedule.now()
        if self.once and self.total_run_count > 0:
            return False, IDLE
        if self.expires is not None and now >= self.expires:
            return False, IDLE
        if self.start_time is not None and now < self.start_time:
            return False, min((self.start_time - now).total_seconds(), IDLE)
        return super().is_due()


class DatabaseScheduler(Scheduler):
    """Entries and their run state in the ``PeriodicTask`` table (Django's ORM)."""

    def __init__(self, app: Any, max_interval: float | None = None,
                 schedule_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, max_interval or DEFAULT_MAX_INTERVAL, **kwargs)
        setup_django()
        from django.apps import apps

        if not apps.is_installed(APP):
            raise ImproperlyConfigured(
                f"beat -S django needs {APP!r} in INSTALLED_APPS (then run "
                "'python manage.py migrate')")
        from .models import PeriodicTask, PeriodicTasks

        self.PeriodicTask = PeriodicTask
        self.PeriodicTasks = PeriodicTasks
        self._stamp: Any = None
        self._seeded = False
        self._saved: dict[str, Any] = {}

    def read_entries(self) -> dict[str, ScheduleEntry]:
        if not self._seeded:
            self._seed(entries_from_config(self.app))
            self._seeded = True
        self._stamp = self.PeriodicTasks.last_change()
        entries: dict[str, ScheduleEntry] = {}
        rows = self.PeriodicTask.objects.filter(enabled=True).select_related(
            "interval", "crontab", "solar", "clocked")
        for row in rows:
            try:
                entries[row.name] = ModelEntry(row, self.app)
            except (ValueError, TypeError, zoneinfo.ZoneInfoNotFoundError) as exc:
                logger.error("beat: periodic task %r is skipped: %s", row.name, exc)
        return entries

    def _seed(self, configured: dict[str, ScheduleEntry]) -> None:
        from .models import CrontabSchedule, IntervalSchedule, SolarSchedule

        have = set(self.PeriodicTask.objects.values_list("name", flat=True))
        for name, entry in configured.items():
            if name in have:
                continue
            sched, fields = entry.schedule, {}
            if isinstance(sched, crontab):
                minute, hour, dow, dom, moy = (_text(v) for v in sched._orig)
                fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
                    minute=minute, hour=hour, day_of_week=dow, day_of_month=dom,
                    month_of_year=moy, timezone=str(sched.tz))
            elif isinstance(sched, solar):
                fields["solar"], _ = SolarSchedule.objects.get_or_create(
                    event=sched.event, latitude=sched.lat, longitude=sched.lon)
            elif isinstance(sched, schedule) and sched.seconds == int(sched.seconds):
                fields["interval"], _ = IntervalSchedule.objects.get_or_create(
                    every=int(sched.seconds), period="seconds")
            else:
                logger.warning("beat: beat_schedule entry %r (%r) cannot be kept in the "
                               "database; it is not run by -S django", name, sched)
                continue
            options = dict(entry.options)
            self.PeriodicTask.objects.create(
                name=name, task=entry.task, args=json.dumps(entry.args),
                kwargs=json.dumps(entry.kwargs), queue=options.pop("queue", None),
                exchange=options.pop("exchange", None),
                routing_key=options.pop("routing_key", None),
                priority=options.pop("priority", None),
                headers=json.dumps(options.pop("headers", {})), **fields)
            if options:
                logger.warning("beat: beat_schedule entry %r: options %s are not kept in "
                               "the database", name, ", ".join(sorted(options)))

    def load_state(self) -> dict[str, Any]:
        state = {}
        for name, last, count in self.PeriodicTask.objects.values_list(
                "name", "last_run_at", "total_run_count"):
            last = from_db(last)
            state[name] = {"last_run_at": last.isoformat() if last else None,
                           "total_run_count": count}
        self._saved = dict(state)
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        for name, values in state.items():
            if self._saved.get(name) == values:
                continue
            last = values["last_run_at"]
            # update(): no signal, so the scheduler's own writes are no "change"
            self.PeriodicTask.objects.filter(name=name).update(
                last_run_at=to_db(datetime.fromisoformat(last)) if last else None,
                total_run_count=values["total_run_count"])
            self._saved[name] = dict(values)

    def apply_entry(self, entry: ScheduleEntry) -> None:
        super().apply_entry(entry)
        if isinstance(entry, ModelEntry) and entry.once:
            self.PeriodicTask.objects.filter(name=entry.name).update(enabled=False)
            self.PeriodicTasks.update_changed()

    def tick(self) -> float:
        from django.db import DatabaseError, close_old_connections

        try:
            close_old_connections()
            if self.PeriodicTasks.last_change() != self._stamp:
                self.setup()
        except DatabaseError as exc:
            # the database is away: keep sending what is known, look again next tick
            logger.warning("beat: cannot read the periodic tasks (%s); keeping the %d "
                           "known", exc, len(self.entries))
        return super().tick()


def _text(value: Any) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    return ",".join(str(v) for v in sorted(value))
