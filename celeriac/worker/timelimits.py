"""Time limits, and what each pool process is running.

* Soft limit: ``SoftTimeLimitExceeded`` is raised inside the task. On a process's main
  thread (prefork children) a SIGALRM delivers it even in the middle of a sleep or a
  socket read. On other threads (threads, solo) it is raised asynchronously, which
  reaches the task at its next Python instruction but cannot interrupt a blocking C call.
* Hard limit: in prefork the parent reads each child's ``RunningSlot`` and kills a child
  whose task overran; the task is recorded as FAILURE with ``TimeLimitExceeded`` and a new
  child takes the slot. The threads and solo pools cannot kill a thread: the hard limit
  is raised inside the task the same way as the soft one. ``async def`` tasks are
  cancelled at the hard limit.
"""

from __future__ import annotations

import ctypes
import mmap
import signal
import struct
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def limits_for(task: Any, timelimit_header: Any, conf: Any) -> tuple[float | None, float | None]:
    """``(hard, soft)`` seconds: the message's header, else the task's, else the settings."""
    hard = soft = None
    if isinstance(timelimit_header, (list, tuple)) and len(timelimit_header) == 2:
        hard, soft = timelimit_header
    if hard is None:
        hard = task.time_limit if task.time_limit is not None else conf.task_time_limit
    if soft is None:
        soft = (task.soft_time_limit if task.soft_time_limit is not None
                else conf.task_soft_time_limit)
    return (float(hard) if hard else None), (float(soft) if soft else None)


# -- raising inside a running task --------------------------------------------------------
def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type))


class _Alarm(threading.Thread):
    """Raises an exception in one thread at a deadline unless cancelled first."""

    def __init__(self, thread_id: int, schedule: list[tuple[float, type[BaseException]]]) -> None:
        super().__init__(name="celeriac-time-limit", daemon=True)
        self.thread_id = thread_id
        self.schedule = schedule
        self.cancelled = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        for deadline, exc_type in self.schedule:
            if self.cancelled.wait(max(0.0, deadline - time.monotonic())):
                return
            with self.lock:
                if self.cancelled.is_set():
                    return
                _raise_in_thread(self.thread_id, exc_type)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled.set()


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded()


@contextmanager
def enforce(hard: float | None, soft: float | None, hard_by_parent: bool) -> Iterator[None]:
    """Apply the limits to the synchronous task run inside the ``with`` block.

    Args:
        hard: hard limit in seconds, or None.
        soft: soft limit in seconds, or None.
        hard_by_parent: a prefork parent kills this process at the hard limit, so only
            the soft limit needs enforcing here.
    """
    if not hard and not soft:
        yield
        return
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hard_by_parent:
        if soft:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, soft)
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        else:
            yield
        return
    start = time.monotonic()
    schedule: list[tuple[float, type[BaseException]]] = []
    if soft:
        schedule.append((start + soft, SoftTimeLimitExceeded))
    if hard and not hard_by_parent:
        schedule.append((start + hard, TimeLimitExceeded))
    schedule.sort(key=lambda item: item[0])
    alarm = _Alarm(threading.get_ident(), schedule)
    alarm.start()
    try:
        yield
    finally:
        alarm.cancel()


# -- what each prefork child is running -------------------------------------------------
_RECORD = struct.Struct("=ddqB36s200s")  # hard deadline, started, tag, acks_late, id, name
_CONTEXT_LENGTH = struct.Struct("=I")
# Room for a chord header task's request (its chord body signature included), so that a
# parent whose child died mid-task can still count that task into its chord. A body too
# big for it is reported instead of counted.
CONTEXT_SIZE = 64 * 1024
_SLOT_SIZE = _RECORD.size + _CONTEXT_LENGTH.size + CONTEXT_SIZE

# The request fields a chord needs to count a member in and to send or fail its body.
_CHORD_FIELDS = ("id", "task", "group", "group_index", "chord", "root_id", "parent_id")


def chord_context(request: Any) -> bytes:
    """What ``RunningSlot.start`` keeps of a chord header task's request."""
    from ..serialization import dumps

    data, _, _ = dumps({name: getattr(request, name, None) for name in _CHORD_FIELDS}, "json")
    if len(data) > CONTEXT_SIZE:
        data, _, _ = dumps({"id": request.id, "task": request.task, "group": request.group,
                            "too_large": len(data)}, "json")
    return data


class RunningSlot:
    """One child's record in memory shared with its parent: the task it runs now.

    Writing it costs no system call, so it is kept for every task; the parent reads it
    to enforce hard limits and to say which task a dead child took with it.
    """

    def __init__(self, board: mmap.mmap, index: int) -> None:
        self.board = board
        self.offset = index * _SLOT_SIZE
        self.context_offset = self.offset + _RECORD.size

    def start(self, task_id: str, name: str, tag: Any, acks_late: bool,
              hard: float | None, context: bytes | None = None) -> None:
        deadline = time.time() + hard if hard else 0.0
        # The context goes first: the parent trusts a record only once it has started.
        if context:
            _CONTEXT_LENGTH.pack_into(self.board, self.context_offset, len(context))
            start = self.context_offset + _CONTEXT_LENGTH.size
            self.board[start:start + len(context)] = context
        else:
            _CONTEXT_LENGTH.pack_into(self.board, self.context_offset, 0)
        _RECORD.pack_into(self.board, self.offset, deadline, time.time(),
                          tag if isinstance(tag, int) else -1, acks_late,
                          task_id.encode()[:36], name.encode()[:200])

    def clear(self) -> None:
        _RECORD.pack_into(self.board, self.offset, 0.0, 0.0, 0, 0, b"", b"")

    def read(self) -> Running | None:
        deadline, started, tag, acks_late, task_id, name = _RECORD.unpack_from(
            self.board, self.offset)
        if not started:
            return None
        (length,) = _CONTEXT_LENGTH.unpack_from(self.board, self.context_offset)
        start = self.context_offset + _CONTEXT_LENGTH.size
        context = bytes(self.board[start:start + min(length, CONTEXT_SIZE)]) or None
        return Running(task_id.rstrip(b"\0").decode(), name.rstrip(b"\0").decode(), tag,
                       bool(acks_late), started, deadline or None, context)


class Running:
    __slots__ = ("task_id", "name", "tag", "acks_late", "started", "deadline", "context")

    def __init__(self, task_id: str, name: str, tag: int, acks_late: bool, started: float,
                 deadline: float | None, context: bytes | None = None) -> None:
        self.task_id = task_id
        self.name = name
        self.tag = tag
        self.acks_late = acks_late
        self.started = started
        self.deadline = deadline
        #: ``chord_context`` of a chord header task, else None
        self.context = context


def shared_board(slots: int) -> mmap.mmap:
    """Anonymous shared memory, created before forking so children inherit it."""
    return mmap.mmap(-1, max(1, slots) * _SLOT_SIZE)
