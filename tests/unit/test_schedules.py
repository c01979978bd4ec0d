"""Schedules: crontab syntax, DST rule, solar times, and agreement with Celery's."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from celeriac.schedules import (
    ParseException,
    crontab,
    maybe_schedule,
    schedule,
    solar,
    solar_event_utc,
)

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def fake_app(tz: str | None = None, enable_utc: bool = True) -> SimpleNamespace:
    return SimpleNamespace(conf=SimpleNamespace(timezone=tz, enable_utc=enable_utc))


def at(*args: int, tz: object = UTC) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[arg-type, misc]


# -- parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("*/15", {0, 15, 30, 45}),
    ("0-10/5", {0, 5, 10}),
    ("1,2,3", {1, 2, 3}),
    ("50-59,*/30", {0, 30, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59}),
    (7, {7}),
    ([1, 2], {1, 2}),
])
def test_minute_field(spec: object, expected: set[int]) -> None:
    assert crontab(minute=spec).minute == expected


def test_names_of_days_and_months() -> None:
    c = crontab(day_of_week="mon-fri", month_of_year="jan,jul-aug")
    assert c.day_of_week == {1, 2, 3, 4, 5}
    assert c.month_of_year == {1, 7, 8}
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}
    assert crontab(day_of_week="sunday,7").day_of_week == {0}
    assert crontab(day_of_week="*/2").day_of_week == {0, 2, 4, 6}
    assert crontab(day_of_month="1-31/10").day_of_month == {1, 11, 21, 31}


@pytest.mark.parametrize("kwargs", [
    {"minute": "60"}, {"hour": "24"}, {"day_of_week": "funday"}, {"day_of_month": "0"},
    {"month_of_year": "13"}, {"minute": "*/0"}, {"minute": "1-"},
])
def test_bad_fields(kwargs: dict[str, str]) -> None:
    with pytest.raises(ParseException):
        crontab(**kwargs)


# -- next run times --------------------------------------------------------------------
def test_crontab_next_runs() -> None:
    c = crontab(minute=0, hour="*/6", app=fake_app())
    assert c.next_run_after(at(2026, 1, 1, 5, 59, 59)) == at(2026, 1, 1, 6, 0)
    assert c.next_run_after(at(2026, 1, 1, 6, 0)) == at(2026, 1, 1, 12, 0)
    leap = crontab(minute=0, hour=0, day_of_month=29, month_of_year=2, app=fake_app())
    assert leap.next_run_after(at(2026, 3, 1)) == at(2028, 2, 29)
    both = crontab(minute=0, hour=0, day_of_week="fri", day_of_month=13, app=fake_app())
    assert both.next_run_after(at(2026, 1, 1)) == at(2026, 2, 13)  # day AND weekday


def test_crontab_is_due() -> None:
    now = at(2026, 1, 1, 10, 7, 30)
    c = crontab(minute="*/5", app=fake_app(), nowfun=lambda: now)
    assert c.is_due(at(2026, 1, 1, 10, 4)) == (True, 150.0)  # next check: 10:10
    assert c.is_due(at(2026, 1, 1, 10, 5)) == (False, 150.0)
    assert c.remaining_estimate(at(2026, 1, 1, 10, 5)) == timedelta(seconds=150)


def test_crontab_starting_deadline() -> None:
    now = at(2026, 1, 1, 10, 7, 30)
    app = fake_app()
    app.conf.beat_cron_starting_deadline = 120
    hourly = crontab(minute=0, app=app, nowfun=lambda: now)
    assert hourly.is_due(at(2026, 1, 1, 8, 0)) == (False, 3150.0)  # 10:00 is too stale
    app.conf.beat_cron_starting_deadline = 180
    five = crontab(minute="*/5", app=app, nowfun=lambda: now)
    assert five.is_due(at(2026, 1, 1, 9, 0)).is_due  # 10:05 is within the deadline


def test_crontab_in_app_timezone() -> None:
    c = crontab(minute=0, hour=9, app=fake_app("Europe/Paris"))
    assert c.next_run_after(at(2026, 7, 1)) == at(2026, 7, 1, 7, 0)  # 09:00 CEST
    assert c.next_run_after(at(2026, 1, 10)) == at(2026, 1, 10, 8, 0)  # 09:00 CET


def test_dst_missing_hour_runs_at_first_instant_after_gap() -> None:
    c = crontab(minute=30, hour=2, app=fake_app("Europe/Paris"))
    first = c.next_run_after(at(2026, 3, 28, 12, tz=PARIS))
    assert first == at(2026, 3, 29, 3, 0, tz=PARIS)  # 02:30 does not exist that night
    assert c.next_run_after(first) == at(2026, 3, 30, 2, 30, tz=PARIS)
    every = crontab(minute="*/15", app=fake_app("Europe/Paris"))
    runs = [at(2026, 3, 29, 1, 50, tz=PARIS)]
    for _ in range(3):
        runs.append(every.next_run_after(runs[-1]))
    assert [r.astimezone(UTC) for r in runs[1:]] == [
        at(2026, 3, 29, 1, 0), at(2026, 3, 29, 1, 15), at(2026, 3, 29, 1, 30)]


def test_dst_repeated_hour_runs_once_at_first_occurrence() -> None:
    c = crontab(minute=30, hour=2, app=fake_app("Europe/Paris"))
    first = c.next_run_after(at(2026, 10, 24, 12, tz=PARIS))
    assert first.astimezone(UTC) == at(2026, 10, 25, 0, 30)  # 02:30 CEST, not CET
    assert c.next_run_after(first).astimezone(UTC) == at(2026, 10, 26, 1, 30)
    # Even from inside the second pass of the hour, the time is not run again.
    second_pass = at(2026, 10, 25, 1, 10)  # 02:10 CET
    assert c.next_run_after(second_pass).astimezone(UTC) == at(2026, 10, 26, 1, 30)


# -- schedule --------------------------------------------------------------------------
def test_schedule_is_due() -> None:
    now = at(2026, 1, 1, 12, 0, 0)
    s = schedule(timedelta(seconds=30), nowfun=lambda: now)
    assert s.is_due(now - timedelta(seconds=31)) == (True, 30.0)
    assert s.is_due(now - timedelta(seconds=10)) == (False, 20.0)
    assert maybe_schedule(5).is_due(datetime(2000, 1, 1, tzinfo=UTC)).is_due
    rel = schedule(timedelta(hours=1), relative=True, nowfun=lambda: now)
    assert rel.remaining_estimate(at(2026, 1, 1, 11, 40)) == timedelta(minutes=0)


# -- solar -----------------------------------------------------------------------------
@pytest.mark.parametrize("event, expected", [
    # London, 2026-06-21, published NOAA times (UTC), to within two minutes.
    ("sunrise", datetime(2026, 6, 21, 3, 43, tzinfo=UTC)),
    ("sunset", datetime(2026, 6, 21, 20, 21, tzinfo=UTC)),
    ("solar_noon", datetime(2026, 6, 21, 12, 2, tzinfo=UTC)),
    ("dawn_civil", datetime(2026, 6, 21, 2, 57, tzinfo=UTC)),
])
def test_solar_london_midsummer(event: str, expected: datetime) -> None:
    got = solar_event_utc(event, date(2026, 6, 21), 51.5074, -0.1278)
    assert got is not None and abs(got - expected) < timedelta(minutes=2)


def test_solar_schedule_and_polar_night() -> None:
    now = at(2026, 6, 21, 12)
    s = solar("sunset", 51.5074, -0.1278, nowfun=lambda: now)
    due, nxt = s.is_due(at(2026, 6, 20, 21))
    assert not due and 8 * 3600 < nxt < 8.5 * 3600
    assert solar_event_utc("sunrise", date(2026, 12, 21), 80.0, 0.0) is None
    assert solar("sunrise", 80.0, 0.0).next_run_after(at(2026, 12, 21)).month == 2
    with pytest.raises(ValueError):
        solar("teatime", 0, 0)


# -- agreement with Celery -------------------------------------------------------------
CRON_EXPRESSIONS = [
    {}, {"minute": "*/15"}, {"minute": 0, "hour": "*/3"}, {"minute": "0,30", "hour": "9-17"},
    {"minute": 5, "hour": 4, "day_of_week": "mon-fri"}, {"minute": 0, "hour": 0,
                                                           "day_of_week": "sun"},
    {"minute": 30, "hour": 12, "day_of_month": 1}, {"minute": 0, "hour": 7,
                                                     "day_of_month": "1-7,15"},
    {"minute": "10-20/5", "hour": "22-23"}, {"minute": 0, "hour": 0, "day_of_month": 1,
                                            "month_of_year": "*/3"},
]


@pytest.fixture(scope="module")
def celery_app():  # type: ignore[no-untyped-def]
    celery = pytest.importorskip("celery")
    app = celery.Celery("cmp", set_as_current=False)
    app.conf.timezone = "UTC"
    app.conf.enable_utc = True
    return app


@pytest.mark.parametrize("deadline", [None, 90, 3600])
def test_crontab_agrees_with_celery(celery_app, deadline) -> None:  # type: ignore[no-untyped-def]
    from celery.schedules import crontab as celery_crontab

    celery_app.conf.beat_cron_starting_deadline = deadline
    app = fake_app("UTC")
    app.conf.beat_cron_starting_deadline = deadline
    rng = random.Random(1234)
    base = at(2024, 1, 1)
    for _ in range(600):
        expr = rng.choice(CRON_EXPRESSIONS)
        now = base + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
        last = now - timedelta(seconds=rng.choice([
            rng.randrange(0, 120), rng.randrange(0, 7200), rng.randrange(0, 40 * 86400)]))
        ours = crontab(**expr, app=app, nowfun=lambda: now)
        theirs = celery_crontab(**expr, app=celery_app, nowfun=lambda: now)
        a, b = ours.is_due(last), theirs.is_due(last)
        assert (a.is_due, round(a.next, 3)) == (b.is_due, round(b.next, 3)), (expr, now, last)
        if not a.is_due:  # when overdue, Celery's estimate of the past run can differ
            assert ours.remaining_estimate(last) == theirs.remaining_estimate(last)


def test_schedule_agrees_with_celery(celery_app) -> None:  # type: ignore[no-untyped-def]
    from celery.schedules import schedule as celery_schedule

    rng = random.Random(99)
    for _ in range(600):
        every = timedelta(seconds=rng.choice([1, 5, 30, 60, 90, 3600, 5400, 86400]))
        relative = rng.random() < 0.3
        now = at(2025, 1, 1) + timedelta(seconds=rng.uniform(0, 365 * 86400))
        last = now - every * rng.uniform(0, 2)
        ours = schedule(every, relative=relative, app=fake_app("UTC"), nowfun=lambda: now)
        theirs = celery_schedule(every, relative=relative, app=celery_app,
                                 nowfun=lambda: now)
        a, b = ours.is_due(last), theirs.is_due(last)
        assert (a.is_due, round(a.next, 6)) == (b.is_due, round(b.next, 6)), (every, now, last)
        assert ours.remaining_estimate(last) == theirs.remaining_estimate(last)
