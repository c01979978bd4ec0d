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
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import messages
from ..brokers import Broker, DeadLetter, Liveness, Released, capability
from ..exceptions import WorkerLostError
from ..utils.outage import OutageLog
from .outcome import TaskEnd

if TYPE_CHECKING:
    from ..app import Celery
    from .consumer import Consumer

logger = logging.getLogger("celeriac.worker")


def record_poisoned(app: Celery, poisoned: Sequence[DeadLetter], queue: str) -> None:
    """Mark the tasks of messages a broker just set aside as poison as failed.

    Their callers would otherwise wait forever on a task that will never run.
    """
    for dead in poisoned:
        try:
            task_id = messages.decode_envelope(dead.payload).task_id
            if task_id:
                logger.error("Task %s set aside in %r: %s", task_id, queue, dead.reason)
                TaskEnd(app).lost(task_id, WorkerLostError(dead.reason))
        except Exception as exc:
            logger.warning("could not record a poison message as failed: %r", exc)


def record_interrupted(app: Celery, envelopes: Sequence[str]) -> None:
    """Mark early-acked tasks that were running when their worker was lost as failed.

    Their messages were acked when they started, so nothing runs them again; without
    this their callers would wait forever. A task that did store its outcome before its
    worker went (its note is dropped lazily) is left as it is.
    """
    reason = ("Worker exited prematurely while running the task; its message was acked "
              "when it started (use acks_late to have it run again)")
    for envelope in envelopes:
        try:
            task_id = messages.decode_envelope(envelope).task_id
            if task_id:
                logger.error("Task %s lost with its worker: %s", task_id, reason)
                TaskEnd(app).lost(task_id, WorkerLostError(reason), unless_ready=True)
        except Exception as exc:
            logger.warning("could not record an interrupted task as failed: %r", exc)


def report_released(app: Celery, broker: Any, released: Released, whose: str) -> None:
    if released.returned:
        logger.warning("returned %d message(s) of %s to their queues", released.returned,
                       whose)
    record_poisoned(app, released.poisoned, broker.dead_letter_queue)
    record_interrupted(app, released.interrupted)


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
