"""Revocations as one consumer sees them, kept in step with the broker."""

from __future__ import annotations

import time
from typing import Any

from ..brokers import Broker, RevocationStore, capability


class Revocations:
    """This consumer's copy of the revoked ids, kept in step with the broker.

    Re-read after a fetch at most every ``MAX_AGE`` seconds; an unchanged set costs one
    small read. So a revocation reaches every worker within that time.
    """

    MAX_AGE = 0.05
    _NEVER = object()

    def __init__(self, broker: Broker) -> None:
        # A transport that keeps no revocations has none to honour.
        self.store = capability(broker, RevocationStore)
        self.ids: dict[str, str | None] = {}
        self._version: Any = self._NEVER
        self._checked = 0.0

    def refresh(self, force: bool = False) -> dict[str, str | None]:
        now = time.monotonic()
        if self.store is not None and (force or now - self._checked >= self.MAX_AGE):
            self._checked = now
            version, ids = self.store.revoked(self._version)
            if ids is not None:
                self.ids = ids
                self._version = version
        return self.ids
