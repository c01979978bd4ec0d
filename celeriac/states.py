"""Task states, with Celery's names and precedence.

A task moves PENDING -> (RECEIVED) -> STARTED -> SUCCESS | FAILURE | RETRY | REVOKED.
Any other string is a custom state (for example ``PROGRESS`` set by ``update_state``);
custom states are never "ready".
"""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})

# Lower index = further along. Custom states sit between the unready and the ready ones,
# as in Celery, so comparing "how far" a task got works for them too.
_PRECEDENCE = [SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]
_CUSTOM_INDEX = _PRECEDENCE.index(None)


def precedence(state: str) -> int:
    """Return the sort index of ``state``; custom states share one middle index."""
    try:
        return _PRECEDENCE.index(state)
    except ValueError:
        return _CUSTOM_INDEX


class state(str):
    """A state name that compares by precedence: ``state(SUCCESS) > state(PENDING)``."""

    def __gt__(self, other: object) -> bool:
        return precedence(self) < precedence(str(other))

    def __ge__(self, other: object) -> bool:
        return precedence(self) <= precedence(str(other))

    def __lt__(self, other: object) -> bool:
        return precedence(self) > precedence(str(other))

    def __le__(self, other: object) -> bool:
        return precedence(self) >= precedence(str(other))
