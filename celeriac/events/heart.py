"""The worker's own events: ``worker-online``, a ``worker-heartbeat`` every ``freq``
seconds, ``worker-offline``; sent by a service thread of the worker's main process.

Monitors take a worker whose heartbeats stop for twice ``freq`` as gone (Flower,
``State.alive_workers``), so the thread keeps beating through a warm shutdown, while
running tasks finish, and says ``worker-offline`` once the pool is down.
"""

from __future__ import annotations

import logging
import platform
import threading
from typing import Callable

from .. import __version__
from .dispatcher import EventDispatcher
from .event import load_average

logger = logging.getLogger("celeriac.events")

#: what a monitor shows as the worker's software (Flower displays it)
SOFTWARE_INFO = {"sw_ident": "py-celeriac", "sw_ver": __version__,
                 "sw_sys": platform.system()}


class WorkerHeart:
    """A worker ``Service`` (see ``celeriac.worker.main``) sending the worker events.

    Args:
        dispatcher: sends them (its ``hostname`` is the worker's node name).
        freq: seconds between heartbeats.
        load: ``(active, processed)`` now: tasks running, tasks ended since start.
        add_gate, remove_gate: register the lock this service holds while it sends,
            so that no pool process is forked in the middle of a send.
    """

    name = "events"
    join_timeout = 5.0

    def __init__(self, dispatcher: EventDispatcher, freq: float,
                 load: Callable[[], tuple[int, int]],
                 add_gate: Callable[[threading.Lock], None],
                 remove_gate: Callable[[threading.Lock], None]) -> None:
        self.dispatcher = dispatcher
        self.freq = float(freq)
        self.load = load
        self.busy = threading.Lock()
        self._add_gate, self._remove_gate = add_gate, remove_gate
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._add_gate(self.busy)
        self.thread = threading.Thread(target=self._run, name="celeriac-events-heart",
                                       daemon=True)
        self.thread.start()

    def beat(self) -> None:
        """A heartbeat now (what remote control's ``heartbeat`` asks for)."""
        self._send("worker-heartbeat")

    def request_stop(self) -> None:
        """Nothing yet: the heartbeats go on while running tasks finish."""

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(self.join_timeout)
        self._send("worker-offline")
        self.dispatcher.close()
        self._remove_gate(self.busy)

    def _run(self) -> None:
        self._send("worker-online")
        while not self._stop.wait(self.freq):
            self._send("worker-heartbeat")

    def _send(self, type: str) -> None:
        try:
            active, processed = self.load()
        except Exception:  # noqa: BLE001 - a heartbeat goes out even if counting failed
            logger.debug("could not count the tasks of this worker", exc_info=True)
            active = processed = 0
        with self.busy:
            self.dispatcher.send(type, freq=self.freq, active=active, processed=processed,
                                 loadavg=load_average(), sw_ident=SOFTWARE_INFO["sw_ident"],
                                 sw_ver=SOFTWARE_INFO["sw_ver"], sw_sys=SOFTWARE_INFO["sw_sys"])
