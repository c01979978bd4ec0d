"""Pools: how a worker's consumers are laid out over threads and processes.

* ``prefork`` (default): one child process per slot, each a full consumer with its own
  connection, so children never queue behind the parent. The parent only supervises:
  it restarts children and hands back the messages of one that died.
* ``threads``: one consumer per thread in the worker process.
* ``solo``: one consumer in the worker process.
* ``asyncio``: one consumer whose ``async def`` tasks run ``-c`` at a time on one loop.

Prefork and threads pools change size at run time (``grow``, ``shrink``, ``autoscale``,
and ``--autoscale``): a size change sets the pool's target, and the supervisor, in the
worker's main thread, forks or starts what is missing and retires what is too many
(idle slots first; a busy one finishes its task). Every fork thus happens on the main
thread, between two of its steps, whichever thread asked for the change.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import signal
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import signals
from ..brokers import Broker, Liveness, capability
from ..brokers.base import new_consumer_id
from ..exceptions import ImproperlyConfigured, TimeLimitExceeded, WorkerLostError
from ..serialization import loads
from ..context import Context
from ..utils.outage import OutageLog
from .autoscale import CHECK_INTERVAL, Autoscaler, autoscaler_class
from .consumer import Consumer, EventLoopThread
from .counters import TaskCounters
from .board import ControlBoard, Reporter
from .heartbeat import Heartbeat, report_released
from .inspection import apply_orders, consumer_report
from .outcome import TaskEnd
from .revocations import Revocations
from .siblings import Siblings
from .timelimits import Running, RunningSlot, shared_board

if TYPE_CHECKING:
    from .main import Worker

logger = logging.getLogger("celeriac.worker")


def pool_capacity(size: int, autoscaler: Autoscaler | None = None) -> int:
    """The most slots a pool can reach: what its shared boards are made for.

    The boards are made once, before the first fork, so that every child, early or
    late, shares the same ones; a board made later would be invisible to the children
    already running. So they are made generous: the autoscale maximum, and room to grow
    to four times the start size or 64 slots by hand. An unused slot costs address
    space only (its pages are never touched).
    """
    high = autoscaler.max_concurrency if autoscaler is not None else 0
    return max(high, size * 4, 64)


class Pool:
    """Start consumers, stop them warm or cold, say when they are all gone.

    The size API (``grow``, ``shrink``, ``autoscale``, ``size``, ``info``,
    ``autoscaler_info``) is safe to call from any thread: it changes the target, and
    ``supervise`` (the worker's main thread) brings the pool to it.
    """

    name = "base"
    #: whether the number of slots can change (solo and asyncio run one consumer)
    resizable = False

    def __init__(self, worker: Worker, size: int = 1,
                 autoscaler: Autoscaler | None = None) -> None:
        self.worker = worker
        self.stop = threading.Event()
        #: a consumer died of a bug; the worker exits non-zero
        self.failed = False
        self.autoscaler = autoscaler
        #: the number of slots the pool has, or is starting, once supervised
        self.target = max(1, size)
        if autoscaler is not None:
            self.target = min(autoscaler.max_concurrency, max(autoscaler.floor, self.target))
        self.capacity = pool_capacity(self.target, autoscaler)
        #: every slot's idle flag, sized for the capacity (made before any fork)
        self.siblings = Siblings(self.capacity)
        self.counters = TaskCounters(self.capacity)  # active/processed, for heartbeats
        self._resize_lock = threading.Lock()
        self._broker: Broker | None = None
        self._next_check = 0.0
        self._busy_seen: set[int] = set()
        self._scale_outage = OutageLog(logger, "broker (autoscaler)", level=logging.WARNING)

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

    # -- size -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The number of slots (those being started or replaced included; those told to
        finish and stop not)."""
        return self.target

    def grow(self, n: int = 1) -> None:
        """Add ``n`` slots (at the supervisor's next tick, within 0.1 s).

        On an autoscaling pool a size above the maximum raises the maximum, as Celery's
        ``pool_grow`` does, so the autoscaler does not undo it at once.

        Raises:
            ValueError: ``n`` is not a positive integer, the pool would pass its
                capacity, or this pool cannot change size (solo, asyncio).
        """
        n = _positive(n, "grow")
        with self._resize_lock:
            self._check_resizable("grow")
            if self.target + n > self.capacity:
                raise ValueError(f"cannot grow the pool to {self.target + n} slots: it was "
                                 f"made for at most {self.capacity} (start it with a "
                                 "larger -c or --autoscale maximum)")
            self.target += n
            if self.autoscaler is not None:
                if self.target > self.autoscaler.max_concurrency:
                    self.autoscaler.max_concurrency = self.target
                self.autoscaler.note_resized(time.monotonic())
            size = self.target
        logger.info("Pool grows by %d to %d slot(s)", n, size)

    def shrink(self, n: int = 1) -> None:
        """Retire ``n`` slots, never going below one: idle ones first, and a busy one
        finishes its task before it stops. Its slot is not refilled.

        On an autoscaling pool a size below the minimum lowers the minimum.

        Raises:
            ValueError: ``n`` is not a positive integer, the pool has one slot left, or
                this pool cannot change size (solo, asyncio).
        """
        n = _positive(n, "shrink")
        with self._resize_lock:
            self._check_resizable("shrink")
            if self.target <= 1:
                raise ValueError("cannot shrink the pool below one slot")
            retired = min(n, self.target - 1)
            self.target -= retired
            if self.autoscaler is not None:
                if self.autoscaler.min_concurrency > self.target:
                    self.autoscaler.min_concurrency = self.target
                self.autoscaler.note_resized(time.monotonic())
            size = self.target
        logger.info("Pool shrinks by %d to %d slot(s)", retired, size)

    def autoscale(self, max: int | None, min: int | None = None) -> tuple[int, int]:
        """Set the autoscale bounds (starting the autoscaler if it was off); the size is
        brought within them at once. Returns the new ``(max, min)``.

        A bound given as None stays as it was (as in Celery's ``autoscale`` command); a
        pool that did not autoscale yet takes its size as the missing maximum and 0 as
        the missing minimum.

        Raises:
            ValueError: bounds out of order or not whole numbers, a maximum above the
                pool's capacity, or this pool cannot change size (solo, asyncio).
        """
        with self._resize_lock:
            self._check_resizable("autoscale")
            scaler = self.autoscaler
            high = _whole(max, "max") if max is not None else (
                scaler.max_concurrency if scaler is not None else self.target)
            low = _whole(min, "min") if min is not None else (
                scaler.min_concurrency if scaler is not None else 0)
            if high > self.capacity:
                raise ValueError(f"cannot autoscale up to {high} slots: the pool was made "
                                 f"for at most {self.capacity}")
            if scaler is None:
                try:
                    scaler = autoscaler_class(self.worker.app.conf.worker_autoscaler)(high, low)
                except ImproperlyConfigured as exc:
                    raise ValueError(str(exc)) from exc
            bounds = scaler.update(high, low)
            self.autoscaler = scaler
            self.target = _clamp(self.target, scaler.floor, high)
            scaler.note_resized(time.monotonic())
        logger.info("Autoscale bounds: max %d, min %d", *bounds)
        return bounds

    def info(self) -> dict[str, Any]:
        """This pool as Celery's ``inspect stats()["pool"]`` describes one."""
        return {"implementation": f"{type(self).__module__}:{type(self).__qualname__}",
                "max-concurrency": self.size}

    def autoscaler_info(self) -> dict[str, Any] | None:
        """``{"max", "min", "current", "qty"}`` as Celery's autoscaler reports; None
        when the pool does not autoscale."""
        scaler = self.autoscaler
        return None if scaler is None else scaler.info(self.size)

    def _check_resizable(self, what: str) -> None:
        if not self.resizable:
            raise ValueError(f"the {self.name} pool runs one consumer; it cannot {what} "
                             "(use -P prefork or -P threads)")

    # -- autoscaling (from supervise) ---------------------------------------------------------
    def _active_slots(self) -> list[int]:
        """The places on the siblings board of the slots that are not retiring."""
        raise NotImplementedError

    def _parent_broker(self) -> Broker:
        if self._broker is None:
            self._broker = self.worker.app.connect_broker()
        return self._broker

    def _scale(self) -> None:
        """Watch the slots' idle flags at every tick; once a second, let the autoscaler
        decide from them (and from the broker, only when every slot worked)."""
        scaler = self.autoscaler
        if scaler is None or self.stop.is_set():
            return
        active = self._active_slots()
        siblings = self.siblings
        self._busy_seen.update(i for i in active if not siblings.idle(i))
        now = time.monotonic()
        if now < self._next_check:
            return
        first = not self._next_check
        self._next_check = now + CHECK_INTERVAL
        idle = sum(1 for i in active if i not in self._busy_seen)
        self._busy_seen.clear()
        if first:  # one look is no second's worth of watching
            return
        waiting = 0
        if not idle:
            try:
                broker = self._parent_broker()
                waiting = sum(broker.size(q) for q in self.worker.queues)
                self._scale_outage.recovered()
            except Exception as exc:
                self._scale_outage.failed(exc, "not scaling meanwhile")
                return
        with self._resize_lock:
            if self.autoscaler is not scaler:
                return
            before = self.target
            change = scaler.decide(now, before, idle, waiting)
            self.target = _clamp(before + change, 1, self.capacity)
            after = self.target
        if after > before:
            logger.info("Scaling up %d slot(s) to %d: %d message(s) waiting, none idle",
                        after - before, after, waiting)
        elif after < before:
            logger.info("Scaling down %d slot(s) to %d: %d idle", before - after, after, idle)


class _ThreadSlot:
    """One consumer thread of a threads pool, with a stop event of its own (retiring
    one slot must not stop the others)."""

    __slots__ = ("index", "consumer", "thread", "stop", "retired")

    def __init__(self, index: int, consumer: Consumer, thread: threading.Thread,
                 stop: threading.Event) -> None:
        self.index = index
        self.consumer = consumer
        self.thread = thread
        self.stop = stop
        self.retired = False


class ThreadedPool(Pool):
    """Consumers on threads of the worker process (threads; solo and asyncio below)."""

    name = "threads"
    resizable = True

    def __init__(self, worker: Worker, consumers: int, async_limit: int,
                 autoscaler: Autoscaler | None = None) -> None:
        super().__init__(worker, consumers, autoscaler)
        self.async_limit = async_limit
        self.slots: list[_ThreadSlot] = []
        self._heartbeat: Heartbeat | None = None
        self._loop = EventLoopThread()
        self._grow_after = 0.0

    @property
    def threads(self) -> list[threading.Thread]:
        return [slot.thread for slot in self.slots]

    @property
    def consumers(self) -> list[Consumer]:
        return [slot.consumer for slot in self.slots]

    def start(self) -> None:
        self._heartbeat = Heartbeat(self.worker.app.conf.worker_heartbeat_interval,
                                    self.worker.app)
        # Consumers connect before the heartbeat starts, as they always have: the first
        # beat then finds them all.
        new = [self._new_slot(i) for i in range(self.target)]
        self._heartbeat.start()
        for slot in new:
            slot.thread.start()

    def _new_slot(self, index: int) -> _ThreadSlot:
        w = self.worker
        assert self._heartbeat is not None
        stop = threading.Event()
        consumer = Consumer(w.app, w.queues, w.hostname, w.prefetch, self.async_limit,
                            stop, self._heartbeat, self._loop, max_tasks=None,
                            rate_share=1.0 / self.target, siblings=self.siblings,
                            index=index, counters=self.counters)
        thread = threading.Thread(target=self._run, args=(consumer,),
                                  name=f"celeriac-{self.name}-{index}", daemon=True)
        slot = _ThreadSlot(index, consumer, thread, stop)
        self.slots.append(slot)
        return slot

    def _run(self, consumer: Consumer) -> None:
        try:
            consumer.run()
        except Exception:
            logger.exception("consumer crashed; stopping the worker")
            self.failed = True
            self._stop_all()

    def _stop_all(self) -> None:
        self.stop.set()
        for slot in list(self.slots):
            slot.stop.set()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def supervise(self) -> None:
        self._scale()
        self._reconcile()

    def _active_slots(self) -> list[int]:
        return [slot.index for slot in self.slots if not slot.retired]

    def _reconcile(self) -> None:
        # A retired thread that finished frees its place on the siblings board.
        self.slots = [s for s in self.slots if not (s.retired and not s.thread.is_alive())]
        if self.stop.is_set() or self._heartbeat is None:
            return
        live = [s for s in self.slots if not s.retired]
        missing = self.target - len(live)
        if missing > 0 and time.monotonic() >= self._grow_after:
            used = {s.index for s in self.slots}
            free = (i for i in range(self.capacity) if i not in used)
            for index, _ in zip(free, range(missing)):
                try:
                    slot = self._new_slot(index)
                except Exception as exc:  # the broker is down: try again in a second
                    logger.warning("could not start a consumer thread yet: %r", exc)
                    self._grow_after = time.monotonic() + 1.0
                    break
                slot.thread.start()
        elif missing < 0:
            # Idle ones first, the newest first; a busy one finishes its task.
            live.sort(key=lambda s: (not self.siblings.idle(s.index), -s.index))
            for slot in live[:-missing]:
                slot.retired = True
                slot.stop.set()
        share = 1.0 / self.target
        for slot in self.slots:
            if not slot.retired:
                slot.consumer.rate_limits.share = share

    def warm_stop(self) -> None:
        self._stop_all()

    def cold_stop(self) -> None:
        # Threads cannot be killed; hand their unacked messages back and leave.
        self._stop_all()
        for consumer in self.consumers:
            try:
                if consumer.liveness is not None:
                    report_released(self.worker.app, consumer.broker,
                                    consumer.liveness.forget_consumer(), "this worker")
            except Exception as exc:
                logger.warning("could not return messages: %r", exc)
        os._exit(1)

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["threads"] = sum(1 for s in self.slots if not s.retired and s.thread.is_alive())
        return info


class SoloPool(ThreadedPool):
    """One consumer in the worker process."""

    name = "solo"
    resizable = False

    def __init__(self, worker: Worker, async_limit: int) -> None:
        super().__init__(worker, 1, async_limit)

    def info(self) -> dict[str, Any]:
        conf = self.worker.app.conf
        return {"implementation": f"{type(self).__module__}:{type(self).__qualname__}",
                "max-concurrency": 1, "processes": [os.getpid()],
                "max-tasks-per-child": "N/A", "put-guarded-by-semaphore": False,
                "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0]}


class AsyncioPool(ThreadedPool):
    """One consumer whose ``async def`` tasks run ``limit`` at a time on one loop."""

    name = "asyncio"
    resizable = False

    def __init__(self, worker: Worker, limit: int) -> None:
        super().__init__(worker, 1, limit)

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["max-concurrency"] = self.async_limit
        return info


class GreenPool(ThreadedPool):
    """``gevent`` / ``eventlet``: one consumer whose tasks run on greenlets, ``-c`` at
    once (celeriac/worker/green.py). Its thread is a greenlet: the process is patched."""

    resizable = False

    def __init__(self, worker: Worker, name: str) -> None:
        from .green import green_library

        self.green = green_library(name)
        super().__init__(worker, 1, worker.async_limit)
        self.name = name

    def _new_slot(self, index: int) -> _ThreadSlot:
        from .green import GreenConsumer

        w = self.worker
        assert self._heartbeat is not None
        stop = threading.Event()
        consumer = GreenConsumer(w.app, w.queues, w.hostname, w.concurrency * w.prefetch,
                                 self.async_limit, stop, self._heartbeat, self._loop,
                                 green=self.green, concurrency=w.concurrency,
                                 counters=self.counters)
        thread = threading.Thread(target=self._run, args=(consumer,),
                                  name=f"celeriac-{self.name}", daemon=True)
        slot = _ThreadSlot(index, consumer, thread, stop)
        self.slots.append(slot)
        return slot

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["max-concurrency"] = self.worker.concurrency
        return info


_SIZE = struct.Struct("=I")


class PreforkPool(Pool):
    name = "prefork"
    resizable = True

    def __init__(self, worker: Worker, processes: int,
                 autoscaler: Autoscaler | None = None) -> None:
        super().__init__(worker, processes, autoscaler)
        self.children: dict[int, tuple[int, str]] = {}  # pid -> (slot, consumer id)
        self.started: dict[int, float] = {}  # pid -> when it was forked
        #: children told to finish and stop by a shrink; their slots are not refilled
        self.retired: set[int] = set()
        self.stopping = False
        self.board = shared_board(self.capacity)
        self.slots = [RunningSlot(self.board, i) for i in range(self.capacity)]
        # The pool's size, shared with the children: each takes 1/size of a rate limit,
        # and reads it again as the pool grows or shrinks, so the worker as a whole
        # keeps to the limit whatever its size (a share fixed at fork time would let a
        # pool grown from 1 to 4 run at 1 + 3/4 of it).
        self._size_board = mmap.mmap(-1, _SIZE.size)
        self._grow_after = 0.0
        # what remote control sees of the children and changes in them
        self.control_board = ControlBoard(len(self.slots))
        self.timed_out: set[int] = set()  # pids killed for overrunning a hard limit
        self.terminated: dict[int, str] = {}  # pid -> signal, for revoke(terminate=True)
        self._revocations: Revocations | None = None
        self.beat_interval = float(worker.app.conf.worker_heartbeat_interval)
        self.outage = OutageLog(logger, "broker (pool supervisor)", level=logging.WARNING)
        self._next_beat = 0.0

    def start(self) -> None:
        self._reconcile()

    def _spawn(self, slot: int) -> None:
        consumer_id = new_consumer_id() + f"-{slot}"
        self.slots[slot].clear()
        self.siblings.set_idle(slot, False)
        signals.worker_before_create_process.send(sender=self)
        # Stop signals wait while the fork is made: one that reached the child before it
        # installed its own handlers would be lost (CPython clears signals caught during
        # the fork) or run the parent's handler there, and the child would never stop.
        # Blocked, it stays pending until the child's handler is in place.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = self._child(slot, consumer_id, mask)
                finally:
                    os._exit(code)
            self.children[pid] = (slot, consumer_id)
            self.started[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _child(self, slot: int, consumer_id: str, mask: set[int | signal.Signals]) -> int:
        multiprocessing.current_process().name = f"ForkPoolWorker-{slot + 1}"
        multiprocessing.current_process().index = slot  # type: ignore[attr-defined]
        stop = threading.Event()
        parent = os.getppid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
        _stop_on_sigterm(stop)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # see _spawn
        if self.stopping:
            # The parent's shutdown began between its decision to fork this child and
            # the fork: it is not wanted.
            stop.set()
        _term_with_parent()
        w = self.worker
        try:
            signals.worker_process_init.send(sender=None)
            heartbeat = Heartbeat(w.app.conf.worker_heartbeat_interval, w.app)
            consumer = Consumer(w.app, w.queues, w.hostname, w.prefetch, w.async_limit, stop,
                                heartbeat, EventLoopThread(), max_tasks=w.max_tasks_per_child,
                                consumer_id=consumer_id, slot=self.slots[slot],
                                max_memory_kib=w.app.conf.worker_max_memory_per_child,
                                rate_share=self._rate_share(), siblings=self.siblings,
                                index=slot, counters=self.counters)
            heartbeat.on_tick.append(lambda: _watch_parent(parent, stop, self.slots[slot]))
            heartbeat.on_tick.append(lambda: setattr(consumer.rate_limits, "share",
                                                     self._rate_share()))
            reporter = Reporter(self.control_board, slot, lambda: consumer_report(consumer),
                                lambda orders: apply_orders(consumer, orders), stop)
            reporter.apply_orders()  # what remote control changed before this child
            consumer.orders_check = reporter.apply_orders
            reporter.start()
            heartbeat.start()
            consumer.run()
            return 0
        except Exception:
            logger.exception("pool process crashed")
            return 1
        finally:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def _rate_share(self) -> float:
        (size,) = _SIZE.unpack_from(self._size_board)
        return 1.0 / max(1, size)

    def supervise(self) -> None:
        self._reap()
        self._scale()
        self._reconcile()
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
            self.siblings.set_idle(slot, False)  # killed while idle, its flag stayed up
            self._release(consumer_id, lost, drop)
            retired = pid in self.retired
            self.retired.discard(pid)
            if not self.stopping and not retired and code != 0 and (
                    time.monotonic() - self.started.get(pid, 0) < 1.0):
                # It died at once: do not fork its replacement in a tight loop.
                time.sleep(1.0)
            self.started.pop(pid, None)
            if not retired:
                # Replaced at once, in the slot it left (its record was just read).
                self._reconcile(prefer=slot)

    def _active_slots(self) -> list[int]:
        return [slot for pid, (slot, _) in self.children.items() if pid not in self.retired]

    def _reconcile(self, prefer: int | None = None) -> None:
        """Fork what the target misses; retire what it has too many of."""
        if self.stopping:
            return
        _SIZE.pack_into(self._size_board, 0, self.target)
        live = [(pid, slot) for pid, (slot, _) in self.children.items()
                if pid not in self.retired]
        missing = self.target - len(live)
        if missing > 0 and time.monotonic() >= self._grow_after:
            used = {slot for slot, _ in self.children.values()}
            free = [i for i in range(self.capacity) if i not in used]
            if prefer in free:
                free.remove(prefer)
                free.insert(0, prefer)
            for slot in free[:missing]:
                try:
                    self._spawn(slot)
                except OSError as exc:  # out of processes or memory: try again later
                    logger.error("could not fork a pool process: %r", exc)
                    self._grow_after = time.monotonic() + 1.0
                    break
        elif missing < 0:
            # Idle ones first, the newest slots first. SIGTERM to a child is "finish
            # and stop": a busy one ends its task and gives back what it prefetched.
            live.sort(key=lambda entry: (not self._idle(entry[1]), -entry[1]))
            for pid, slot in live[:-missing]:
                self.retired.add(pid)
                _kill(pid, signal.SIGTERM)

    def _idle(self, slot: int) -> bool:
        return self.siblings.idle(slot) and self.slots[slot].read() is None

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
        end = TaskEnd(app, self.worker.hostname, events=self.worker.events)
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

    def info(self) -> dict[str, Any]:
        conf = self.worker.app.conf
        info = super().info()
        info.update({
            "processes": sorted(pid for pid in self.children if pid not in self.retired),
            "max-tasks-per-child": self.worker.max_tasks_per_child or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0],
            # Celery's parent writes each task to a child's pipe; celeriac's children
            # fetch their own, so there are no writes to count.
            "writes": {"total": 0, "avg": "0.00", "all": "", "raw": "", "strategy": "fair",
                       "inqueues": {"total": 0, "active": 0}},
        })
        return info

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


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def _positive(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what}: expected a positive whole number of slots, got {n!r}")
    return n


def _whole(n: Any, what: str) -> int:
    # A remote control request may carry the number as text ("10").
    if isinstance(n, str) and n.strip().isdigit():
        return int(n)
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"autoscale {what}: expected a whole number, got {n!r}")
    return n


def _clamp(value: int, low: int, high: int) -> int:
    return low if value < low else high if value > high else value


def _term_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # elsewhere, _watch_parent notices within a heartbeat tick


def _stop_on_sigterm(stop: threading.Event) -> None:
    """SIGTERM sets ``stop``, from a thread of its own rather than from a Python signal
    handler: a handler runs between two bytecodes of the main thread, which may be
    inside ``stop``'s own lock (in ``wait`` or in a first handler's ``set``) at that
    moment, and calling ``set`` there deadlocks the process. The C-level handler writes
    the signal's number to a pipe (``set_wakeup_fd``); the thread reads it."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the Python level has nothing to do

    def watch() -> None:
        while True:
            try:
                received = os.read(read_fd, 64)
            except InterruptedError:
                continue
            if not received:
                return
            if signal.SIGTERM in received:
                stop.set()

    threading.Thread(target=watch, name="celeriac-sigterm", daemon=True).start()


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
    autoscaler = getattr(worker, "autoscaler", None)
    if name == "prefork":
        return PreforkPool(worker, worker.concurrency, autoscaler)
    if name == "threads":
        return ThreadedPool(worker, worker.concurrency, worker.async_limit, autoscaler)
    if name == "solo":
        return SoloPool(worker, worker.async_limit)
    if name == "asyncio":
        return AsyncioPool(worker, worker.concurrency)
    if name in ("gevent", "eventlet"):
        return GreenPool(worker, name)
    raise ValueError(f"unknown pool {name!r}; choose one of: {', '.join(POOLS)}")


POOLS = ("prefork", "threads", "solo", "asyncio", "gevent", "eventlet")
#: the pools whose size can change (``--autoscale``, ``grow``, ``shrink``)
RESIZABLE_POOLS = ("prefork", "threads")
