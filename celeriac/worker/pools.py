"""Pools: how a worker's consumers are laid out over threads and processes.

* ``prefork`` (default): one child process per slot, each a full consumer with its own
  connection, so children never queue behind the parent. The parent only supervises:
  it restarts children and hands back the messages of one that died.
* ``threads``: one consumer per thread in the worker process.
* ``solo``: one consumer in the worker process.
* ``asyncio``: one consumer whose ``async def`` tasks run ``-c`` at a time on one loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import signals
from ..brokers import Broker, Liveness, capability
from ..brokers.base import new_consumer_id
from ..exceptions import TimeLimitExceeded, WorkerLostError
from ..serialization import loads
from ..context import Context
from ..utils.outage import OutageLog
from .consumer import Consumer, EventLoopThread
from .heartbeat import Heartbeat, report_released
from .outcome import TaskEnd
from .revocations import Revocations
from .siblings import Siblings
from .timelimits import Running, RunningSlot, shared_board

if TYPE_CHECKING:
    from .main import Worker

logger = logging.getLogger("celeriac.worker")


class Pool:
    """Start consumers, stop them warm or cold, say when they are all gone."""

    name = "base"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        #: a consumer died of a bug; the worker exits non-zero
        self.failed = False

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def supervise(self) -> None:
        """Called often from the worker's main thread."""

    def warm_stop(self) -> None:
        self.stop.set()

    def cold_stop(self) -> None:
        raise NotImplementedError


class ThreadedPool(Pool):
    """Consumers on threads of the worker process (solo, threads, asyncio)."""

    name = "threads"

    def __init__(self, worker: Worker, consumers: int, async_limit: int) -> None:
        super().__init__(worker)
        self.count = consumers
        self.async_limit = async_limit
        self.threads: list[threading.Thread] = []
        self.consumers: list[Consumer] = []

    def start(self) -> None:
        w = self.worker
        heartbeat = Heartbeat(w.app.conf.worker_heartbeat_interval, w.app)
        loop = EventLoopThread()
        siblings = Siblings(self.count)
        for i in range(self.count):
            consumer = Consumer(w.app, w.queues, w.hostname, w.prefetch, self.async_limit,
                                self.stop, heartbeat, loop, max_tasks=None,
                                rate_share=1.0 / self.count, siblings=siblings, index=i)
            self.consumers.append(consumer)
            thread = threading.Thread(target=self._run, args=(consumer,),
                                      name=f"celeriac-{self.name}-{i}", daemon=True)
            self.threads.append(thread)
        heartbeat.start()
        for thread in self.threads:
            thread.start()

    def _run(self, consumer: Consumer) -> None:
        try:
            consumer.run()
        except Exception:
            logger.exception("consumer crashed; stopping the worker")
            self.failed = True
            self.stop.set()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def cold_stop(self) -> None:
        # Threads cannot be killed; hand their unacked messages back and leave.
        self.stop.set()
        for consumer in self.consumers:
            try:
                if consumer.liveness is not None:
                    report_released(self.worker.app, consumer.broker,
                                    consumer.liveness.forget_consumer(), "this worker")
            except Exception as exc:
                logger.warning("could not return messages: %r", exc)
        os._exit(1)


class PreforkPool(Pool):
    name = "prefork"

    def __init__(self, worker: Worker, processes: int) -> None:
        super().__init__(worker)
        self.processes = processes
        self.children: dict[int, tuple[int, str]] = {}  # pid -> (slot, consumer id)
        self.started: dict[int, float] = {}  # pid -> when it was forked
        self._broker: Broker | None = None
        self.stopping = False
        self.board = shared_board(processes)
        self.slots = [RunningSlot(self.board, i) for i in range(processes)]
        self.timed_out: set[int] = set()  # pids killed for overrunning a hard limit
        self.terminated: dict[int, str] = {}  # pid -> signal, for revoke(terminate=True)
        self._revocations: Revocations | None = None
        self.siblings = Siblings(processes)
        self.beat_interval = float(worker.app.conf.worker_heartbeat_interval)
        self.outage = OutageLog(logger, "broker (pool supervisor)", level=logging.WARNING)
        self._next_beat = 0.0

    def start(self) -> None:
        for slot in range(self.processes):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        consumer_id = new_consumer_id() + f"-{slot}"
        self.slots[slot].clear()
        signals.worker_before_create_process.send(sender=self)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._child(slot, consumer_id)
            finally:
                os._exit(code)
        self.children[pid] = (slot, consumer_id)
        self.started[pid] = time.monotonic()

    def _child(self, slot: int, consumer_id: str) -> int:
        multiprocessing.current_process().name = f"ForkPoolWorker-{slot + 1}"
        multiprocessing.current_process().index = slot  # type: ignore[attr-defined]
        stop = threading.Event()
        parent = os.getppid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        _term_with_parent()
        w = self.worker
        try:
            signals.worker_process_init.send(sender=None)
            heartbeat = Heartbeat(w.app.conf.worker_heartbeat_interval, w.app)
            consumer = Consumer(w.app, w.queues, w.hostname, w.prefetch, w.async_limit, stop,
                                heartbeat, EventLoopThread(), max_tasks=w.max_tasks_per_child,
                                consumer_id=consumer_id, slot=self.slots[slot],
                                max_memory_kib=w.app.conf.worker_max_memory_per_child,
                                rate_share=1.0 / self.processes, siblings=self.siblings,
                                index=slot)
            heartbeat.on_tick.append(lambda: _watch_parent(parent, stop, self.slots[slot]))
            heartbeat.start()
            consumer.run()
            return 0
        except Exception:
            logger.exception("pool process crashed")
            return 1
        finally:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def _parent_broker(self) -> Broker:
        if self._broker is None:
            self._broker = self.worker.app.connect_broker()
        return self._broker

    def supervise(self) -> None:
        self._reap()
        self._beat_for_children()
        self._enforce_hard_limits()
        try:
            self._terminate_revoked()
        except Exception as exc:
            self.outage.failed(exc, "cannot read revocations")

    def _beat_for_children(self) -> None:
        # The children beat too, from a thread; but a task running C code that holds
        # the GIL (sum(range(10**9))) silences that thread. The parent's beats keep such
        # a child alive, so its message is not handed to another worker and run twice.
        now = time.monotonic()
        if now < self._next_beat or not self.children:
            return
        self._next_beat = now + self.beat_interval
        live = capability(self._parent_broker(), Liveness)
        if live is None:
            return
        try:
            ids = [consumer_id for _, consumer_id in self.children.values()]
            report_released(self.worker.app, live, live.heartbeat(ids), "lost workers")
            self.outage.recovered()
        except Exception as exc:
            self.outage.failed(exc, "retrying")

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            slot, consumer_id = entry
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and pid not in self.timed_out and pid not in self.terminated:
                logger.error("Pool process %d (slot %d) exited with %s", pid, slot,
                             f"signal {-code}" if code < 0 else f"code {code}")
            lost, drop = self._account_for(slot, consumer_id, pid, code)
            self._release(consumer_id, lost, drop)
            if not self.stopping:
                if code != 0 and time.monotonic() - self.started.get(pid, 0) < 1.0:
                    # It died at once: do not fork in a tight loop.
                    time.sleep(1.0)
                self._spawn(slot)
            self.started.pop(pid, None)

    def _enforce_hard_limits(self) -> None:
        now = time.time()
        for pid, (slot, _) in list(self.children.items()):
            running = self.slots[slot].read()
            if running and running.deadline and now > running.deadline and pid not in self.timed_out:
                logger.error("Task %s[%s] exceeded its hard time limit; killing pool "
                             "process %d", running.name, running.task_id, pid)
                self.timed_out.add(pid)
                _kill(pid, signal.SIGKILL)

    def _terminate_revoked(self) -> None:
        if self._revocations is None:
            self._revocations = Revocations(self._parent_broker())
        revoked = self._revocations.refresh()
        if not revoked:
            return
        for pid, (slot, _) in list(self.children.items()):
            running = self.slots[slot].read()
            if running is None or pid in self.terminated:
                continue
            signame = revoked.get(running.task_id)
            if signame:
                # The child treats SIGTERM/SIGINT as "finish and stop"; terminating a
                # task has to end its process, so those become SIGKILL.
                signum = getattr(signal, signame, signal.SIGKILL)
                if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    signum = signal.SIGKILL
                logger.warning("Terminating task %s[%s] (revoked): %s to pool process %d",
                               running.name, running.task_id, signame, pid)
                self.terminated[pid] = signame
                _kill(pid, signum)

    def _account_for(self, slot: int, consumer_id: str, pid: int,
                      code: int) -> tuple[list[Any], list[Any]]:
        """Record what a child that ended took with it; say what becomes of its message.

        Killed at the hard limit: FAILURE with ``TimeLimitExceeded``, message dropped.
        Terminated by a revoke: REVOKED, message dropped. Died otherwise mid-task: an
        early-acked task is FAILURE with ``WorkerLostError`` (its message is gone); an
        ``acks_late`` one goes back to its queue, counting one loss towards
        ``broker_max_redeliveries``, unless ``reject_on_worker_lost`` is explicitly
        False (Celery's choice: dropped, and recorded as lost).

        Returns:
            ``(lost, drop)``: the tags for ``Broker.forget_consumer``. The messages
            prefetched behind the task never ran, and return as they were.
        """
        running = self.slots[slot].read()
        timed_out = pid in self.timed_out
        self.timed_out.discard(pid)
        terminated = self.terminated.pop(pid, None)
        if running is None:
            return [], []
        # an acks_late message still waits to be acked; an early one has a note to drop
        tag = [running.tag] if running.tag >= 0 else []
        app = self.worker.app
        task = app.tasks.get(running.name)
        reject = getattr(task, "reject_on_worker_lost", None)
        if reject is None:
            reject = app.conf.task_reject_on_worker_lost
        end = TaskEnd(app, self.worker.hostname)
        chord_member = self._chord_request(running)
        try:
            if terminated:
                end.revoked(chord_member or Context(id=running.task_id, task=running.name),
                            task, terminated=terminated)
                return [], tag
            if timed_out:
                hard = running.deadline - running.started if running.deadline else None
                exc: BaseException = TimeLimitExceeded(hard)
            elif running.acks_late and reject is not False:
                logger.warning("Task %s[%s] was running in pool process %d when it died; "
                               "its message goes back to the queue", running.name,
                               running.task_id, pid)
                return tag, []
            else:
                exc = WorkerLostError(f"Worker exited prematurely: {_describe(code)}.")
            logger.error("Task %s[%s] failed: %r", running.name, running.task_id, exc)
            end.lost(running.task_id, exc, request=chord_member, task=task)
        except Exception as store_exc:
            logger.warning("could not record the end of %s: %r", running.task_id, store_exc)
        return [], tag

    def _chord_request(self, running: Running) -> Context | None:
        """The chord part of a dead child's request, kept in its slot, or None.

        The child died before it could count its chord header task in; without this
        the chord would wait forever for a member that will never report.
        """
        if running.context is None:
            return None
        fields = loads(running.context, "application/json")
        if "too_large" in fields:
            logger.error("Task %s[%s] of chord group %s ended with its pool process; its "
                         "chord body (%d bytes) was too large to keep, so the chord cannot "
                         "complete", running.name, running.task_id, fields["group"],
                         fields["too_large"])
            return None
        return Context(**fields)

    def _release(self, consumer_id: str, lost: list[Any], drop: list[Any]) -> None:
        # A child that died holding messages: give them back now instead of waiting
        # for its heartbeat to expire.
        live = capability(self._parent_broker(), Liveness)
        if live is None:
            return
        try:
            report_released(self.worker.app, live, live.forget_consumer(consumer_id, lost, drop),
                            "a lost pool process")
        except Exception as exc:
            logger.warning("could not return messages of %s: %r", consumer_id, exc)

    def alive(self) -> bool:
        return bool(self.children)

    def warm_stop(self) -> None:
        self.stopping = True
        self.stop.set()
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)

    def cold_stop(self) -> None:
        self.stopping = True
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self.supervise()
            time.sleep(0.05)


def _term_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # elsewhere, _watch_parent notices within a heartbeat tick


def _watch_parent(parent: int, stop: threading.Event, slot: RunningSlot) -> None:
    """An orphaned child stops: its supervisor, which enforces hard time limits and
    hands back what a dead child held, is gone. It finishes the running task (giving
    back what it prefetched at once) unless that overruns its hard limit."""
    if os.getppid() == parent:
        return
    if not stop.is_set():
        logger.error("the worker's main process is gone; this pool process stops")
        stop.set()
    running = slot.read()
    if running is not None and running.deadline and time.time() > running.deadline:
        logger.error("Task %s[%s] exceeded its hard time limit with no supervisor left; "
                     "exiting", running.name, running.task_id)
        os._exit(1)


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {-code} ({signal.Signals(-code).name})"
    return f"exitcode {code}"


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def create_pool(worker: Worker) -> Pool:
    name = worker.pool_name
    if name == "prefork":
        return PreforkPool(worker, worker.concurrency)
    if name == "threads":
        pool = ThreadedPool(worker, worker.concurrency, worker.async_limit)
    elif name == "solo":
        pool = ThreadedPool(worker, 1, worker.async_limit)
    elif name == "asyncio":
        pool = ThreadedPool(worker, 1, worker.concurrency)
    else:
        raise ValueError(f"unknown pool {name!r}; choose prefork, threads, solo or asyncio")
    pool.name = name
    return pool


POOLS = ("prefork", "threads", "solo", "asyncio")
