"""Remote control: ``app.control``. Revocations live in the broker, so they survive
worker restarts and reach workers started later (Celery keeps them in each worker's
memory, or a ``--statedb`` file per worker)."""

from __future__ import annotations

import signal as signals_module
from typing import TYPE_CHECKING, Any, Iterable

from ..brokers import RevocationStore, require

if TYPE_CHECKING:
    from ..app import Celery


class Control:
    """What ``app.control`` offers."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], destination: Any = None,
               terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any) -> None:
        """Revoke tasks: a queued or scheduled one will not run; with ``terminate`` a
        running one is stopped (prefork pool) with ``signal``.

        Revocations are kept for ``worker_revoke_expires`` seconds (default 3 hours).
        ``destination`` is accepted for compatibility; every worker honours them.
        """
        ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]
        if not ids:
            return
        expires = float(self.app.conf.worker_revoke_expires or 10800)
        store = require(self.app.producer_broker(), RevocationStore, "keep revocations")
        store.revoke(ids, signal_name(signal) if terminate else None, expires)

    def terminate(self, task_id: str | Iterable[str], destination: Any = None,
                  signal: str | int = "SIGTERM", **kwargs: Any) -> None:
        self.revoke(task_id, destination=destination, terminate=True, signal=signal)


def signal_name(value: str | int) -> str:
    """``9``, ``'KILL'`` or ``'SIGKILL'`` -> ``'SIGKILL'``; unknown names are an error."""
    if isinstance(value, int):
        return signals_module.Signals(value).name
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signals_module.Signals.__members__:
        raise ValueError(f"unknown signal {value!r}")
    return name
