"""The current pid, cached: ``os.getpid()`` is a system call, and the hot path asks often.

Per-process objects (connections, clients) compare against it to notice a fork.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def current_pid() -> int:
    return _pid
