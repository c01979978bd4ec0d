"""The ``gevent`` and ``eventlet`` pools: one consumer, up to ``-c`` tasks on greenlets.

``celeriac -A proj worker -P gevent -c 1000`` (or ``-P eventlet``) runs one ``Consumer``
with one broker connection in the worker process. It fetches up to ``-c`` times the
prefetch multiplier messages a round trip, and hands each message to a greenlet of the
pool's crew, at most ``-c`` busy at once: a task that waits on a socket or sleeps lets
the others run. A greenlet that finished its task waits for the next message, keeping
its connections; a new one is started only while every one is busy. Everything else is
the consumer's, unchanged: the early ack before the task starts and the late one after
it, eta deferral, expiry, revocations, rate limits, the messages given back when the
worker stops, the acks said again after an outage.

The process has to be monkey-patched before the app is imported, so that ``socket``,
``time.sleep``, ``threading`` and ``select`` cooperate: ``celeriac.cli.main.main`` does
it when the command line asks for ``-P gevent`` / ``-P eventlet``. Threads of the worker
(the heartbeat, the Redis result listener, embedded beat) are greenlets then too, and
``threading.local`` is per greenlet, so every task greenlet has its own SQLite
connection and its own Redis line: nothing half-used is shared between two greenlets.
Each message runs in a ``contextvars`` context of its own.

Time limits are timeouts of the task's greenlet: at the soft limit
``SoftTimeLimitExceeded`` is raised inside the task; at the hard limit the task is killed
(an exception its ``except Exception`` does not catch unwinds it) and recorded as
FAILURE with ``TimeLimitExceeded``. ``revoke(terminate=True)`` kills a running task the
same way and records it REVOKED.

Limits: a greenlet only gives way when it waits on I/O or sleeps. A task that computes
(or calls C code that blocks without cooperating) holds the whole process: no other task
runs, the heartbeat does not beat (past ``worker_lost_timeout`` other workers take this
worker's messages over and run them again), and neither time limit fires until it
yields. Use ``-P prefork`` for CPU-bound tasks.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from .. import states
from ..exceptions import (
    ImproperlyConfigured,
    MissingDependency,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from .consumer import Consumer
from .execute import Outcome

if TYPE_CHECKING:
    from ..brokers import Delivery

logger = logging.getLogger("celeriac.worker")

#: most messages one fetch takes, as with ``worker_prefetch_multiplier = 0``
MAX_BATCH = 1000


class _Killed(SystemExit):
    """Thrown into a task's greenlet to end it.

    A ``SystemExit`` so that the task's ``except Exception`` does not catch it and the
    run does not record it as the task's own failure: the consumer that killed it records
    what happened, once, as the prefork supervisor does for a process it killed.
    """


class _HardLimit(_Killed):
    """The task overran its hard time limit."""


class _Terminated(_Killed):
    """The task was revoked with ``terminate=True``."""


class Green:
    """What the pool needs of a green-thread library."""

    name = ""

    def patched(self) -> bool:
        """Whether the process was monkey-patched for this library."""
        raise NotImplementedError

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def current(self) -> Any:
        raise NotImplementedError

    def kill(self, greenlet: Any, exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in ``greenlet`` where it waits; do not wait for it."""
        raise NotImplementedError

    def timeout(self, seconds: float, exc_type: type[BaseException]) -> Callable[[], None]:
        """Raise ``exc_type`` in the current greenlet after ``seconds``; returns the
        function that cancels it."""
        raise NotImplementedError


class Gevent(Green):
    name = "gevent"

    def __init__(self) -> None:
        try:
            import gevent
            import gevent.monkey
        except ImportError as exc:
            raise _missing("gevent", exc) from None
        self._gevent = gevent
        self._monkey = gevent.monkey

    def patched(self) -> bool:
        return all(self._monkey.is_module_patched(m) for m in ("socket", "threading", "time"))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._gevent.spawn(fn, *args)

    def current(self) -> Any:
        return self._gevent.getcurrent()

    def kill(self, greenlet: Any, exc_type: type[BaseException]) -> None:
        greenlet.kill(exc_type, block=False)

    def timeout(self, seconds: float, exc_type: type[BaseException]) -> Callable[[], None]:
        return self._gevent.Timeout.start_new(seconds, exc_type).close


class Eventlet(Green):
    name = "eventlet"

    def __init__(self) -> None:
        try:
            import eventlet
            import eventlet.patcher
        except ImportError as exc:
            raise _missing("eventlet", exc) from None
        self._eventlet = eventlet
        self._patcher = eventlet.patcher

    def patched(self) -> bool:
        return all(self._patcher.is_monkey_patched(m) for m in ("socket", "thread", "time"))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._eventlet.spawn(fn, *args)

    def current(self) -> Any:
        return self._eventlet.getcurrent()

    def kill(self, greenlet: Any, exc_type: type[BaseException]) -> None:
        greenlet.kill(exc_type)

    def timeout(self, seconds: float, exc_type: type[BaseException]) -> Callable[[], None]:
        return self._eventlet.Timeout(seconds, exc_type).cancel


def _missing(module: str, exc: ImportError) -> Exception:
    if exc.name not in (module, None):
        # It is installed but broken (a C extension that does not load): say that.
        return exc
    return MissingDependency(module, module, f"the {module} pool (-P {module})")


def green_library(name: str) -> Green:
    """The library behind ``-P name``, checked to have patched this process.

    Raises:
        MissingDependency: the library is not installed.
        ImproperlyConfigured: the process was not monkey-patched (the pool was chosen
            by ``worker_pool`` or by code, too late to patch before the app's imports).
    """
    green: Green = Gevent() if name == "gevent" else Eventlet()
    if not green.patched():
        raise ImproperlyConfigured(
            f"the {name} pool needs the process monkey-patched before the app is "
            f"imported: start the worker with `celeriac -A <app> worker -P {name}`, "
            f"which does it, rather than choosing the pool with worker_pool or in code")
    return green


class _Crew:
    """The greenlets that run tasks: at most ``size`` busy at once.

    A greenlet that finished a message waits for the next one instead of ending, so
    what it keeps greenlet-local (its SQLite connection, its Redis line) serves the
    tasks after it: a new greenlet per task would connect anew for every task. One more
    is started only when every one is busy, so there are never more than ``size``.
    """

    def __init__(self, green: Green, size: int, run: Callable[..., None]) -> None:
        self.green = green
        self.size = max(1, size)
        self.run = run
        self.busy = 0
        self.members = 0
        self._work: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._work_came = threading.Condition(self._lock)  # idle members wait on it
        self._freed = threading.Condition(self._lock)  # the consumer waits on it
        self._closing = False

    def start(self, stop: threading.Event, *item: Any) -> bool:
        """Hand ``item`` to a member, waiting for a free one; False (not handed) once
        the worker stops, even when one was freed by the same wake-up: nothing more
        starts then."""
        with self._lock:
            while self.busy >= self.size:
                if stop.is_set():
                    return False
                self._freed.wait(0.25)
            if stop.is_set():
                return False
            self.busy += 1
            self._work.append(item)
            grow = self.members < self.busy
            if grow:
                self.members += 1
            else:
                self._work_came.notify()
        if grow:
            try:
                self.green.spawn(self._member)
            except BaseException:
                with self._lock:
                    self.members -= 1
                    self.busy -= 1
                    self._work.remove(item)
                raise
        return True

    def _member(self) -> None:
        try:
            while True:
                try:
                    with self._lock:
                        while not self._work:
                            if self._closing:
                                return
                            self._work_came.wait()
                        item = self._work.popleft()
                    try:
                        self.run(*item)
                    finally:
                        with self._lock:
                            self.busy -= 1
                            self._freed.notify_all()
                except _Killed:
                    # A kill meant for a task that ended just before it came. (Let out
                    # of the greenlet, a SystemExit would stop the whole worker.)
                    continue
        finally:
            with self._lock:
                self.members -= 1

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Whether fewer than ``limit`` are busy, waiting up to ``timeout`` for it."""
        with self._lock:
            if self.busy >= limit:
                self._freed.wait(timeout)
            return self.busy < limit

    def close(self) -> None:
        """Wait until none is busy, then let every member end."""
        with self._lock:
            while self.busy:
                self._freed.wait(0.5)
            self._closing = True
            self._work_came.notify_all()


class GreenConsumer(Consumer):
    """A ``Consumer`` whose messages run concurrently, on up to ``-c`` greenlets.

    Args:
        green: the library the greenlets come from.
        concurrency: most tasks running at once (``-c``).
        prefetch: most messages held at once, running or waiting for a slot
            (``-c`` times the prefetch multiplier).
    """

    def __init__(self, *args: Any, green: Green, concurrency: int, **kwargs: Any) -> None:
        self.green = green
        self.crew = _Crew(green, concurrency, self._run_message)
        # A broker error met on a task's greenlet, for the consumer's loop to back off
        # on as it does after its own (the messages it left are kept to say again).
        self._trouble: Exception | None = None
        #: task id -> the greenlet running it, for revoke(terminate=True)
        self.greenlets: dict[str, Any] = {}
        self._terminating: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    # The base class sets ``prefetch`` once; here it is what one fetch may take now.
    @property
    def prefetch(self) -> int:
        return max(1, min(self.reserve - self.crew.busy, MAX_BATCH))

    @prefetch.setter
    def prefetch(self, value: int) -> None:
        self.reserve = max(self.crew.size, value)

    def _consume_once(self) -> None:
        trouble, self._trouble = self._trouble, None
        if trouble is not None:
            raise trouble
        self._settle_leftovers()
        self._terminate_revoked()
        # All slots busy and nothing more may wait for one: fetch nothing yet.
        if self.crew.wait_below(self.reserve, self.fetch_timeout):
            super()._consume_once()

    def _dispatch(self, delivery: Delivery, rate_checked: bool = False) -> None:
        trouble = self._trouble
        if trouble is not None or not self.crew.start(self.stop, delivery, rate_checked):
            # Not started: it stays this consumer's, to run or give back.
            with self._pending_lock:
                self._pending.appendleft(delivery)
            if trouble is not None:
                self._trouble = None
                raise trouble

    def _run_message(self, delivery: Delivery, rate_checked: bool) -> None:
        try:
            # A context of its own, as a new thread or asyncio task would have: the
            # request stack of a task killed mid-run is not left to the next one.
            contextvars.Context().run(self.handle, delivery, rate_checked)
        except Exception as exc:
            # handle() kept what it could not settle (in _unsettled, or back in
            # _pending when the early ack failed); the loop says it again.
            self._trouble = exc

    def _execute(self, task: Any, request: Any, hard: float | None,
                 soft: float | None) -> Outcome:
        cancels = []
        task_id = request.id
        self.greenlets[task_id] = self.green.current()
        try:
            if soft:
                cancels.append(self.green.timeout(soft, SoftTimeLimitExceeded))
            if hard:
                cancels.append(self.green.timeout(hard, _HardLimit))
            return self.execution.run(task, request)
        except _HardLimit:
            return self._killed_at_hard_limit(task, request, hard)
        except _Terminated:
            return self._terminated(task, request)
        finally:
            for cancel in cancels:
                cancel()
            self.greenlets.pop(task_id, None)
            self._terminating.pop(task_id, None)

    def _killed_at_hard_limit(self, task: Any, request: Any, hard: float | None) -> Outcome:
        exc = TimeLimitExceeded(hard)
        logger.error("Task %s[%s] exceeded its hard time limit (%ss); its greenlet was "
                     "killed", task.name, request.id, hard)
        try:
            self.execution.end.lost(request.id, exc, request=request, task=task)
        except Exception:
            logger.exception("could not record the time limit of %s", request.id)
        return Outcome(states.FAILURE, exc)

    def _terminate_revoked(self) -> None:
        if not self.greenlets:
            return
        revoked = self.revocations.refresh()
        for task_id, greenlet in list(self.greenlets.items()):
            signame = revoked.get(task_id)
            if signame and task_id not in self._terminating:
                logger.warning("Terminating task %s (revoked, %s): killing its greenlet",
                               task_id, signame)
                self._terminating[task_id] = signame
                self.green.kill(greenlet, _Terminated)

    def _terminated(self, task: Any, request: Any) -> Outcome:
        signame = self._terminating.get(request.id) or "SIGTERM"
        try:
            self.execution.end.revoked(request, task, terminated=signame)
        except Exception:
            logger.exception("could not record the termination of %s", request.id)
        return Outcome(states.REVOKED)

    def _leave(self) -> None:
        # A warm stop lets the running tasks finish; what waits behind them goes back.
        self.crew.close()
        super()._leave()
