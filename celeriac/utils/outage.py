"""Log an outage of a broker or result backend as changes of state, not as a flood.

A loop that retries every 0.1 s while its broker is down would otherwise log a traceback
each time. Instead::

    outage = OutageLog(logger, "broker", mask_password(url))
    while running:
        try:
            fetch()
        except ConnectionError as exc:
            outage.failed(exc)      # first: one ERROR line; then one summary per 30 s
            wait(backoff)
            continue
        outage.recovered()          # one WARNING line if it was down, else nothing

logs::

    ERROR   broker redis://:**@host:6379/0 unreachable: ConnectionError('Error 111 ...')
    ERROR   broker still unreachable after 30 s: ConnectionError('Error 111 ...'); 287 retries
    WARNING broker reachable again after 41.7 s (401 retries)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

__all__ = ["OutageLog", "describe"]

_MAX_DESCRIPTION = 300


def describe(exc: BaseException) -> str:
    """An exception in one line: ``ConnectionError('Error 111 connecting to ...')``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > _MAX_DESCRIPTION:
        first = first[:_MAX_DESCRIPTION] + "..."
    return f"{type(exc).__name__}({first!r})" if first else type(exc).__name__


class OutageLog:
    """The state of one connection (up or down) and the few lines that tell its story.

    Args:
        logger: where the lines go.
        what: what is down, as the reader knows it: ``"broker"``, ``"result backend"``.
        url: its URL, already masked (see ``celeriac.utils.urls.mask_password``).
        summary_every: seconds between "still unreachable" lines while it stays down.
        level: level of the first line and of the summaries (the recovery is WARNING).
        clock: monotonic seconds (a parameter for tests).

    Thread-safe: several consumers may report on one shared instance; each change of
    state is logged once.
    """

    def __init__(self, logger: logging.Logger, what: str, url: str = "",
                 summary_every: float = 30.0, level: int = logging.ERROR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.url = url
        self.summary_every = float(summary_every)
        self.level = level
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_line = 0.0
        self._retries = 0
        self._last_error = ""

    @property
    def down(self) -> bool:
        """Whether the last report was a failure."""
        return self._since is not None

    @property
    def retries(self) -> int:
        """Failures reported since the first one of this outage."""
        return self._retries

    def elapsed(self) -> float:
        """Seconds since this outage began (0 when up)."""
        since = self._since
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def failed(self, exc: BaseException, note: str = "") -> None:
        """Report a failed attempt: logs on the first, then at most once a period.

        Args:
            note: appended to the first line only (what happens next: "retrying").
        """
        now = self.clock()
        error = describe(exc)
        args: tuple[object, ...]
        with self._lock:
            self._last_error = error
            if self._since is None:
                self._since = self._last_line = now
                self._retries = 0
                where = f" {self.url}" if self.url else ""
                message, args = "%s%s unreachable: %s%s", (self.what, where, error,
                                                            f"; {note}" if note else "")
            else:
                self._retries += 1
                if now - self._last_line < self.summary_every:
                    return
                self._last_line = now
                message, args = ("%s still unreachable after %.0f s: %s; %d retries",
                                 (self.what, now - self._since, error, self._retries))
        self.logger.log(self.level, message, *args)

    def recovered(self) -> None:
        """Report a successful attempt: logs once if it was down, else does nothing."""
        if self._since is None:  # the common case costs no lock
            return
        now = self.clock()
        with self._lock:
            if self._since is None:
                return
            elapsed, retries = now - self._since, self._retries
            self._since = None
            self._retries = 0
        # A quiet log (DEBUG: another component tells the same outage) stays quiet.
        level = logging.DEBUG if self.level <= logging.DEBUG else logging.WARNING
        self.logger.log(level, "%s reachable again after %.1f s (%d retries)", self.what,
                        elapsed, retries)
