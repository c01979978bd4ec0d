"""Rate limits: when may the next run of a task start.

Each limit hands out start times spaced ``1/rate`` apart (a virtual clock that never
lets runs come closer than that, with a burst of one, like a token bucket of size one).
A message that must wait keeps its place in the consumer's waiting heap, still owned by
the consumer in the broker, and takes no pool slot while it waits.

* ``rate_limit`` (Celery's): per worker. Each of the worker's N consumers gets ``1/N``
  of the rate, so the worker as a whole never exceeds it.
* ``global_rate_limit`` (celeriac): shared by every worker through the broker, which
  hands out the start times atomically.
"""

from __future__ import annotations

import re
import time
from typing import Any

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(value: Any) -> float | None:
    """``'10/s'``, ``'100/m'``, ``'1000/h'`` or a number (per second) -> runs per second.

    Raises:
        ValueError: not a rate.
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, (int, float)):
        return float(value) or None
    match = _RATE.match(str(value))
    if not match:
        raise ValueError(f"invalid rate limit {value!r}: use a number per second or "
                         "'N/s', 'N/m', 'N/h'")
    amount = float(match.group(1))
    return amount / _UNITS[match.group(2) or "s"] if amount else None


class LocalLimits:
    """Start times for ``rate_limit`` in one consumer."""

    def __init__(self, share: float = 1.0) -> None:
        self.share = share
        self._next: dict[str, float] = {}
        self._parsed: dict[Any, float | None] = {}

    def _rate(self, value: Any) -> float | None:
        if value not in self._parsed:
            self._parsed[value] = parse_rate(value)
        return self._parsed[value]

    def reserve(self, name: str, value: Any, now: float) -> float:
        """The time the next run of ``name`` may start (``now`` if at once)."""
        rate = self._rate(value)
        if not rate:
            return now
        start = max(now, self._next.get(name, now))
        self._next[name] = start + 1.0 / (rate * self.share)
        return start


def now() -> float:
    return time.time()
