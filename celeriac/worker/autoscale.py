"""Autoscaling: how many slots a pool should have, decided from what it can see.

In celeriac every slot fetches its own messages, so the worker holds no queue of
reserved requests to count (Celery's autoscaler counts those). What the pool
supervisor can see cheaply is how many slots sit idle waiting for a message (the
``Siblings`` board) and, when none does, how many messages wait in the broker. So:

* every slot worked during the last second and messages wait: grow, by as many as
  wait, up to ``max``;
* some slots waited for a message all through the last second: the pool needs only the
  others; once it has had more than it needs for a whole ``keepalive`` period, it
  shrinks back towards ``min`` (never below one slot).

A slot that works through a backlog of quick tasks sits in a fetch now and then; it
counts as working if it was seen busy at any of the supervisor's looks (every 0.1 s)
in that second. Messages that wait while a slot stays idle are ones no slot can take
yet (an eta not yet due, which ``Broker.size`` counts), so they never make it grow.

The decision is a pure function of what the pool reports (``Autoscaler.decide``); the
pool applies it from its supervisor, in the worker's main thread.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from ..exceptions import ImproperlyConfigured

#: Seconds a pool keeps slots it no longer needs before shrinking (Celery's default).
AUTOSCALE_KEEPALIVE = 30.0
#: The environment variable that overrides it, read when an autoscaler is made (as
#: Celery reads it, so one setting serves both in a mixed fleet; tests make it short).
KEEPALIVE_ENV = "AUTOSCALE_KEEPALIVE"
#: Seconds between two looks at the pool (and at most one broker round trip each).
CHECK_INTERVAL = 1.0

# What ``worker_autoscaler`` may name for the built-in autoscaler.
_DEFAULT_NAMES = frozenset({
    "celery.worker.autoscale:Autoscaler", "celery.worker.autoscale.Autoscaler",
    "celeriac.worker.autoscale:Autoscaler", "celeriac.worker.autoscale.Autoscaler",
})


def parse_autoscale(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``--autoscale`` as ``(max, min)``, read as Celery's command line reads it.

    ``"10,3"`` is max 10, min 3; ``"10"`` is max 10, min 0; the larger number is the
    maximum whichever comes first (``"3,10"`` is ``(10, 3)``). A pair is taken the same
    way. None or ``""`` means no autoscaling.

    Raises:
        ImproperlyConfigured: not one or two whole numbers, a negative one, or a
            maximum below 1.
    """
    if value is None or value == "":
        return None
    parts: list[Any] = ([p.strip() for p in value.split(",")] if isinstance(value, str)
                        else list(value))
    if not 1 <= len(parts) <= 2:
        raise ImproperlyConfigured(
            f"--autoscale={value!r}: expected MAX,MIN or MAX (two whole numbers or one)")
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"--autoscale={value!r}: expected whole numbers, as in --autoscale=10,3") from None
    if len(numbers) == 1:
        numbers.append(0)
    high, low = max(numbers), min(numbers)
    if low < 0 or high < 1:
        raise ImproperlyConfigured(
            f"--autoscale={value!r}: the maximum must be at least 1 and the minimum at least 0")
    return high, low


def keepalive_from_env() -> float:
    """``AUTOSCALE_KEEPALIVE`` from the environment, else Celery's 30 seconds.

    Raises:
        ImproperlyConfigured: set, but not a positive number of seconds.
    """
    raw = os.environ.get(KEEPALIVE_ENV)
    if raw is None or raw == "":
        return AUTOSCALE_KEEPALIVE
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or math.isinf(seconds):
        raise ImproperlyConfigured(f"{KEEPALIVE_ENV}={raw!r}: expected a positive number "
                                   "of seconds")
    return seconds


class Autoscaler:
    """The bounds of an autoscaling pool, and when to grow or shrink within them.

    Args:
        max_concurrency: the most slots the pool may have.
        min_concurrency: the fewest it shrinks to (the pool never goes below one slot,
            so 0 behaves as 1, but is reported as given).
        keepalive: seconds the pool must have had more slots than it needs before it
            shrinks; None reads ``AUTOSCALE_KEEPALIVE`` (default 30).

    A subclass may override ``decide`` and be named by ``worker_autoscaler``.
    """

    def __init__(self, max_concurrency: int, min_concurrency: int = 0,
                 keepalive: float | None = None) -> None:
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.keepalive = keepalive_from_env() if keepalive is None else float(keepalive)
        if not self.keepalive > 0:
            raise ImproperlyConfigured("autoscale keepalive must be positive: a pool that "
                                       "shrinks at once would fork again at the next message")
        # When the pool last needed every slot it had (or grew); None until first asked.
        self._last_needed: float | None = None
        #: the demand seen at the last decision, reported as Celery's ``qty``
        self.qty = 0

    @property
    def floor(self) -> int:
        return max(1, self.min_concurrency)

    def update(self, max: int | None = None, min: int | None = None) -> tuple[int, int]:
        """New bounds; returns ``(max, min)``. The pool brings its size within them.

        Raises:
            ValueError: a maximum below 1, a negative minimum, or a minimum above the
                maximum.
        """
        high = self.max_concurrency if max is None else int(max)
        low = self.min_concurrency if min is None else int(min)
        if high < 1 or low < 0 or low > high:
            raise ValueError(f"autoscale bounds max={high}, min={low}: need "
                             "max >= 1 and 0 <= min <= max")
        self.max_concurrency, self.min_concurrency = high, low
        return high, low

    def decide(self, now: float, size: int, idle: int, waiting: int) -> int:
        """How many slots to add (positive) or retire (negative) now; 0 to stay.

        Args:
            now: a monotonic clock reading.
            size: the slots the pool has (or is starting).
            idle: how many of them waited for a message all through the last look.
            waiting: messages waiting in the pool's queues; only looked at when no
                slot is idle (the pool passes 0 then, and skips asking the broker).
        """
        if self._last_needed is None:
            self._last_needed = now
        demand = size + waiting if idle <= 0 else size - idle
        self.qty = max(0, demand)
        target = min(self.max_concurrency, max(self.floor, demand))
        if size > self.max_concurrency or size < self.floor:
            # Out of bounds (they were just changed): no keepalive to wait for.
            return min(self.max_concurrency, max(self.floor, size)) - size
        if target >= size:
            self._last_needed = now
            return target - size
        if now - self._last_needed >= self.keepalive:
            return target - size
        return 0

    def note_resized(self, now: float) -> None:
        """The pool was resized by hand (``grow``/``shrink``): keep it a keepalive."""
        self._last_needed = now

    def info(self, size: int) -> dict[str, Any]:
        """As Celery's ``inspect stats()["autoscaler"]``."""
        return {"max": self.max_concurrency, "min": self.min_concurrency, "current": size,
                "qty": self.qty}


def autoscaler_class(setting: Any) -> type[Autoscaler]:
    """The class ``worker_autoscaler`` names: None or Celery's default is the built-in.

    Raises:
        ImproperlyConfigured: it names something that cannot be imported, or a class
            that is not a celeriac ``Autoscaler`` (Celery's autoscaler classes count
            requests the worker reserved, which celeriac's slots never do).
    """
    if setting is None or setting == "" or setting in _DEFAULT_NAMES:
        return Autoscaler
    cls = setting
    if isinstance(setting, str):
        from ..utils.imports import symbol_by_name

        try:
            cls = symbol_by_name(setting)
        except (ImportError, AttributeError) as exc:
            raise ImproperlyConfigured(
                f"worker_autoscaler={setting!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Autoscaler)):
        raise ImproperlyConfigured(
            f"worker_autoscaler={setting!r} is not a subclass of "
            "celeriac.worker.autoscale:Autoscaler; celeriac cannot run Celery's "
            "autoscaler classes (they count requests reserved in the worker, and "
            "celeriac's slots fetch their own). Leave the setting unset for the built-in "
            "one, or subclass celeriac's and override decide()")
    return cls
