"""The Django integration's pure parts: periodic task rows to schedules and options,
when the fix-up applies, and what a user without Django is told. Django is never set
up in this process (rows are stand-ins with the models' field names)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from celeriac import Celery
from celeriac.beat.service import scheduler_class
from celeriac.contrib.django.beat.schedulers import (ModelEntry, ZonedCrontab, clocked,
                                                     options_of, schedule_of)
from celeriac.contrib.django.fixup import wanted
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import schedule, solar


def row(**fields: Any) -> SimpleNamespace:
    values: dict[str, Any] = dict(
        name="entry", task="proj.tasks.ping", args="[]", kwargs="{}", queue=None,
        exchange=None, routing_key=None, priority=None, headers="{}", expires=None,
        expire_seconds=None, one_off=False, start_time=None, interval_id=None,
        crontab_id=None, solar_id=None, clocked_id=None)
    values.update(fields)
    for kind in ("interval", "crontab", "solar", "clocked"):
        if kind in fields:
            values[f"{kind}_id"] = 1
    return SimpleNamespace(**values)


def test_each_kind_of_row_becomes_its_schedule() -> None:
    every = schedule_of(row(interval=SimpleNamespace(every=90, period="minutes")))
    assert isinstance(every, schedule) and every.seconds == 5400
    cron = schedule_of(row(crontab=SimpleNamespace(
        minute="30", hour="4", day_of_week="mon-fri", day_of_month="*",
        month_of_year="*", timezone="Europe/Paris")))
    assert isinstance(cron, ZonedCrontab) and str(cron.tz) == "Europe/Paris"
    assert cron.minute == {30} and cron.hour == {4} and cron.day_of_week == {1, 2, 3, 4, 5}
    sun = schedule_of(row(solar=SimpleNamespace(event="sunset", latitude=Decimal("48.85"),
                                                longitude=Decimal("2.35"))))
    assert isinstance(sun, solar) and (sun.lat, sun.lon) == (48.85, 2.35)
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    once = schedule_of(row(clocked=SimpleNamespace(clocked_time=when)))
    assert isinstance(once, clocked) and not once.is_due(when).is_due
    with pytest.raises(ValueError, match="no schedule"):
        schedule_of(row())


def test_a_crontab_row_runs_at_its_own_zones_wall_clock() -> None:
    cron = schedule_of(row(crontab=SimpleNamespace(
        minute="0", hour="9", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="Asia/Tokyo")))
    after = datetime(2030, 6, 1, 1, 0, tzinfo=timezone.utc)  # 10:00 in Tokyo, so the
    # next run is 09:00 there tomorrow: midnight UTC
    assert cron.next_run_after(after) == datetime(2030, 6, 2, 0, 0, tzinfo=timezone.utc)


def test_sending_options_come_from_the_row() -> None:
    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    options = options_of(row(name="nightly", queue="reports", priority=3, routing_key="",
                             headers='{"tenant": "a"}', expires=expires))
    assert options == {"queue": "reports", "priority": 3, "expires": expires,
                       "headers": {"tenant": "a", "periodic_task_name": "nightly"}}
    assert options_of(row(expire_seconds=60, expires=expires))["expires"] == 60


def test_start_time_expiry_and_one_off_hold_an_entry_back() -> None:
    every = SimpleNamespace(every=1, period="seconds")
    now = datetime.now(timezone.utc)
    waiting = ModelEntry(row(interval=every, start_time=now + timedelta(hours=1)))
    waiting.last_run_at = now - timedelta(minutes=1)
    assert waiting.is_due()[0] is False
    expired = ModelEntry(row(interval=every, expires=now - timedelta(seconds=1)))
    expired.last_run_at = now - timedelta(minutes=1)
    assert expired.is_due()[0] is False
    once = ModelEntry(row(interval=every, one_off=True, args='[1, 2]'))
    once.last_run_at = now - timedelta(minutes=1)
    assert once.is_due()[0] is True and once.args == [1, 2]
    once.total_run_count = 1
    assert once.is_due()[0] is False


def test_fixup_applies_to_a_named_settings_module_or_djangos_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    assert not wanted() and not wanted("proj.celeryconfig")
    assert wanted("django.conf:settings") and wanted("django.conf.settings")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    assert wanted()


def test_plain_apps_get_no_django_fixup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    app = Celery("plain", broker="memory://", set_as_current=False)
    assert "_django_fixup" not in app.__dict__
    assert app.Task.__name__ == "Task"


def test_celery_beats_class_path_points_to_s_django() -> None:
    app = Celery("plain", broker="memory://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="-S django"):
        scheduler_class(app, "django_celery_beat.schedulers:DatabaseScheduler")
    assert scheduler_class(app, "django").__name__ == "DatabaseScheduler"


def test_without_django_the_extra_is_named() -> None:
    # Django is hidden from a fresh interpreter, as if it were not installed
    code = textwrap.dedent("""
        import os, sys, warnings
        sys.modules["django"] = None
        os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
        from celeriac import Celery
        from celeriac.exceptions import MissingDependency
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            app = Celery("nodj", broker="memory://", backend="django-db")
        print("warned:", [str(w.message) for w in caught])
        @app.task
        def add(x, y):
            return x + y
        for call in (lambda: add.delay_on_commit(1, 2), lambda: app.backend):
            try:
                call()
            except MissingDependency as exc:
                print("raised:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "celeriac[django]" in lines[0] and "Django fix-up" in lines[0]
    raised = [line for line in lines if line.startswith("raised:")]
    assert len(raised) == 2 and all("pip install 'celeriac[django]'" in r for r in raised)
    assert "delay_on_commit()" in raised[0] and "'django-db'" in raised[1]


def test_a_django_project_app_gets_djangotask_unless_it_chose_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django")
    from celeriac import Task
    from celeriac.contrib.django.task import DjangoTask

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celery("proj", broker="memory://", set_as_current=False)
    assert app.Task is DjangoTask

    class Mine(Task):  # type: ignore[type-arg]
        pass

    custom = Celery("proj", broker="memory://", set_as_current=False, task_cls=Mine)
    assert custom.Task is Mine
