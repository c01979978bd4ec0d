"""Periodic tasks and their schedules, with django-celery-beat's field names.

A ``PeriodicTask`` has exactly one schedule: an interval, a crontab, a solar event or
a clocked time (which runs once). Every save or delete of a task or a schedule stamps
``PeriodicTasks.last_update``; the scheduler re-reads the tasks when the stamp moves.
Bulk ``QuerySet.update()`` sends no signals: call ``PeriodicTasks.update_changed()``
after one.
"""

from __future__ import annotations

import json
import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import signals
from django.utils import timezone

PERIODS = ("days", "hours", "minutes", "seconds", "microseconds")
SOLAR_EVENTS = ("dawn_astronomical", "dawn_civil", "dawn_nautical", "dusk_astronomical",
                "dusk_civil", "dusk_nautical", "solar_noon", "sunrise", "sunset")
SCHEDULE_FIELDS = ("interval", "crontab", "solar", "clocked")


class IntervalSchedule(models.Model):
    """Every ``every`` ``period`` (``days``, ``hours``, ``minutes``, ``seconds``...)."""

    DAYS, HOURS, MINUTES, SECONDS, MICROSECONDS = PERIODS
    every = models.PositiveIntegerField("number of periods")
    period = models.CharField("interval period", max_length=24,
                              choices=[(p, p.title()) for p in PERIODS])

    class Meta:
        ordering = ["period", "every"]
        verbose_name = "interval"

    def __str__(self) -> str:
        return f"every {self.every} {self.period}"


def validate_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {name!r}") from exc


class CrontabSchedule(models.Model):
    """Crontab fields, read in ``timezone``."""

    minute = models.CharField("minute(s)", max_length=240, default="*")
    hour = models.CharField("hour(s)", max_length=96, default="*")
    day_of_month = models.CharField("day(s) of the month", max_length=124, default="*")
    month_of_year = models.CharField("month(s) of the year", max_length=64, default="*")
    day_of_week = models.CharField("day(s) of the week", max_length=64, default="*")
    timezone = models.CharField("time zone", max_length=63, default="UTC",
                                validators=[validate_timezone])

    class Meta:
        ordering = ["month_of_year", "day_of_month", "day_of_week", "hour", "minute",
                    "timezone"]
        verbose_name = "crontab"

    def clean(self) -> None:
        from ....schedules import ParseException, crontab

        try:
            crontab(self.minute, self.hour, self.day_of_week, self.day_of_month,
                    self.month_of_year)
        except (ParseException, ValueError) as exc:
            raise ValidationError(str(exc)) from exc

    def __str__(self) -> str:
        return (f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} "
                f"{self.day_of_week} (m/h/dM/MY/d) {self.timezone}")


class SolarSchedule(models.Model):
    """A solar event (sunrise, sunset...) at a place."""

    event = models.CharField("solar event", max_length=24,
                             choices=[(e, e.replace("_", " ")) for e in SOLAR_EVENTS])
    latitude = models.DecimalField("latitude", max_digits=9, decimal_places=6)
    longitude = models.DecimalField("longitude", max_digits=9, decimal_places=6)

    class Meta:
        ordering = ["event", "latitude", "longitude"]
        unique_together = [("event", "latitude", "longitude")]
        verbose_name = "solar event"

    def __str__(self) -> str:
        return f"{self.event} ({self.latitude}, {self.longitude})"


class ClockedSchedule(models.Model):
    """One moment: a task on it runs once, then is disabled."""

    clocked_time = models.DateTimeField("clock time")

    class Meta:
        ordering = ["clocked_time"]
        verbose_name = "clocked"

    def __str__(self) -> str:
        return f"{self.clocked_time}"


class PeriodicTask(models.Model):
    """A task to send on a schedule, with its arguments and sending options."""

    name = models.CharField("name", max_length=200, unique=True)
    task = models.CharField("task name", max_length=200)
    interval = models.ForeignKey(IntervalSchedule, on_delete=models.CASCADE, null=True,
                                 blank=True)
    crontab = models.ForeignKey(CrontabSchedule, on_delete=models.CASCADE, null=True,
                                blank=True)
    solar = models.ForeignKey(SolarSchedule, on_delete=models.CASCADE, null=True,
                              blank=True)
    clocked = models.ForeignKey(ClockedSchedule, on_delete=models.CASCADE, null=True,
                                blank=True)
    args = models.TextField("positional arguments", blank=True, default="[]",
                            help_text='JSON list, e.g. ["arg1", "arg2"]')
    kwargs = models.TextField("keyword arguments", blank=True, default="{}",
                              help_text='JSON object, e.g. {"argument": "value"}')
    queue = models.CharField("queue override", max_length=200, blank=True, null=True,
                             default=None)
    exchange = models.CharField("exchange", max_length=200, blank=True, null=True,
                                default=None)
    routing_key = models.CharField("routing key", max_length=200, blank=True, null=True,
                                   default=None)
    headers = models.TextField("message headers", blank=True, default="{}")
    priority = models.PositiveIntegerField("priority", blank=True, null=True, default=None)
    expires = models.DateTimeField("expires", blank=True, null=True,
                                   help_text="Not sent after this time.")
    expire_seconds = models.PositiveIntegerField(
        "expire seconds", blank=True, null=True,
        help_text="A sent task expires this many seconds after it was sent.")
    one_off = models.BooleanField("one-off task", default=False)
    start_time = models.DateTimeField("start time", blank=True, null=True)
    enabled = models.BooleanField("enabled", default=True)
    last_run_at = models.DateTimeField("last run", editable=False, blank=True, null=True)
    total_run_count = models.PositiveIntegerField("total run count", default=0,
                                                  editable=False)
    date_changed = models.DateTimeField("last modified", auto_now=True)
    description = models.TextField("description", blank=True)

    class Meta:
        verbose_name = "periodic task"
        verbose_name_plural = "periodic tasks"

    def clean(self) -> None:
        chosen = [name for name in SCHEDULE_FIELDS if getattr(self, f"{name}_id")]
        if len(chosen) != 1:
            raise ValidationError("choose exactly one schedule: interval, crontab, solar "
                                  "or clocked")
        for field in ("args", "kwargs", "headers"):
            try:
                value = json.loads(getattr(self, field) or ("[]" if field == "args" else "{}"))
            except ValueError as exc:
                raise ValidationError({field: f"not valid JSON: {exc}"}) from exc
            if not isinstance(value, list if field == "args" else dict):
                raise ValidationError({field: "args is a JSON list, kwargs and headers "
                                              "JSON objects"})

    @property
    def schedule_row(self) -> Any:
        """The one schedule this task has (None if it has none)."""
        for name in SCHEDULE_FIELDS:
            if getattr(self, f"{name}_id"):
                return getattr(self, name)
        return None

    def __str__(self) -> str:
        return f"{self.name}: {self.schedule_row or 'no schedule'}"


class PeriodicTasks(models.Model):
    """One row whose ``last_update`` moves whenever any periodic task changes."""

    ident = models.SmallIntegerField(default=1, primary_key=True, unique=True)
    last_update = models.DateTimeField(null=False)

    @classmethod
    def update_changed(cls, **_: Any) -> None:
        cls.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})

    @classmethod
    def last_change(cls) -> Any:
        row = cls.objects.filter(ident=1).first()
        return row.last_update if row is not None else None


def connect_change_signals() -> None:
    """Stamp ``PeriodicTasks`` on every save and delete of a task or a schedule."""
    for model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule,
                  ClockedSchedule):
        uid = f"celeriac_beat_changed.{model.__name__}"
        signals.post_save.connect(_changed, sender=model, dispatch_uid=uid + ".save")
        signals.post_delete.connect(_changed, sender=model, dispatch_uid=uid + ".delete")


def _changed(sender: Any, instance: Any = None, update_fields: Any = None,
             **_: Any) -> None:
    # The scheduler's own bookkeeping (last run times) is no change to the schedule
    if update_fields is not None and set(update_fields) <= {"last_run_at",
                                                             "total_run_count"}:
        return
    PeriodicTasks.update_changed()
