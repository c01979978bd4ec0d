"""Which consumers of one worker wait for work: a byte each, in memory they all share.

Every pool slot is a consumer of its own, with its own prefetch. Without this board a
slot busy with one task could hold the messages fetched behind it while a sibling slot
sits idle. With it, a consumer whose siblings are idle fetches one message at a time,
and one that holds prefetched messages while siblings are idle gives them back at once.
"""

from __future__ import annotations

import mmap


class Siblings:
    """The idle flags of ``count`` consumers; created before forking, so children share it."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self._board = mmap.mmap(-1, self.count)

    def set_idle(self, index: int, idle: bool) -> None:
        self._board[index] = 1 if idle else 0

    def others_idle(self, index: int) -> bool:
        board = self._board
        return any(board[i] for i in range(self.count) if i != index)
