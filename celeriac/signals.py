"""Signals with Celery's names and arguments.

Connect a receiver with ``@task_success.connect`` (optionally ``sender=...``), or
``task_success.connect(fn)``. Receivers are called with ``sender`` and keyword arguments;
a receiver that raises is logged and does not stop the others or the task.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]


class Signal:
    """A named hook point; many receivers, each optionally bound to one sender."""

    def __init__(self, name: str, providing_args: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.providing_args = providing_args
        self._receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: str | None = None) -> Any:
        """Connect ``receiver``; used bare, or as ``@signal.connect(sender=...)``."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender, dispatch_uid=dispatch_uid)
        with self._lock:
            if not any(r is receiver and s == sender for r, s in self._receivers):
                self._receivers.append((receiver, sender))
        return receiver

    def disconnect(self, receiver: Receiver, sender: Any = None) -> bool:
        with self._lock:
            before = len(self._receivers)
            self._receivers = [(r, s) for r, s in self._receivers
                               if not (r is receiver and (sender is None or s == sender))]
            return len(self._receivers) != before

    @property
    def receivers(self) -> list[Receiver]:
        return [r for r, _ in self._receivers]

    def _matching(self, sender: Any) -> list[Receiver]:
        out = []
        for receiver, wanted in self._receivers:
            if wanted is None or wanted is sender or wanted == sender or (
                isinstance(wanted, str) and getattr(sender, "name", None) == wanted
            ):
                out.append(receiver)
        return out

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every matching receiver; errors are logged, not raised."""
        if not self._receivers:
            return []
        responses = []
        for receiver in self._matching(sender):
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:  # a receiver must not break the task or the worker
                logger.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                responses.append((receiver, exc))
        return responses

    send_robust = send

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


# Task publishing
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
# Task execution
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_internal_error = Signal("task_internal_error")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
# App
import_modules = Signal("import_modules")
# Worker
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
heartbeat_sent = Signal("heartbeat_sent")
# Logging
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
# Beat
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
