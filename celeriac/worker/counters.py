"""How many tasks each consumer of a worker started and finished, in shared memory.

The worker's heartbeat events say how many tasks run now (``active``) and how many
ended since the worker started (``processed``). In a prefork worker the tasks run in
the children, so each consumer counts in a slot of its own of a small shared array
made by the pool before it forks; the main process adds the slots up. Each slot has
one writer (its consumer), so no lock is needed, and a child that replaces a dead one
carries on its slot's count.
"""

from __future__ import annotations

import mmap
import struct

_CELL = struct.Struct("=QQ")  # started, finished


class TaskCounters:
    """``slots`` pairs of (started, finished) counters, shared with forked children."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.memory = mmap.mmap(-1, self.slots * _CELL.size)

    def _at(self, index: int) -> int:
        return (index % self.slots) * _CELL.size

    def reset_running(self, index: int) -> None:
        """A new consumer in slot ``index``: nothing runs there (its predecessor may
        have died mid-task), the finished count goes on."""
        offset = self._at(index)
        finished = _CELL.unpack_from(self.memory, offset)[1]
        _CELL.pack_into(self.memory, offset, finished, finished)

    def started(self, index: int) -> None:
        offset = self._at(index)
        started, finished = _CELL.unpack_from(self.memory, offset)
        _CELL.pack_into(self.memory, offset, started + 1, finished)

    def finished(self, index: int) -> None:
        offset = self._at(index)
        started, finished = _CELL.unpack_from(self.memory, offset)
        _CELL.pack_into(self.memory, offset, max(started, finished + 1), finished + 1)

    def totals(self) -> tuple[int, int]:
        """``(active, processed)`` over every slot."""
        active = processed = 0
        for started, finished in _CELL.iter_unpack(self.memory):
            active += max(0, started - finished)
            processed += finished
        return active, processed
