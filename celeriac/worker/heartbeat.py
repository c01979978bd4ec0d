"""Liveness: each process's heartbeat thread, and what it does besides beating.

Every ``worker_heartbeat_interval`` it marks the process's consumers alive in the
broker and hands back the messages of consumers that stopped beating elsewhere (and
records the tasks of any set aside as poison). Every ``FAIRNESS_TICK`` it lets a
consumer whose task runs long give back what it prefetched.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import messages
from ..brokers import Broker, Liveness, Released, capability
from ..exceptions import WorkerLostError
from ..utils.outage import OutageLog
from .outcome import TaskEnd

if TYPE_CHECKING:
    from ..app import Celery
    from .consumer import Consumer

logger = logging.getLogger("celeriac.worker")


# Why an early-acked task that died with its worker is recorded as failed.
INTERRUPTED = ("Worker exited prematurely while running the task; its message was acked "
               "when it started (use acks_late to have it run again)")


def report_released(app: Celery, broker: Any, released: Released, whose: str) -> None:
    """Log what handing back a consumer's messages did, and fail the tasks that will
    not run: those set aside as poison, and early-acked ones interrupted with their
    worker (unless they stored an outcome first: their notes are dropped lazily).
    Their callers would otherwise wait forever."""
    if released.returned:
        logger.warning("returned %d message(s) of %s to their queues", released.returned,
                       whose)
    if not (released.poisoned or released.interrupted):
        return
    end = TaskEnd(app)
    lost = [(dead.payload, dead.reason, f"set aside in {broker.dead_letter_queue!r}", False)
            for dead in released.poisoned]
    lost += [(envelope, INTERRUPTED, "lost with its worker", True)
             for envelope in released.interrupted]
    for envelope, reason, what, unless_ready in lost:
        try:
            task_id = messages.decode_envelope(envelope).task_id
            if task_id:
                logger.error("Task %s %s: %s", task_id, what, reason)
                end.lost(task_id, WorkerLostError(reason), unless_ready=unless_ready)
        except Exception as exc:
            logger.warning("could not record a lost task as failed: %r", exc)


# How often the heartbeat thread looks for prefetched messages stuck behind a long task.
FAIRNESS_TICK = 0.1


class Heartbeat(threading.Thread):
    """Keeps this process's consumers alive in the broker, and reclaims dead ones' work.

    It runs on its own thread so that a long synchronous task never makes its consumer
    look dead.
    """

    def __init__(self, interval: float, app: Celery) -> None:
        super().__init__(name="celeriac-heartbeat", daemon=True)
        self.interval = interval
        self.app = app
        self.brokers: list[Liveness] = []
        self.consumers: list[Consumer] = []
        self.stopped = threading.Event()
        #: called on every tick (a prefork child watches for its parent's death)
        self.on_tick: list[Callable[[], None]] = []
        self.outage = OutageLog(logger, "broker (heartbeat)", level=logging.WARNING)
        # A consumer leaving closes its broker; the lock keeps a beat from using (or
        # re-registering) a broker that is being removed.
        self._lock = threading.Lock()

    def add(self, broker: Broker) -> None:
        live = capability(broker, Liveness)
        if live is None:
            return  # the broker itself hands back what a lost consumer held
        with self._lock:
            self.brokers.append(live)
            self._beat(live)

    def remove(self, broker: Broker) -> None:
        with self._lock:
            if broker in self.brokers:
                self.brokers.remove(broker)  # type: ignore[arg-type]

    def _beat(self, broker: Liveness) -> None:
        try:
            report_released(self.app, broker, broker.heartbeat(), "lost workers")
            self.outage.recovered()
        except Exception as exc:
            self.outage.failed(exc, "retrying")

    def watch(self, consumer: Consumer) -> None:
        with self._lock:
            self.consumers.append(consumer)

    def unwatch(self, consumer: Consumer) -> None:
        with self._lock:
            if consumer in self.consumers:
                self.consumers.remove(consumer)

    def run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self.stopped.wait(min(FAIRNESS_TICK, self.interval)):
            for tick in self.on_tick:
                tick()
            with self._lock:
                for consumer in self.consumers:
                    consumer.release_if_stuck()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    for broker in self.brokers:
                        self._beat(broker)
