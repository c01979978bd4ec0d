"""The lease every leader lock offers (``lock.py`` holds the implementations and the
choice among them; ``amqp_lock.py`` the RabbitMQ one, imported only for RabbitMQ)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

DEFAULT_NAME = "celeriac-beat"


class LeaderLock(ABC):
    """A lease held by at most one owner at a time."""

    @abstractmethod
    def acquire(self, owner: str, ttl: float) -> bool:
        """Take the lock for ``ttl`` seconds if free or expired; True when taken (or held)."""

    @abstractmethod
    def renew(self, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease to ``ttl`` seconds from now; False when it was lost."""

    @abstractmethod
    def release(self, owner: str) -> None:
        """Drop the lock if ``owner`` holds it."""

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        """Keep the leader's last run times beside the lock (no-op by default)."""

    def load_state(self) -> dict[str, Any] | None:
        """The last run times the previous leader saved, or None."""
        return None

    def holder(self) -> tuple[str, float] | None:
        """``(owner, lease end in epoch seconds)`` of a live lease; None when the lock is
        free, run out, or cannot tell who holds it (a monitor's question, not a beat's)."""
        return None

    def close(self) -> None:
        """Close connections."""
