"""The dashboard's options as one checked value (``DashboardOptions``).

The command line (``celeriac.cli.dashboard``) parses text into this; ``check()`` holds
the rules that do not depend on how the value was made: no credentials means loopback
only, a certificate needs its key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

DEFAULT_MAX_AGE = 7 * 86400.0
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)

HOW_TO_ADD_AUTH = ("add credentials: --basic-auth=user:password (several: "
                   "user1:pw1,user2:pw2) or --token=<secret> (or the environment "
                   "variable CELERIAC_DASHBOARD_TOKEN), or listen on loopback only "
                   "(--address 127.0.0.1)")


class OptionsError(ValueError):
    """Options that cannot be used together, or a value that does not parse."""


@dataclass
class DashboardOptions:
    """Everything the server needs to know; secrets are kept out of ``repr``."""

    port: int = 5555
    address: str = "127.0.0.1"
    url_prefix: str = ""
    basic_auth: list[tuple[str, str]] = field(default_factory=list, repr=False)
    token: str | None = field(default=None, repr=False)
    max_tasks: int = 100_000
    max_age: float | None = DEFAULT_MAX_AGE
    db: str | None = None
    persistent: bool = True
    purge_offline_workers: float | None = None
    read_only: bool = False
    inspect_timeout: float = 1.0
    metrics_public: bool = False
    enable_events: bool = True
    certfile: str | None = None
    keyfile: str | None = None
    log_level: str = "warning"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth or self.token)

    @property
    def can_act(self) -> bool:
        """Whether an authenticated user may change anything (actions)."""
        return self.auth_enabled and not self.read_only

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.url_prefix}/"

    def check(self) -> DashboardOptions:
        """Normalise the URL prefix and enforce the rules; returns ``self``.

        Raises:
            OptionsError: a non-loopback address without credentials, a certificate
                without its key (or the reverse), a bad port or size.
        """
        self.url_prefix = normalise_prefix(self.url_prefix)
        if not 0 <= self.port <= 65535:
            raise OptionsError(f"--port {self.port} is not a TCP port (0-65535)")
        if self.max_tasks < 1:
            raise OptionsError("--max-tasks must be at least 1")
        if self.inspect_timeout <= 0:
            raise OptionsError("--inspect-timeout must be positive")
        self.log_level = self.log_level.lower()
        if self.log_level not in LOG_LEVELS:
            raise OptionsError(f"--loglevel {self.log_level!r} is not one of "
                               f"{', '.join(LOG_LEVELS)}")
        if bool(self.certfile) != bool(self.keyfile):
            raise OptionsError("TLS needs both --certfile and --keyfile")
        if not self.auth_enabled and not is_loopback(self.address):
            raise OptionsError(
                f"refusing to listen on {self.address} without credentials: anyone who "
                f"can reach it could see every task's arguments; {HOW_TO_ADD_AUTH}")
        return self


def normalise_prefix(prefix: str) -> str:
    """``flower``, ``/flower/`` -> ``/flower``; empty or ``/`` -> ``""``."""
    parts = [p for p in prefix.strip().split("/") if p]
    return "/" + "/".join(parts) if parts else ""


def is_loopback(address: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def parse_basic_auth(text: str) -> list[tuple[str, str]]:
    """``user:pass[,user2:pass2]`` -> ``[(user, pass), ...]``.

    Raises:
        OptionsError: an entry without a colon, or with an empty user or password
            (the message never repeats the text, which holds passwords).
    """
    pairs: list[tuple[str, str]] = []
    for number, entry in enumerate(text.split(","), start=1):
        user, colon, password = entry.strip().partition(":")
        if not colon or not user or not password:
            raise OptionsError(f"--basic-auth entry {number} is not user:password")
        pairs.append((user, password))
    return pairs


def parse_duration(text: str | float | int) -> float | None:
    """``7d``, ``12h``, ``30m``, ``90s``, ``3600`` -> seconds; ``0`` -> None (no limit).

    Raises:
        OptionsError: anything else.
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise OptionsError(f"{text!r} is not a duration: use seconds or a number "
                               f"with s, m, h, d or w (7d, 12h)")
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds < 0:
        raise OptionsError(f"{text!r}: a duration cannot be negative")
    return seconds or None
