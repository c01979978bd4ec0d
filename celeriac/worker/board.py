"""What remote control needs to see and change in a worker's consumers.

The worker's main process answers remote control, but in a prefork worker the tasks
run in child processes, each a full consumer. So the main process and its consumers
share this board, in memory mapped before the fork:

* **orders** (main process -> every consumer): settings changed at runtime
  (``rate_limit``, ``time_limit``, ``add_consumer``/``cancel_consumer``, task events on
  or off), as one versioned JSON document. A consumer applies a new version before its
  next fetch, and its reporter thread applies it within ``REPORT_POLL`` seconds.
* **reports** (each consumer -> main process): what the consumer holds (running,
  reserved, waiting for a rate limit) and how many tasks of each name it finished, as
  one JSON document per slot, written by a thread of the consumer when the main
  process asks for a fresh one (``inspect active`` waits at most a fraction of a
  second for it).

A thread pool's consumers use the same board in one process, so every pool answers
remote control the same way.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import threading
import time
from typing import Any, Callable

logger = logging.getLogger("celeriac.worker")

#: seconds between a reporter thread's looks at the board
REPORT_POLL = 0.02

_HEADER = struct.Struct("=QI")  # version or generation, length
ORDERS_SIZE = 64 * 1024
REPORT_SIZE = 64 * 1024
_REPORT = struct.Struct("=QQI")  # generation asked, generation written, length


class ControlBoard:
    """Shared memory for ``slots`` consumers; create it before forking them."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.memory = mmap.mmap(-1, ORDERS_SIZE + self.slots * REPORT_SIZE)
        self._asked = 0
        self._lock = threading.Lock()

    # -- orders --------------------------------------------------------------------------
    def orders(self) -> tuple[int, dict[str, Any]]:
        version, length = _HEADER.unpack_from(self.memory, 0)
        if not version:
            return 0, {}
        start = _HEADER.size
        try:
            return version, json.loads(bytes(self.memory[start:start + length]))
        except ValueError:  # being rewritten this instant; the next look reads it
            return 0, {}

    def order_version(self) -> int:
        return int(_HEADER.unpack_from(self.memory, 0)[0])

    def change_orders(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the orders and publish them as a new version."""
        with self._lock:
            version = self.order_version()
            _, current = self.orders()
            change(current)
            data = json.dumps(current).encode()
            if len(data) > ORDERS_SIZE - _HEADER.size:
                raise ValueError("too many runtime changes to keep; restart the worker")
            # Length and body first, version last: a reader never takes a half write
            # for a new version (it re-reads on a decode error).
            start = _HEADER.size
            self.memory[start:start + len(data)] = data
            _HEADER.pack_into(self.memory, 0, 0, len(data))
            _HEADER.pack_into(self.memory, 0, version + 1, len(data))

    # -- reports -------------------------------------------------------------------------
    def _report_offset(self, slot: int) -> int:
        return ORDERS_SIZE + slot * REPORT_SIZE

    def ask(self, slots: list[int]) -> int:
        """Ask these consumers for a fresh report; returns the generation to wait for."""
        with self._lock:
            self._asked += 1
            generation = self._asked
        for slot in slots:
            offset = self._report_offset(slot)
            _, written, length = _REPORT.unpack_from(self.memory, offset)
            _REPORT.pack_into(self.memory, offset, generation, written, length)
        return generation

    def asked(self, slot: int) -> int:
        return int(_REPORT.unpack_from(self.memory, self._report_offset(slot))[0])

    def write_report(self, slot: int, generation: int, report: dict[str, Any]) -> None:
        offset = self._report_offset(slot)
        data = json.dumps(report, default=repr).encode()
        room = REPORT_SIZE - _REPORT.size
        if len(data) > room:
            report = dict(report, reserved=report.get("reserved", [])[:10], truncated=True)
            data = json.dumps(report, default=repr).encode()[:room]
        start = offset + _REPORT.size
        self.memory[start:start + len(data)] = data
        asked, _, _ = _REPORT.unpack_from(self.memory, offset)
        _REPORT.pack_into(self.memory, offset, asked, generation, len(data))

    def read_report(self, slot: int) -> tuple[int, dict[str, Any] | None]:
        offset = self._report_offset(slot)
        _, written, length = _REPORT.unpack_from(self.memory, offset)
        if not written:
            return 0, None
        start = offset + _REPORT.size
        try:
            return written, json.loads(bytes(self.memory[start:start + length]))
        except ValueError:
            return written, None

    def reports(self, slots: list[int], timeout: float = 0.5) -> dict[int, dict[str, Any]]:
        """Fresh reports of ``slots``; a consumer that cannot answer in time (a task
        holding its GIL in C code) is given with its last report, or left out."""
        generation = self.ask(slots)
        deadline = time.monotonic() + timeout
        found: dict[int, dict[str, Any]] = {}
        waiting = set(slots)
        while waiting and time.monotonic() < deadline:
            for slot in list(waiting):
                written, report = self.read_report(slot)
                if written >= generation and report is not None:
                    found[slot] = report
                    waiting.discard(slot)
            if waiting:
                time.sleep(REPORT_POLL / 2)
        for slot in waiting:
            _, report = self.read_report(slot)
            if report is not None:
                found[slot] = dict(report, stale=True)
        return found


class Reporter(threading.Thread):
    """In a consumer's process: answers the board's requests and applies its orders.

    Args:
        report: builds this consumer's report (called on this thread).
        apply: applies a new version of the orders.
    """

    def __init__(self, board: ControlBoard, slot: int, report: Callable[[], dict[str, Any]],
                 apply: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        super().__init__(name=f"celeriac-reporter-{slot}", daemon=True)
        self.board = board
        self.slot = slot
        self.report = report
        self.apply = apply
        self.stop = stop
        self.applied = 0
        self._applying = threading.Lock()

    def apply_orders(self) -> None:
        """Apply new orders, if any; called by this thread and by the consumer's."""
        if self.board.order_version() == self.applied:
            return
        with self._applying:
            version, orders = self.board.orders()
            if version and version != self.applied:
                self.apply(orders)
                self.applied = version

    def run(self) -> None:
        answered = 0
        while not self.stop.wait(REPORT_POLL):
            try:
                self.apply_orders()
                asked = self.board.asked(self.slot)
                if asked != answered:
                    self.board.write_report(self.slot, asked, self.report())
                    answered = asked
            except Exception:  # noqa: BLE001 - inspection must never stop a consumer
                logger.debug("reporter failed", exc_info=True)
