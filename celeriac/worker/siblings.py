"""Which consumers of one worker wait for work: a byte each, in memory they all share.

Every pool slot is a consumer of its own, with its own prefetch. Without this board a
slot busy with one task could hold the messages fetched behind it while a sibling slot
sits idle. With it, a consumer whose siblings are idle fetches one message at a time,
and one that holds prefetched messages while siblings are idle gives them back at once.
"""

from __future__ import annotations

import mmap


class Siblings:
    """The idle flags of ``count`` consumers; created before forking, so children share it.

    ``count`` is the most consumers the pool can reach (it may grow); a place nobody
    uses stays 0, "not idle", so it never draws work away from a busy consumer.
    """

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self._board = mmap.mmap(-1, self.count)

    def set_idle(self, index: int, idle: bool) -> None:
        self._board[index] = 1 if idle else 0

    def idle(self, index: int) -> bool:
        return bool(self._board[index])

    def others_idle(self, index: int) -> bool:
        # A pool sized for growth has many unused places (always 0): search in C.
        board = self._board
        return board.find(b"\x01", 0, index) >= 0 or board.find(b"\x01", index + 1) >= 0
