"""The consumer: fetch a batch, check each message, run it, store, ack.

One consumer owns one broker connection and one consumer id. Every pool is made of
consumers: prefork runs one per child process, threads one per thread, solo and asyncio
one in the worker process. Synchronous tasks run on the consumer's thread; ``async def``
tasks run on the process's event loop, many at once, while the consumer keeps fetching.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import messages, serialization, signals, states
from ..brokers import (
    DeadLetters,
    DelayedDelivery,
    Delivery,
    Liveness,
    RateReservations,
    Redeliveries,
    capability,
    require,
)
from ..brokers.base import poison_reason
from ..events import EventDispatcher
from ..events.event import short_repr
from ..exceptions import (
    ContentDisallowed,
    DecodeError,
    InvalidTaskError,
    NotRegistered,
    TimeLimitExceeded,
    WorkerLostError,
)
from ..messages import MalformedMessage, TaskMessage
from ..utils.outage import OutageLog
from ..utils.urls import mask_password
from .execute import Execution, Outcome, is_async, request_from_message
from .heartbeat import Heartbeat
from .ratelimit import LocalLimits, parse_rate
from .revocations import Revocations
from .siblings import Siblings
from .timelimits import RunningSlot, chord_context, enforce, limits_for

if TYPE_CHECKING:
    from ..app import Celery
    from .counters import TaskCounters

logger = logging.getLogger("celeriac.worker")


class EventLoopThread:
    """An asyncio loop on a daemon thread, started on first use, one per process."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="celeriac-asyncio",
                                 daemon=True).start()
                self.loop = loop
            return self.loop


# Rate-limited messages one consumer holds at most before it stops fetching.
MAX_WAITING = 100


class Consumer:
    """Fetches and runs messages from ``queues`` until ``stop`` is set.

    Args:
        app: the app whose tasks are run.
        queues: queue names, in the order they are served.
        hostname: the worker's node name, shown in ``request.hostname``.
        prefetch: messages fetched per round trip (not yet started).
        async_limit: ``async def`` tasks allowed in flight at once.
        max_tasks: exit after this many tasks (``--max-tasks-per-child``).
        counters: the pool's shared task counters, this consumer's at ``index``
            (what the worker's heartbeat events report as active and processed).
    """

    def __init__(self, app: Celery, queues: Sequence[str], hostname: str, prefetch: int,
                 async_limit: int, stop: threading.Event, heartbeat: Heartbeat,
                 loop: EventLoopThread, max_tasks: int | None = None,
                 consumer_id: str | None = None, fetch_timeout: float = 0.25,
                 slot: RunningSlot | None = None, max_memory_kib: int | None = None,
                 rate_share: float = 1.0, siblings: Siblings | None = None,
                 index: int = 0, counters: TaskCounters | None = None) -> None:
        self.app = app
        #: the idle flags of this worker's consumers, and this one's place among them
        self.siblings = siblings if siblings is not None and siblings.count > 1 else None
        self.index = index
        #: shared with a prefork parent, which enforces hard limits through it
        self.slot = slot
        # how long an idle fetch blocks: bounds how late a stop request is noticed
        self.fetch_timeout = fetch_timeout
        self.queues = list(queues)
        self.hostname = hostname
        self.prefetch = max(1, prefetch)
        self.async_limit = max(1, async_limit)
        self.stop = stop
        self.heartbeat = heartbeat
        self.loop = loop
        self.max_tasks = max_tasks
        self.execution = Execution(app, hostname, stop)
        conf = app.conf
        self.accept = serialization.accepted_content_types(conf.accept_content)
        self.acks_late_default = bool(conf.task_acks_late)
        self.acks_on_failure_default = conf.task_acks_on_failure_or_timeout is not False
        self.rate_limits_disabled = bool(conf.worker_disable_rate_limits)
        self.default_rate_limit = conf.task_default_rate_limit
        self.deduplicate = bool(conf.worker_deduplicate_successful_tasks)
        self.broker = app.connect_broker()
        # What this worker needs of its transport beyond the core, asked once: an
        # unknown capability is a clear error at start-up, not a failure per task.
        self.delayed = require(self.broker, DelayedDelivery, "hold eta tasks until due")
        self.dead = require(self.broker, DeadLetters, "set aside messages that cannot run")
        self.liveness = capability(self.broker, Liveness)
        self.rates = capability(self.broker, RateReservations)
        self.redeliveries = capability(self.broker, Redeliveries)
        if self.rates is None:
            limited = sorted(name for name, task in app.tasks.items()
                             if getattr(task, "global_rate_limit", None))
            if limited:
                require(self.broker, RateReservations,
                        f"hold the global rate limits of {', '.join(limited)}")
        #: task events (-E), batched; remote control's enable_events/disable_events
        #: switch ``events.enabled``
        self.events = EventDispatcher(app, hostname, enabled=bool(conf.worker_send_task_events),
                                      broker=self.broker, buffer_group=("task",),
                                      # on the consumer's connection: its outage is told
                                      outage_level=logging.DEBUG)
        self.execution.end.events = self.events
        self.counters = counters
        if counters is not None:
            counters.reset_running(index)
        if consumer_id:
            self.broker.consumer_id = consumer_id
        self.done = 0
        #: ``worker_max_memory_per_child`` in KiB: a pool process past it retires
        self.max_memory_kib = max_memory_kib
        self.retiring = False
        self.revocations = Revocations(self.broker)
        # Rate-limited messages waiting for their start time: (start, seq, delivery).
        # They stay owned by this consumer in the broker and take no pool slot.
        self.rate_limits = LocalLimits(rate_share)
        self._waiting: list[tuple[float, int, Delivery]] = []
        self._waiting_seq = 0
        # Fetched, not started; the heartbeat thread may hand them back (fair dispatch).
        self._pending: deque[Delivery] = deque()
        self._pending_lock = threading.Lock()
        # Messages whose ack/requeue/defer/dead-letter call failed (the broker went
        # away): each is said again, in order, before anything else is fetched, so none
        # stays owned by this consumer with nobody to settle it.
        self._unsettled: deque[tuple[str, Delivery, Any]] = deque()
        self._unsettled_lock = threading.Lock()
        self._running_since: float | None = None
        self.release_after = float(app.conf.worker_prefetch_release_after or 0)
        self._trouble_pause = 0.0
        self.outage = OutageLog(logger, "broker", mask_password(self.broker.url))
        self._async_inflight = 0
        self._async_cond = threading.Condition()
        # What remote control shows (inspect active/stats): the tasks running now
        # (several in the green pools and for async def tasks) by id, as (message,
        # delivery, started, acked), and how many tasks of each name ended.
        self.running: dict[str, tuple[TaskMessage, Delivery, float, bool]] = {}
        self.totals: Counter[str] = Counter()
        #: set by remote control when a rate limit changed (see _replan_waiting)
        self.rates_changed = False
        #: in a pool process: takes in remote control's latest orders (cheap when none)
        self.orders_check: Callable[[], None] | None = None

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.heartbeat.add(self.broker)
        self.heartbeat.watch(self)
        try:
            while not self.stop.is_set() and not self.retiring:
                if self.max_tasks and self.done >= self.max_tasks:
                    break
                self._wait_for_async_room()
                try:
                    self._consume_once()
                except Exception as exc:  # the broker went away: wait and carry on
                    self._broker_trouble(exc)
            self._drain_async()
            self._leave()
        finally:
            self._set_idle(False)
            self.heartbeat.unwatch(self)
            self.heartbeat.remove(self.broker)
            try:
                if self.liveness is not None:
                    self.liveness.forget_consumer()
            except Exception as exc:
                logger.warning("could not deregister consumer: %r", exc)
            self.events.close()
            self.broker.close()

    def _leave(self) -> None:
        """Settle what is left before stopping; a broker still down gets a few tries."""
        with self._pending_lock:
            self._pending.extend(d for _, _, d in sorted(self._waiting))
        self._waiting.clear()
        for attempt in range(5):
            try:
                self._settle_leftovers()
                self._give_back()
                return
            except Exception as exc:
                logger.warning("could not settle messages before stopping: %r", exc)
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
        # Still owned by this consumer in the broker: its heartbeat stops with it, so
        # a live worker hands them back after worker_lost_timeout.
        logger.error("stopping with %d message(s) unsettled; other workers will take "
                     "them over once this one's heartbeat expires",
                     len(self._pending) + len(self._unsettled))

    def _consume_once(self) -> None:
        self._settle_leftovers()
        if self.rates_changed:
            self._replan_waiting()
        if self._pending:
            # Left over from a batch interrupted by a broker error: put back first.
            # (After an outage they may have been handed to another worker meanwhile;
            # giving back only touches messages this consumer still owns.)
            self._give_back()
        timeout = self.fetch_timeout
        if self._waiting:
            self._run_due_waiting()
            if self._waiting and len(self._waiting) >= MAX_WAITING:
                # Enough held already: wait for the first to be due instead of fetching.
                self.stop.wait(max(0.0, self._waiting[0][0] - time.time()))
                return
            elif self._waiting:
                timeout = min(timeout, max(0.0, self._waiting[0][0] - time.time()))
        limit = self.prefetch
        if self.max_tasks:
            limit = min(limit, self.max_tasks - self.done)
        self._set_idle(True)
        if self.siblings is not None and self.siblings.others_idle(self.index):
            # Idle siblings take the rest: never hold a message back from them.
            limit = 1
        batch = self.broker.fetch(self.queues, limit, timeout=timeout)
        # Held before anything else can fail: a broker error below (reading the
        # revocations) must not drop a batch the broker now counts as this
        # consumer's; the next round gives it back.
        with self._pending_lock:
            self._pending.extend(batch)
        if batch:
            if self.orders_check is not None:
                # A change remote control made before these messages were sent (a
                # rate limit, task events on) applies to them: it was written first.
                self.orders_check()
                if self.rates_changed:
                    self._replan_waiting()  # held ones run in turn with this batch
            self._set_idle(False)
            self.revocations.refresh()
        while True:
            with self._pending_lock:
                if not self._pending:
                    break
                if self.stop.is_set():
                    break
                delivery = self._pending.popleft()
                self._running_since = time.monotonic()
            try:
                self._dispatch(delivery)
            finally:
                self._running_since = None
            if self.max_memory_kib and resident_kib() > self.max_memory_kib:
                logger.warning("Pool process uses %d KiB, over worker_max_memory_per_child "
                               "(%d KiB): replacing it after this task", resident_kib(),
                               self.max_memory_kib)
                self.retiring = True
                break
        if self._pending:
            self._give_back()
        self._outage_over()

    def _set_idle(self, idle: bool) -> None:
        if self.siblings is not None:
            self.siblings.set_idle(self.index, idle)

    # -- settling messages --------------------------------------------------------------
    def _settle_message(self, how: str, delivery: Delivery, arg: Any = None) -> None:
        """Ack, requeue, defer or dead-letter one message; kept to say again on failure."""
        try:
            self._apply(how, delivery, arg)
        except Exception:
            with self._unsettled_lock:
                self._unsettled.append((how, delivery, arg))
            raise

    def _apply(self, how: str, delivery: Delivery, arg: Any) -> None:
        broker = self.broker
        if how == "ack":
            broker.ack([delivery])
        elif how == "requeue":
            broker.requeue([delivery])
        elif how == "defer":
            self.delayed.defer(delivery, arg)
        else:
            self.dead.dead_letter(delivery, arg)

    def _settle_leftovers(self) -> None:
        # Every call here is safe to repeat: it touches only messages still owned.
        while True:
            with self._unsettled_lock:
                if not self._unsettled:
                    return
                how, delivery, arg = self._unsettled[0]
            self._apply(how, delivery, arg)
            with self._unsettled_lock:
                self._unsettled.popleft()

    def _run_due_waiting(self) -> None:
        while self._waiting and self._waiting[0][0] <= time.time() and not self.stop.is_set():
            _, _, delivery = heapq.heappop(self._waiting)
            self._running_since = time.monotonic()
            try:
                self._dispatch(delivery, rate_checked=True)
            finally:
                self._running_since = None

    def _replan_waiting(self) -> None:
        """A rate limit changed at runtime (remote control): the messages held for
        their turn take a new one under the new limit (given back to the queue when no
        batch is at hand)."""
        self.rates_changed = False
        self.rate_limits = LocalLimits(self.rate_limits.share)
        held = [delivery for _, _, delivery in sorted(self._waiting)]
        self._waiting.clear()
        with self._pending_lock:
            self._pending.extendleft(reversed(held))

    def _hold_for_rate(self, task: Any, delivery: Delivery) -> bool:
        """Reserve the task's next start; hold the message if that is not now."""
        now = time.time()
        start = self.rate_limits.reserve(task.name, task.rate_limit or self.default_rate_limit,
                                         now)
        global_limit = getattr(task, "global_rate_limit", None)
        if global_limit:
            rate = parse_rate(global_limit)
            if rate:
                if self.rates is None:
                    require(self.broker, RateReservations, "hold a global rate limit")
                else:
                    start = max(start, self.rates.reserve_rate(task.name, 1.0 / rate))
        if start <= now + 0.001:
            return False
        self._waiting_seq += 1
        heapq.heappush(self._waiting, (start, self._waiting_seq, delivery))
        return True

    def _give_back(self) -> None:
        with self._pending_lock:
            waiting = list(self._pending)
            self._pending.clear()
        if not waiting:
            return
        try:
            self.broker.requeue(waiting)
        except Exception:
            # Not given back: keep them, in front of anything fetched meanwhile, so the
            # next attempt (or the consumer's exit) settles them.
            with self._pending_lock:
                self._pending.extendleft(reversed(waiting))
            raise

    def release_if_stuck(self) -> None:
        """Fair dispatch: the messages prefetched behind a running task go back to the
        queue when a sibling slot is idle, when the task runs longer than
        ``worker_prefetch_release_after``, or when this consumer is stopping."""
        since = self._running_since
        if since is None or not (self._pending or self.broker.holds_prefetched):
            return
        if not (self.stop.is_set()
                or (self.siblings is not None and self.siblings.others_idle(self.index))
                or (self.release_after and time.monotonic() - since >= self.release_after)):
            return
        try:
            self._give_back()
            # and what the broker pushed to this consumer meanwhile (RabbitMQ)
            self.broker.release_prefetched()
        except Exception as exc:  # the outage is told by the heartbeat's own log
            logger.debug("could not give back prefetched messages yet: %r", exc)

    def _broker_trouble(self, exc: Exception) -> None:
        self._trouble_pause = min(max(self._trouble_pause * 2, 0.1), 5.0)
        logger.debug("broker error", exc_info=True)  # the traceback, for -l DEBUG
        self.outage.failed(exc)
        self.stop.wait(self._trouble_pause)

    def _outage_over(self) -> None:
        if self._trouble_pause:
            self._trouble_pause = 0.0
            self.outage.recovered()

    def _wait_for_async_room(self) -> None:
        with self._async_cond:
            while self._async_inflight >= self.async_limit and not self.stop.is_set():
                self._async_cond.wait(0.5)

    def _drain_async(self) -> None:
        with self._async_cond:
            while self._async_inflight:
                self._async_cond.wait(0.5)

    # -- one message --------------------------------------------------------------------
    def _dispatch(self, delivery: Delivery, rate_checked: bool = False) -> None:
        """Handle one message taken from the batch or from the rate-limit wait.

        Here it runs to the end before the next is taken; the green pools override
        this to run it on a greenlet of its own (celeriac/worker/green.py).
        """
        self.handle(delivery, rate_checked=rate_checked)

    def _execute(self, task: Any, request: Any, hard: float | None,
                 soft: float | None) -> Outcome:
        """Run a synchronous task under its time limits (overridden by the green pools,
        whose limits are timeouts of their own greenlet)."""
        with enforce(hard, soft, hard_by_parent=self.slot is not None):
            return self.execution.run(task, request)

    def handle(self, delivery: Delivery, rate_checked: bool = False) -> None:
        msg = self._decode(delivery)
        if msg is None:
            return
        task = self.app.tasks.get(msg.name)
        if task is None:
            self._unknown(delivery, msg)
            return
        if self.redeliveries is not None and self._lost_before(delivery, msg, task):
            return
        # eta/expires/timelimit were checked and parsed once, by decode_task.
        eta = msg.eta_at
        if eta is not None and eta > datetime.now(timezone.utc):
            # A producer that puts eta tasks straight on the queue (Celery does):
            # park it in the broker's delayed set instead of holding it in memory.
            self._settle_message("defer", delivery, eta.timestamp())
            return
        expires = msg.expires_at
        if expires is not None and expires < datetime.now(timezone.utc):
            self._skip_revoked(delivery, msg, task, expired=True)
            return
        if msg.id in self.revocations.ids:
            self._skip_revoked(delivery, msg, task, expired=False)
            return
        if not rate_checked and not self.rate_limits_disabled and (
                task.rate_limit or self.default_rate_limit
                or getattr(task, "global_rate_limit", None)):
            if self._hold_for_rate(task, delivery):
                return
        request = request_from_message(msg, self.hostname)
        if signals.task_received.receivers:
            signals.task_received.send(sender=self, request=request)
        events = self.execution.end.events_for(task)
        if events is not None:
            self._send_received(events, msg, request)
        acks_late = task.acks_late if task.acks_late is not None else self.acks_late_default
        if acks_late and self.deduplicate and self._succeeded_already(task, msg):
            self._settle_message("ack", delivery)
            return
        if self.counters is not None:
            self.counters.started(self.index)
        # Counted as it starts, as Celery counts an accepted task: one whose result a
        # client has seen is in ``inspect stats`` already
        self.totals[msg.name] += 1
        hard, soft = limits_for(task, msg.timelimit, self.app.conf)
        if is_async(task):
            if not acks_late:
                self._ack_before_start(delivery)
            self.running[msg.id] = (msg, delivery, time.time(), not acks_late)
            self._start_async(task, request, delivery, acks_late, hard)
            return
        # An early ack reaches the broker before the task starts; its reply is read
        # after the task, so the task does not wait a round trip for it. (Before the
        # slot says the task runs: an ack that fails leaves the task unstarted.)
        acked = None if acks_late else self._ack_before_start(delivery, wait=False)
        self.running[msg.id] = (msg, delivery, time.time(), not acks_late)
        slot = self.slot
        if slot is not None:
            slot.start(msg.id, msg.name, delivery.tag, acks_late, hard,
                       chord_context(request) if request.chord else None)
        try:
            outcome = self._execute(task, request, hard, soft)
        finally:
            self.running.pop(msg.id, None)
            if acked is not None:
                try:
                    acked()
                except Exception as exc:  # said again before the next fetch
                    logger.warning("ack of %s not confirmed yet: %r", msg.id, exc)
                    with self._unsettled_lock:
                        self._unsettled.append(("ack", delivery, None))
                self.broker.finished([delivery])
        if slot is not None:
            slot.clear()
        self._settle(delivery, outcome, acks_late,
                     self._acks_on_failure(task))

    @staticmethod
    def _send_received(events: EventDispatcher, msg: TaskMessage, request: Any) -> None:
        headers = msg.headers
        args, kwargs = headers.get("argsrepr"), headers.get("kwargsrepr")
        events.send("task-received", uuid=msg.id, name=msg.name,
                    args=args if args is not None else short_repr(tuple(msg.args)),
                    kwargs=kwargs if kwargs is not None else short_repr(msg.kwargs),
                    root_id=request.root_id, parent_id=request.parent_id,
                    retries=request.retries, eta=headers.get("eta"),
                    expires=headers.get("expires"))

    def _lost_before(self, delivery: Delivery, msg: TaskMessage, task: Any) -> bool:
        """A message the broker gave again after its consumer was lost: counted, and set
        aside once it was lost ``broker_max_redeliveries`` times (a probable poison).
        True when it is not to run now.

        Only an acks_late task can have been running then: an early-acked one is acked
        before it starts, so a redelivery of it never ran and never counts.
        """
        acks_late = task.acks_late if task.acks_late is not None else self.acks_late_default
        if not acks_late:
            return False
        losses = self.redeliveries.losses(delivery)  # type: ignore[union-attr]
        if not losses:
            return False
        if self._ended_already(task, msg):
            self._settle_message("ack", delivery)
            return True
        if losses >= self.broker.max_redeliveries:
            reason = poison_reason(losses)
            logger.error("Task %s[%s] set aside in %r: %s", msg.name, msg.id,
                         self.broker.dead_letter_queue, reason)
            self._record_failure(msg.id, WorkerLostError(reason))
            self._settle_message("dead", delivery, reason)
            return True
        logger.warning("Task %s[%s] given again after its worker was lost (%d of %d "
                       "before it is set aside)", msg.name, msg.id, losses,
                       self.broker.max_redeliveries)
        return self.redeliveries.count_loss(delivery, losses)  # type: ignore[union-attr]

    def _ended_already(self, task: Any, msg: TaskMessage) -> bool:
        # A pool process that died mid-task had its end recorded by the pool (a time
        # limit, a terminate, reject_on_worker_lost=False): what a Redis or SQLite
        # broker would have dropped with its message, RabbitMQ gives again.
        meta = self._stored_meta(task, msg, "ended already")
        result = meta.get("result")
        exc_type = result.get("exc_type") if isinstance(result, dict) else None
        status = meta.get("status")
        ended = status == states.REVOKED or (status == states.FAILURE and exc_type in (
            "WorkerLostError", "TimeLimitExceeded"))
        return ended and self._not_again(msg, exc_type or status)

    def _succeeded_already(self, task: Any, msg: TaskMessage) -> bool:
        # worker_deduplicate_successful_tasks: an acks_late message comes back when the
        # worker that ran it was lost before its ack; if that run stored SUCCESS, it is
        # not run again. (Celery asks only of messages flagged redelivered; celeriac's
        # Redis and SQLite transports do not flag them, so every acks_late message costs
        # one result read when the setting is on.)
        status = self._stored_meta(task, msg, "already succeeded").get("status")
        return status == states.SUCCESS and self._not_again(msg, status)

    @staticmethod
    def _stored_meta(task: Any, msg: TaskMessage, what: str) -> dict[str, Any]:
        try:
            return task.backend.get_task_meta(msg.id)  # type: ignore[no-any-return]
        except Exception as exc:
            logger.warning("could not check whether %s %s: %r", msg.id, what, exc)
            return {}

    @staticmethod
    def _not_again(msg: TaskMessage, why: Any) -> bool:
        logger.info("Task %s[%s] ended already (%s); not run again", msg.name, msg.id, why)
        return True

    def _ack_before_start(self, delivery: Delivery, wait: bool = True) -> Any:
        """Ack a message whose task has not started; on failure it stays unstarted."""
        try:
            waiter = self.broker.ack_started([delivery])
            if not wait:
                return waiter
            waiter()
            return None
        except Exception:
            with self._pending_lock:  # given back with the rest once the broker answers
                self._pending.appendleft(delivery)
            raise

    def _acks_on_failure(self, task: Any) -> bool:
        own = getattr(task, "acks_on_failure_or_timeout", None)
        return self.acks_on_failure_default if own is None else bool(own)

    def _settle(self, delivery: Delivery, outcome: Outcome, acks_late: bool,
                acks_on_failure: bool = True) -> None:
        self.done += 1
        if self.counters is not None:
            self.counters.finished(self.index)
        if outcome.rejected and not acks_late:
            # As in Celery: the message was acked when the task started, so there is
            # nothing left to requeue or set aside.
            logger.warning("Task rejected (%r) after its message was acked; use acks_late "
                           "for Reject to requeue or set the message aside", outcome.value)
        elif outcome.rejected:
            if signals.task_rejected.receivers:
                signals.task_rejected.send(sender=self, message=delivery, exc=outcome.value)
            if outcome.requeue:
                self._settle_message("requeue", delivery)
            else:
                self._settle_message("dead", delivery,
                                     f"rejected by the task: {outcome.value!r}")
            return
        if not acks_late:
            return
        if not outcome.recorded:
            # Its result could not be stored (the result store stayed down): run it
            # again later rather than lose what it did.
            logger.error("Task %s: result not stored; its message goes back to the queue",
                         outcome.task_id)
            self._settle_message("requeue", delivery)
        elif outcome.state == states.FAILURE and not acks_on_failure:
            self._settle_message("dead", delivery, "the task failed and "
                                 "acks_on_failure_or_timeout is off")
        else:
            self._settle_message("ack", delivery)

    def _start_async(self, task: Any, request: Any, delivery: Delivery, acks_late: bool,
                     hard: float | None) -> None:
        with self._async_cond:
            self._async_inflight += 1

        def finished(future: Any) -> None:
            try:
                outcome = future.result()
            except (TimeoutError, asyncio.TimeoutError):
                outcome = self._timed_out(task, request, hard)
            except BaseException as exc:  # cancelled, or a bug below the task
                outcome = Outcome(states.FAILURE, exc)
            if not acks_late:
                self.broker.finished([delivery])
            self.running.pop(request.id, None)
            try:
                self._settle(delivery, outcome, acks_late, self._acks_on_failure(task))
            except Exception as exc:  # kept in _unsettled, said again by the consumer
                logger.warning("could not settle %s yet: %r", request.id, exc)
            finally:
                with self._async_cond:
                    self._async_inflight -= 1
                    self._async_cond.notify_all()

        coro = self.execution.run_async(task, request)
        if hard:
            coro = asyncio.wait_for(coro, hard)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop.get())
        future.add_done_callback(finished)

    def _timed_out(self, task: Any, request: Any, hard: float | None) -> Outcome:
        exc = TimeLimitExceeded(hard)
        logger.error("Task %s[%s] cancelled: hard time limit (%ss) exceeded", task.name,
                     request.id, hard)
        try:
            self.execution.end.lost(request.id, exc, request=request, task=task)
        except Exception:
            logger.exception("could not record the time limit of %s", request.id)
        return Outcome(states.FAILURE, exc)

    # -- messages that cannot run -----------------------------------------------------------
    def _decode(self, delivery: Delivery) -> TaskMessage | None:
        task_id = None
        try:
            message = delivery.message or messages.decode_envelope(delivery.payload)
            task_id = message.task_id
            return messages.decode_task(message, self.accept)
        except ContentDisallowed as exc:
            self._set_aside(delivery, task_id, f"refused content: {exc}")
            if task_id:
                # The sender waits on this id; tell it why nothing will run.
                self._record_failure(task_id, exc)
        except MalformedMessage as exc:
            # Refused at the door (a field of the wrong type or value, a body or
            # envelope that does not decode): set aside at once with the reason, and
            # when the id could be read, tell the caller, who would otherwise wait.
            task_id = exc.task_id or task_id
            self._set_aside(delivery, task_id, f"malformed message: {exc.reason}")
            if task_id:  # as Celery's own type, so Celery clients re-raise it too
                self._record_failure(task_id, InvalidTaskError(exc.reason))
        except DecodeError as exc:
            self._set_aside(delivery, task_id, f"malformed message: {exc}")
        except Exception as exc:  # anything else about a message must not kill the worker
            self._set_aside(delivery, task_id, f"undecodable message: {exc!r}")
        return None

    def _record_failure(self, task_id: str, exc: Exception) -> None:
        try:
            self.execution.end.lost(task_id, exc)
        except Exception as store_exc:
            logger.warning("could not record the failure of %s: %r", task_id, store_exc)

    def _set_aside(self, delivery: Delivery, task_id: str | None, reason: str) -> None:
        logger.error("Message %s from queue %r set aside in %r: %s", task_id or "<no id>",
                     delivery.queue, self.broker.dead_letter_queue, reason)
        self._settle_message("dead", delivery, reason)

    def _unknown(self, delivery: Delivery, msg: TaskMessage) -> None:
        exc = NotRegistered(msg.name)
        logger.error(
            "Received unregistered task %r (id %s). %s The message is kept in %r.",
            msg.name, msg.id, exc, self.broker.dead_letter_queue)
        if signals.task_unknown.receivers:
            signals.task_unknown.send(sender=self, name=msg.name, id=msg.id, message=msg,
                                      exc=exc)
        try:
            self.execution.end.lost(msg.id, exc, request=request_from_message(msg, self.hostname))
        except Exception as store_exc:
            logger.warning("could not record NotRegistered for %s: %r", msg.id, store_exc)
        self._settle_message("dead", delivery, f"unregistered task {msg.name!r}")

    def _skip_revoked(self, delivery: Delivery, msg: TaskMessage, task: Any,
                      expired: bool) -> None:
        logger.info("Task %s[%s] %s, not run", msg.name, msg.id,
                    "expired" if expired else "revoked")
        try:
            self.execution.end.revoked(request_from_message(msg, self.hostname), task,
                                       expired=expired)
        finally:
            self._settle_message("ack", delivery)


def resident_kib() -> int:
    """This process's resident memory now (not its peak, which never goes down)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
