"""Periodic schedules: ``schedule`` (every N seconds), ``crontab`` and ``solar``.

Each schedule answers two questions, as Celery's do:

- ``is_due(last_run_at) -> (is_due, next_check_in_seconds)``
- ``remaining_estimate(last_run_at) -> timedelta`` until the next run (negative when
  the run is overdue).

Times are aware datetimes. "Now" comes from ``nowfun`` when given, else from the app:
the app's ``timezone`` setting (a zoneinfo name), else UTC when ``enable_utc`` (the
default), else the local zone. A naive ``last_run_at`` (or ``nowfun()``) is UTC, as in
Celery and as a naive ``eta`` is.

Daylight saving time (crontab): crontab times are wall-clock times in the app's zone.
A time that falls in the missing hour (clocks go forward) runs at the first instant
after the gap; a time in the repeated hour (clocks go back) runs once, at its first
occurrence.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Callable, Iterable, Iterator, NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["schedstate", "BaseSchedule", "schedule", "crontab", "solar", "maybe_schedule",
           "app_timezone"]


class schedstate(NamedTuple):  # noqa: N801 - Celery's name
    is_due: bool
    next: float


def app_timezone(app: Any = None) -> tzinfo:
    """The zone schedules use: ``timezone``, else UTC if ``enable_utc``, else local."""
    if app is None:
        from . import _state

        app = _state.get_current_app()
    conf = getattr(app, "conf", None)
    name = getattr(conf, "timezone", None) if conf is not None else None
    if name:
        return ZoneInfo(name) if isinstance(name, str) else name
    if conf is not None and not getattr(conf, "enable_utc", True):
        local = datetime.now().astimezone().tzinfo
        return local or timezone.utc
    return timezone.utc


class BaseSchedule:
    """What a scheduler needs from a schedule."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        self.nowfun = nowfun
        self.app = app

    @property
    def tz(self) -> tzinfo:
        return app_timezone(self.app)

    def now(self) -> datetime:
        if self.nowfun is not None:
            return self.maybe_make_aware(self.nowfun())
        return datetime.now(self.tz)

    def maybe_make_aware(self, dt: datetime) -> datetime:
        if dt.tzinfo is None:
            return dt.replace(tzinfo=timezone.utc).astimezone(self.tz)
        return dt

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        raise NotImplementedError

    def is_due(self, last_run_at: datetime) -> schedstate:
        raise NotImplementedError

    def _due_then_next(self, last_run_at: datetime) -> schedstate:
        rem = max(self.remaining_estimate(last_run_at).total_seconds(), 0.0)
        if rem == 0:
            return schedstate(True, max(self.remaining_estimate(self.now()).total_seconds(), 0.0))
        return schedstate(False, rem)


# -- schedule ---------------------------------------------------------------------------
class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Run every ``run_every`` (a timedelta or seconds).

    Args:
        run_every: the interval.
        relative: round the next run time down to the interval's resolution (days,
            hours, minutes or seconds), as Celery does.
    """

    def __init__(self, run_every: timedelta | float | None = None, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun, app)
        if run_every is None:
            raise ValueError("schedule needs run_every")
        self.run_every = run_every if isinstance(run_every, timedelta) \
            else timedelta(seconds=float(run_every))
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        end = _utc(self.maybe_make_aware(last_run_at)) + self.run_every
        if self.relative:
            end = _utc(_truncate(end.astimezone(self.tz), self.run_every))
        return end - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        rem = max(self.remaining_estimate(last_run_at).total_seconds(), 0.0)
        if rem == 0:
            next_s = self.seconds
            if self.relative:  # check again at the next rounded boundary after now
                next_s = self.remaining_estimate(self.now()).total_seconds()
                if next_s <= 0:
                    next_s = self.seconds
            return schedstate(True, next_s)
        return schedstate(False, rem)

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    __hash__ = None  # type: ignore[assignment]


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc)


def _truncate(dt: datetime, delta: timedelta) -> datetime:
    secs = delta.total_seconds()
    if secs >= 86400:
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if secs >= 3600:
        return dt.replace(minute=0, second=0, microsecond=0)
    if secs >= 60:
        return dt.replace(second=0, microsecond=0)
    return dt.replace(microsecond=0)


# -- crontab ----------------------------------------------------------------------------
_DAYS = {name: i for i, name in enumerate(
    ["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_DAYS.update({name: i for i, name in enumerate(
    ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"])})
_MONTHS = {name: i + 1 for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_MONTHS.update({name: i + 1 for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august",
     "september", "october", "november", "december"])})
# The most days each month can have (February: in leap years).
_LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                  11: 30, 12: 31}
_TOKEN = re.compile(r"^(?:(\*)|([\w]+)(?:-([\w]+))?)(?:/(\d+))?$")


class ParseException(ValueError):
    """A crontab field that cannot be read."""


def parse_field(spec: Any, low: int, high: int, names: dict[str, int] | None = None,
                wrap: bool = False) -> frozenset[int]:
    """Expand one crontab field (``*``, ``*/15``, ``1-5``, ``mon-fri/2``, ``1,3``) to a set.

    Raises:
        ParseException: a value out of ``[low, high]`` or a malformed part.
    """
    if isinstance(spec, int):
        values: Iterable[int] = [spec]
    elif isinstance(spec, str):
        values = _parse_text(spec, low, high, names or {}, wrap)
    else:
        values = [int(v) for v in spec]
    result = frozenset(values)
    if names is _DAYS:  # 7 is Sunday too
        result = frozenset(0 if v == 7 else v for v in result)
    for v in result:
        if not low <= v <= high:
            raise ParseException(f"{v} is out of range {low}-{high} in {spec!r}")
    if not result:
        raise ParseException(f"{spec!r} matches nothing")
    return result


def _parse_text(text: str, low: int, high: int, names: dict[str, int],
                wrap: bool) -> list[int]:
    top = 7 if names is _DAYS else high
    out: list[int] = []
    for part in text.replace(" ", "").lower().split(","):
        m = _TOKEN.match(part)
        if not m:
            raise ParseException(f"cannot read {part!r}")
        star, first, last, step_s = m.groups()
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ParseException(f"step must be positive in {part!r}")

        def value(tok: str) -> int:
            if tok.isdigit():
                v = int(tok)
            elif tok in names:
                v = names[tok]
            else:
                raise ParseException(f"unknown value {tok!r}")
            if not low <= v <= top:
                raise ParseException(f"{v} is out of range {low}-{high} in {part!r}")
            return v

        if star:
            start, end = low, high
        else:
            start = value(first)
            end = value(last) if last else (high if step_s else start)
        if end >= start:
            span = list(range(start, end + 1))
        else:  # a range that wraps: fri-mon, 22-2
            span = list(range(start, high + 1)) + list(range(low, end + 1))
        out.extend(span[::step])
    return out


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at the wall-clock times that match all five fields, in the app's zone.

    Fields take ints, iterables of ints, or text: ``*``, ``*/15``, ``0-30/5``, ``1,15``,
    day names (``mon-fri``, 0 or 7 is Sunday) and month names (``jan,jul``). A time
    matches when its minute, hour, day of week, day of month and month all match.
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*",
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun, app)
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = parse_field(minute, 0, 59)
        self.hour = parse_field(hour, 0, 23)
        self.day_of_week = parse_field(day_of_week, 0, 6, _DAYS, wrap=True)
        self.day_of_month = parse_field(day_of_month, 1, 31)
        self.month_of_year = parse_field(month_of_year, 1, 12, _MONTHS)
        # Told at once, as Celery does, rather than when beat first asks for a run.
        if not any(day <= _LONGEST_MONTH[month] for month in self.month_of_year
                   for day in self.day_of_month):
            raise ParseException(
                f"day_of_month {day_of_month!r} never occurs in month_of_year "
                f"{month_of_year!r}")
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)

    def _day_matches(self, d: date) -> bool:
        return (d.month in self.month_of_year and d.day in self.day_of_month
                and d.isoweekday() % 7 in self.day_of_week)

    def _wall_candidates(self, after: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock minutes strictly after ``after`` (naive)."""
        day = after.date()
        for _ in range(366 * 29):  # long enough for Feb 29 on a given weekday
            if self._day_matches(day):
                for h in self._hours:
                    if day == after.date() and h < after.hour:
                        continue
                    for m in self._minutes:
                        c = datetime(day.year, day.month, day.day, h, m)
                        if c > after:
                            yield c
            day += timedelta(days=1)
        raise ValueError(f"{self!r} never matches")

    def next_run_after(self, moment: datetime) -> datetime:
        """The first run time strictly after ``moment`` (aware, in the app's zone)."""
        tz = self.tz
        moment = self.maybe_make_aware(moment).astimezone(tz)
        wall = moment.replace(tzinfo=None, second=0, microsecond=0)
        for cand in self._wall_candidates(wall):
            when = localize(cand, tz)
            if _utc(when) > _utc(moment):  # same-zone comparison would ignore fold
                return when
        raise AssertionError("unreachable")

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return _utc(self.next_run_after(last_run_at)) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when a matching time passed since ``last_run_at``.

        With ``beat_cron_starting_deadline`` set, a missed time older than that many
        seconds is skipped: the entry is due only if a matching time falls within the
        deadline before now.
        """
        deadline = getattr(getattr(self.app, "conf", None), "beat_cron_starting_deadline", None)
        if deadline is not None and self.remaining_estimate(last_run_at).total_seconds() < 0:
            now = _utc(self.now())
            since = now - timedelta(seconds=deadline, microseconds=1)
            if _utc(self.next_run_after(since)) > now:  # nothing matched within the deadline
                return schedstate(False, max(self.remaining_estimate(now).total_seconds(), 0))
        return self._due_then_next(last_run_at)

    def __repr__(self) -> str:
        return "<crontab: {} {} {} {} {} (m/h/dM/MY/d)>".format(
            self._orig[0], self._orig[1], self._orig[3], self._orig[4], self._orig[2])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and (
            other.minute, other.hour, other.day_of_week, other.day_of_month,
            other.month_of_year) == (self.minute, self.hour, self.day_of_week,
                                     self.day_of_month, self.month_of_year)

    __hash__ = None  # type: ignore[assignment]


def localize(wall: datetime, tz: tzinfo) -> datetime:
    """The instant a naive wall-clock time names in ``tz``.

    A repeated time gives its first occurrence; a time in a gap gives the first instant
    after the gap (the moment the clocks jump).
    """
    first = wall.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(timezone.utc)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap: the jump lies between the two readings of the wall time; find it.
    after = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    lo, hi = min(utc, after), max(utc, after)
    target = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(tz)


# -- solar ------------------------------------------------------------------------------
# Sun altitude (degrees) at each event; rising events use the morning hour angle.
_SOLAR_EVENTS: dict[str, tuple[float | None, int]] = {
    "dawn_astronomical": (-18.0, -1), "dawn_nautical": (-12.0, -1),
    "dawn_civil": (-6.0, -1), "sunrise": (-0.833, -1), "solar_noon": (None, 0),
    "sunset": (-0.833, 1), "dusk_civil": (-6.0, 1), "dusk_nautical": (-12.0, 1),
    "dusk_astronomical": (-18.0, 1),
}


def _sun(jd: float) -> tuple[float, float]:
    """Equation of time (minutes) and declination (degrees) at Julian day ``jd`` (NOAA)."""
    t = (jd - 2451545.0) / 36525.0
    l0 = (280.46646 + t * (36000.76983 + t * 0.0003032)) % 360
    m = 357.52911 + t * (35999.05029 - 0.0001537 * t)
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    mr = math.radians(m)
    c = (math.sin(mr) * (1.914602 - t * (0.004817 + 0.000014 * t))
         + math.sin(2 * mr) * (0.019993 - 0.000101 * t) + math.sin(3 * mr) * 0.000289)
    true_long = l0 + c
    omega = 125.04 - 1934.136 * t
    app_long = true_long - 0.00569 - 0.00478 * math.sin(math.radians(omega))
    eps0 = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    eps = eps0 + 0.00256 * math.cos(math.radians(omega))
    decl = math.degrees(math.asin(math.sin(math.radians(eps))
                                  * math.sin(math.radians(app_long))))
    y = math.tan(math.radians(eps / 2)) ** 2
    l0r = math.radians(l0)
    eqtime = 4 * math.degrees(
        y * math.sin(2 * l0r) - 2 * e * math.sin(mr) + 4 * e * y * math.sin(mr) * math.cos(2 * l0r)
        - 0.5 * y * y * math.sin(4 * l0r) - 1.25 * e * e * math.sin(2 * mr))
    return eqtime, decl


def solar_event_utc(event: str, day: date, lat: float, lon: float) -> datetime | None:
    """The UTC instant of ``event`` on the UTC date ``day``; None if it does not happen."""
    altitude, sign = _SOLAR_EVENTS[event]
    jd0 = day.toordinal() + 1721424.5  # Julian day at 00:00 UTC
    minutes = 720 - 4 * lon
    for _ in range(3):  # refine with the sun's position at the event's own time
        eqtime, decl = _sun(jd0 + minutes / 1440)
        noon = 720 - 4 * lon - eqtime
        if altitude is None:
            minutes = noon
            continue
        la, de = math.radians(lat), math.radians(decl)
        cos_ha = ((math.sin(math.radians(altitude)) - math.sin(la) * math.sin(de))
                  / (math.cos(la) * math.cos(de)))
        if not -1 <= cos_ha <= 1:
            return None
        minutes = noon + sign * 4 * math.degrees(math.acos(cos_ha))
    base = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return base + timedelta(minutes=minutes)


class solar(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at a solar event at a place: ``solar('sunset', -37.81, 144.96)``.

    Events: sunrise, sunset, solar_noon, dawn_astronomical, dawn_nautical, dawn_civil,
    dusk_astronomical, dusk_nautical, dusk_civil. Times follow NOAA's solar equations
    (accurate to about a minute between latitudes 72N and 72S); on days an event does
    not happen (polar day or night) it is skipped.
    """

    def __init__(self, event: str, lat: float, lon: float,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun, app)
        if event not in _SOLAR_EVENTS:
            raise ValueError(f"unknown solar event {event!r}; known: {sorted(_SOLAR_EVENTS)}")
        if not -90 <= lat <= 90:
            raise ValueError(f"latitude {lat} is out of range -90..90")
        if not -180 <= lon <= 180:
            raise ValueError(f"longitude {lon} is out of range -180..180")
        self.event, self.lat, self.lon = event, lat, lon

    def next_run_after(self, moment: datetime) -> datetime:
        moment = self.maybe_make_aware(moment).astimezone(timezone.utc)
        day = moment.date() - timedelta(days=1)
        for _ in range(400):
            when = solar_event_utc(self.event, day, self.lat, self.lon)
            if when is not None and when > moment:
                return when.astimezone(self.tz)
            day += timedelta(days=1)
        raise ValueError(f"{self!r} does not happen within a year")

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return _utc(self.next_run_after(last_run_at)) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        return self._due_then_next(last_run_at)

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, solar) and (other.event, other.lat, other.lon) == (
            self.event, self.lat, self.lon)

    __hash__ = None  # type: ignore[assignment]


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> BaseSchedule:
    """A schedule from a schedule, a timedelta or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if isinstance(value, timedelta):
        return schedule(value, relative=relative, app=app)
    if isinstance(value, BaseSchedule):
        if app is not None and value.app is None:
            value.app = app
        return value
    if hasattr(value, "is_due") and hasattr(value, "remaining_estimate"):
        return value  # type: ignore[no-any-return]  # a foreign schedule (duck-typed)
    raise TypeError(f"not a schedule: {value!r}")
