"""crontab.remaining_estimate and is_due give Celery's answers, also for runs long overdue.

Beat asks ``is_due(last_run_at)`` on every tick; a scheduler ported from Celery (or a
dashboard showing "next run in") also reads ``remaining_estimate``. Both must say what
Celery says, for any crontab, any zone, and a last run minutes to months ago.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone, tzinfo
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac.schedules import ParseException, crontab

UTC = timezone.utc
# Zones without DST (one with a 45-minute offset), and zones with it, both hemispheres
# (Lord Howe moves by half an hour).
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/Phoenix", "Europe/Paris",
         "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
         "America/Sao_Paulo"]


def fake_app(tz: str, deadline: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(conf=SimpleNamespace(timezone=tz, enable_utc=True,
                                                beat_cron_starting_deadline=deadline))


def random_field(rng: random.Random, low: int, high: int) -> Any:
    """One crontab field in one of the forms users write."""
    kind = rng.random()
    if kind < 0.25:
        return "*"
    if kind < 0.4:
        return f"*/{rng.randint(2, max(2, (high - low) // 2))}"
    if kind < 0.6:
        return rng.randint(low, high)
    if kind < 0.75:
        first = rng.randint(low, high)
        return f"{first}-{rng.randint(first, high)}"
    if kind < 0.9:
        return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1),
                                                          rng.randint(2, 3))))
    return set(rng.sample(range(low, high + 1), rng.randint(1, 3)))


def random_crontab(rng: random.Random) -> dict[str, Any]:
    fields: dict[str, Any] = {"minute": random_field(rng, 0, 59),
                              "hour": random_field(rng, 0, 23)}
    if rng.random() < 0.5:
        fields["day_of_week"] = random_field(rng, 0, 6)
    if rng.random() < 0.4:
        fields["day_of_month"] = random_field(rng, 1, 31)
    if rng.random() < 0.3:
        fields["month_of_year"] = random_field(rng, 1, 12)
    return fields


def near_offset_change(moment: datetime, tz: tzinfo) -> bool:
    # Within three hours of a DST change, celeriac keeps its own documented rule (a time
    # in the missing hour runs when the clocks jump; a repeated one runs once), which
    # is not Celery's: those instants are compared by the fixed DST tests instead.
    at = moment.astimezone(UTC)
    return (at - timedelta(hours=3)).astimezone(tz).utcoffset() != \
        (at + timedelta(hours=3)).astimezone(tz).utcoffset()


@pytest.fixture(scope="module")
def celery_crontab() -> Any:
    schedules = pytest.importorskip("celery.schedules")
    return schedules.crontab


@pytest.fixture(scope="module")
def celery_apps() -> Any:
    celery = pytest.importorskip("celery")
    apps: dict[tuple[str, float | None], Any] = {}

    def app_for(tz: str, deadline: float | None) -> Any:
        if (tz, deadline) not in apps:
            app = celery.Celery("estimate", set_as_current=False)
            app.conf.timezone = tz
            app.conf.enable_utc = True
            app.conf.beat_cron_starting_deadline = deadline
            apps[tz, deadline] = app
        return apps[tz, deadline]

    return app_for


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_celery_on_random_cases(seed: int, celery_crontab: Any,
                                            celery_apps: Any) -> None:
    rng = random.Random(seed)
    compared = 0
    for _ in range(700):
        fields = random_crontab(rng)
        zone = rng.choice(ZONES)
        tz = ZoneInfo(zone)
        deadline = rng.choice([None, None, None, 60, 3600, 86400])
        now = (datetime(2024, 1, 1, tzinfo=UTC)
               + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))).astimezone(tz)
        ago = rng.choice([rng.randrange(0, 3600), rng.randrange(0, 3 * 86400),
                          rng.randrange(0, 120 * 86400)])
        last = now.astimezone(UTC) - timedelta(seconds=ago)
        form = rng.random()
        if form < 0.4:
            last = last.astimezone(tz)
        elif form < 0.55:
            last = last.replace(tzinfo=None)  # naive: UTC, as in Celery
        clock = now.astimezone(UTC).replace(tzinfo=None) if rng.random() < 0.2 else now
        try:
            theirs = celery_crontab(**fields, app=celery_apps(zone, deadline),
                                    nowfun=lambda: clock)
        except ValueError:
            with pytest.raises(ValueError):  # a day that never occurs in those months
                crontab(**fields, app=fake_app(zone, deadline), nowfun=lambda: clock)
            continue
        ours = crontab(**fields, app=fake_app(zone, deadline), nowfun=lambda: clock)
        moments = [now, ours.maybe_make_aware(last), ours.next_run_after(last),
                   ours.next_run_after(now)]
        if any(near_offset_change(m, tz) for m in moments):
            continue
        case = (fields, zone, deadline, now, last)
        assert ours.remaining_estimate(last) == theirs.remaining_estimate(last), case
        assert tuple(ours.is_due(last)) == tuple(theirs.is_due(last)), case
        compared += 1
    assert compared > 600  # the DST rule set few cases aside


def test_midnight_run_missed_for_27_days() -> None:
    now = datetime(2026, 3, 10, 1, 25, tzinfo=UTC)
    nightly = crontab(minute=0, hour=0, app=fake_app("UTC"), nowfun=lambda: now)
    last = now - timedelta(days=27)
    # The run owed is the midnight after the last run: 22 h 35 min after it.
    assert nightly.remaining_estimate(last) == timedelta(days=-27, seconds=81300)
    # Due now; the next check is at tonight's midnight.
    assert tuple(nightly.is_due(last)) == (True, 81300.0)


def test_overdue_in_a_zone_east_of_utc() -> None:
    now = datetime(2026, 3, 10, 1, 25, tzinfo=UTC)  # 06:55 in Kolkata
    kolkata = fake_app("Asia/Kolkata")
    nightly = crontab(minute=0, hour=0, app=kolkata, nowfun=lambda: now)
    last = now - timedelta(days=27)
    # Local midnight after the last run (06:55 IST) is 17 h 05 min after it.
    assert nightly.remaining_estimate(last) == timedelta(days=-27, seconds=61500)
    assert tuple(nightly.is_due(last)) == (True, 61500.0)


def test_rare_schedule_months_overdue() -> None:
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    quarterly = crontab(minute=0, hour=6, day_of_month=1, month_of_year="1,4,7,10",
                        app=fake_app("UTC"), nowfun=lambda: now)
    last = datetime(2025, 12, 20, 9, 0, tzinfo=UTC)
    # Owed since 1 January 06:00; the next one is 1 July 06:00.
    assert quarterly.remaining_estimate(last) == datetime(2026, 1, 1, 6, tzinfo=UTC) - now
    assert tuple(quarterly.is_due(last)) == (
        True, (datetime(2026, 7, 1, 6, tzinfo=UTC) - now).total_seconds())


def test_naive_times_are_utc() -> None:
    paris = fake_app("Europe/Paris")
    naive_now = datetime(2026, 1, 10, 7, 30)  # 08:30 in Paris
    nine = crontab(minute=0, hour=9, app=paris, nowfun=lambda: naive_now)
    assert nine.remaining_estimate(datetime(2026, 1, 10, 7, 0)) == timedelta(minutes=30)
    assert tuple(nine.is_due(datetime(2026, 1, 9, 7, 0))) == (True, 1800.0)


def test_a_day_that_never_occurs_is_refused_at_once() -> None:
    with pytest.raises(ParseException, match="never occurs"):
        crontab(day_of_month=31, month_of_year="feb,apr")
    assert crontab(day_of_month=29, month_of_year=2)  # leap years have it
