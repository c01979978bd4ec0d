"""The dashboard's ingest: the event stream folded into the history store, in batches.

Three daemon threads, started in this order and stopped in the same order (receiving
ends first, so that the store thread takes in all that was received):

- ``receive``: an ``EventReceiver`` on the app's broker appends each event to a bounded
  buffer (it never waits for the database: a slow disk must not back up the broker);
- ``store``: takes the buffer in batches (``batch`` events, or what came within
  ``flush_every`` seconds of the first), calls ``store.ingest_batch``, tells the live
  subscribers what changed, and prunes the store every few seconds;
- ``chores``: on timers, asks the workers to send task events (``enable_events``, as
  Flower's ``--enable-events``), completes unfinished tasks from the result backend
  (``backfill``), samples queue depths and forgets long-offline workers.

A gap is a time nobody listened: before ``start``, since the newest event the store
holds (or ``max_age`` ago in a new store). Tasks sent and finished within it left no
event, only a result; while the gap is open each backfill also takes a page of the
results done since it began (``Backend.recent_results``) and adds the tasks the store
does not know that were done before ``start``, every ``GAP_EVERY`` seconds until a
whole pass over the backend's results was made. (A task done later is told by its
events; one whose worker sends none stays out, rather than show as a nameless row
before its events come.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable

from .. import states
from ..backends.base import done_at
from ..events.event import short_repr
from .store import HistoryStore

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.dashboard")

#: events waiting for the store at most; past it the oldest are dropped (and counted)
BUFFER_MAX = 100_000
#: updates a subscriber may have waiting; past it the oldest go (it reloads anyway)
SUBSCRIPTION_MAX = 2_000
#: seconds between prunes of the store
PRUNE_EVERY = 5.0
#: seconds between ``enable_events`` broadcasts and between backfills
CHORES_EVERY = 60.0
#: tasks looked up in the result backend per backfill
BACKFILL_LIMIT = 500
#: seconds without an event before a backfill looks a task up
BACKFILL_QUIET = 10.0
#: results read from the result backend per backfill while a gap is open
GAP_LIMIT = 1_000
#: seconds between backfills while a gap is open
GAP_EVERY = 1.0
#: a gap begins this much before the newest event: clocks of hosts differ
GAP_MARGIN = 60.0
#: seconds the ``events_per_second`` figure averages over
RATE_WINDOW = 5.0
# Seconds a failed receiver waits before listening again (the broker is away).
_RECONNECT_DELAY = 1.0
# How many times ``batch`` one transaction may take when the buffer holds more.
_CATCH_UP = 4
# The seconds between stats updates sent to subscribers.
_STATS_EVERY = 1.0

#: ``listener(raw events, {uuid: changed task row})``, see ``Ingestor.add_listener``
BatchListener = Callable[[list[dict[str, Any]], dict[str, dict[str, Any]]], Any]


class Subscription:
    """A live feed of updates for one page: ``get(timeout)`` returns what moved since
    the last call, coalesced (one entry per task or worker, the newest row), at most
    ``maxsize`` of them: a subscriber too slow to keep up loses the oldest updates,
    never holds up ingest."""

    def __init__(self, owner: Ingestor | None = None, maxsize: int = SUBSCRIPTION_MAX) -> None:
        self._owner = owner
        self.maxsize = maxsize
        self.dropped = 0
        self._items: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, key: tuple[str, str], update: dict[str, Any]) -> None:
        with self._cond:
            self._items.pop(key, None)
            self._items[key] = update
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
                self.dropped += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> list[dict]:
        """The updates waiting, oldest first; waits up to ``timeout`` seconds for one
        (empty list when none came, or when closed)."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            items = list(self._items.values())
            self._items.clear()
            return items

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self._owner is not None:
            self._owner._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Ingestor:
    """Feeds ``store`` from ``app``'s event stream (see the module docstring).

    Args:
        app: the app whose broker carries the events.
        store: where they go.
        batch: events per store transaction (up to 4 times more while catching up).
        flush_every: seconds an event waits at most before its batch is stored.
        purge_offline_workers: forget workers offline for this many seconds.
        enable_events: broadcast ``enable_events`` at start and every minute.
        queue_sampler: returns ``{queue: messages}``; sampled every ``sample_every``.
        backfill_every: seconds between backfills (None: only at start).
        prune_every: seconds between prunes of the store.

    Attributes:
        stats: ``events_total`` (events stored), ``events_per_second`` (over the last
            5 s), ``lag_seconds`` (how long the last batch's first event waited),
            ``last_event_at`` (when the newest stored event was received),
            ``events_skipped`` (broken), ``events_dropped`` (the buffer was full),
            ``batches``, ``pruned`` (task rows), ``backfilled`` (task rows) and
            ``gap_since`` (where the open gap begins, see the module docstring; None
            when none is open), ``listener_reconnects`` (times the event listener lost
            its connection: events sent meanwhile were missed).
    """

    def __init__(self, app: Celery, store: HistoryStore, *, batch: int = 500,
                 flush_every: float = 0.2, purge_offline_workers: float | None = None,
                 enable_events: bool = True,
                 queue_sampler: Callable[[], dict[str, int]] | None = None,
                 sample_every: float = 10.0, backfill_every: float | None = CHORES_EVERY,
                 prune_every: float = PRUNE_EVERY) -> None:
        self.app = app
        self.store = store
        self.batch = max(1, int(batch))
        self.flush_every = float(flush_every)
        self.purge_offline_workers = purge_offline_workers
        self.enable_events = enable_events
        self.queue_sampler = queue_sampler
        self.sample_every = float(sample_every)
        self.backfill_every = backfill_every
        self.prune_every = float(prune_every)
        self.stats: dict[str, Any] = {
            "events_total": 0, "events_per_second": 0.0, "lag_seconds": 0.0,
            "last_event_at": None, "events_skipped": 0, "events_dropped": 0,
            "batches": 0, "pruned": 0, "backfilled": 0, "gap_since": None,
            "listener_reconnects": 0}
        self._buffer: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._received_all = threading.Event()  # the receive thread ended
        self._receiver: Any = None
        self._threads: list[threading.Thread] = []
        self._subscribers: set[Subscription] = set()
        self._subs_lock = threading.Lock()
        self._rate: deque[tuple[float, int]] = deque()
        self._backfill_after: float | None = None
        self._listening = threading.Event()
        self._wake_chores = threading.Event()
        self._joined: set[str] = set()  # workers come online since the last broadcast
        self._listeners: list[BatchListener] = []
        self._reconnects_before = 0  # of the receivers closed so far
        # the open gap: (results done since, and until, where its pass over them is)
        self._gap: tuple[float, float, str | None] | None = None
        self._gap_lock = threading.Lock()
        self._lists_results = True  # the result backend has recent_results

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start listening (events from now on are kept) and the three threads."""
        self._stopping.clear()
        self._received_all.clear()
        # listening starts now: what ends from now on is told by its events
        self._open_gap(self._newest_stored(), time.time())
        for name, target in (("receive", self._run_receive), ("store", self._run_store),
                             ("chores", self._run_chores)):
            thread = threading.Thread(target=target, name=f"celeriac-dashboard-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
            if name == "receive":
                self._listening.wait(10.0)

    def stop(self) -> None:
        """Stop the threads, storing what was received first."""
        self._stopping.set()
        receiver = self._receiver
        if receiver is not None:
            receiver.should_stop = True
        self._wake_chores.set()
        with self._cond:
            self._cond.notify_all()
        # receive ends first, then store takes what is left, then chores
        for thread in self._threads:
            thread.join(15.0)
        self._threads = []
        for sub in list(self._subscribers):
            sub.close()

    def __enter__(self) -> Ingestor:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- live feed ----------------------------------------------------------------------
    def subscribe(self, maxsize: int = SUBSCRIPTION_MAX) -> Subscription:
        """A new live feed of at most ``maxsize`` waiting updates (close it when the
        page goes)."""
        sub = Subscription(self, maxsize)
        with self._subs_lock:
            self._subscribers.add(sub)
        return sub

    def add_listener(self, listener: BatchListener) -> None:
        """Call ``listener(events, rows)`` on the store thread after each stored batch:
        the raw events, and ``{uuid: row}`` of the tasks they changed (where a
        ``task-succeeded`` event, which has no name, finds its task's). Unlike a
        subscription it misses nothing, so exact counters are built on it; it must
        be quick, as ingest waits for it."""
        self._listeners.append(listener)

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subscribers.discard(sub)

    def _publish(self, tasks: list[dict], workers: list[dict], stats: bool) -> None:
        with self._subs_lock:
            subs = list(self._subscribers)
        if not subs:
            return
        for sub in subs:
            for row in tasks:
                sub.put(("task", row["uuid"]), {"kind": "task", "task": row})
            for row in workers:
                sub.put(("worker", row["hostname"]), {"kind": "worker", "worker": row})
            if stats:
                sub.put(("stats", ""), {"kind": "stats", **self.stats})

    # -- receiving ----------------------------------------------------------------------
    def _run_receive(self) -> None:
        try:
            self._receive()
        finally:
            self._received_all.set()
            with self._cond:
                self._cond.notify_all()

    def _receive(self) -> None:
        from ..events import EventReceiver

        while not self._stopping.is_set():
            try:
                self._receiver = EventReceiver(self.app.connection(), app=self.app,
                                               handlers={"*": self._take})
                self._listening.set()
                if self._stopping.is_set():
                    return
                self._receiver.capture(wakeup=True)
            except Exception as exc:  # noqa: BLE001 - the broker went away: listen again
                self._listening.set()
                self._reconnects_before += 1
                logger.warning("dashboard: receiving events failed (%r); retrying", exc)
                self._stopping.wait(_RECONNECT_DELAY)
            finally:
                receiver, self._receiver = self._receiver, None
                if receiver is not None:
                    try:
                        receiver.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        logger.debug("closing the event receiver failed", exc_info=True)
                    self._reconnects_before += receiver.reconnects

    def _take(self, event: Any) -> None:
        if (self.enable_events and isinstance(event, dict)
                and event.get("type") == "worker-online"):
            # a worker started without -E sends task events from its first task on
            self._joined.add(str(event.get("hostname")))
            self._wake_chores.set()
        with self._cond:
            self._buffer.append(event)
            if len(self._buffer) > BUFFER_MAX:
                self._buffer.popleft()
                self.stats["events_dropped"] += 1
            if len(self._buffer) == 1 or len(self._buffer) >= self.batch:
                self._cond.notify()

    def feed(self, events: list[Any]) -> None:
        """Hand events to the store thread as if they had been received (tests and
        benchmarks feed synthetic streams this way)."""
        for event in events:
            self._take(event)

    # -- storing ------------------------------------------------------------------------
    def _run_store(self) -> None:
        last_prune = last_stats = time.monotonic()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._store(batch)
            now = time.monotonic()
            if now - last_prune >= self.prune_every:
                last_prune = now
                self._safely("prune", self._prune)
            send_stats = now - last_stats >= _STATS_EVERY
            if send_stats:
                last_stats = now
                self._update_rate()
                self._publish([], [], stats=True)

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """The next batch; [] when idle for a while; None once receiving ended and
        everything received was taken."""
        with self._cond:
            if not self._buffer:
                if self._received_all.is_set():
                    return None
                self._cond.wait(_STATS_EVERY)
                if not self._buffer:
                    return None if self._received_all.is_set() else []
            deadline = time.monotonic() + self.flush_every
            while len(self._buffer) < self.batch and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            # behind: bigger transactions, as each one's commit costs about the same
            count = min(self.batch * _CATCH_UP if len(self._buffer) > self.batch
                        else self.batch, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def _store(self, batch: list[dict[str, Any]]) -> None:
        try:
            tasks, workers, skipped = self.store.ingest_batch(batch)
        except Exception:  # noqa: BLE001 - a bad batch or a database hiccup
            logger.exception("dashboard: storing %d events failed; they are lost", len(batch))
            self.stats["events_skipped"] += len(batch)
            return
        now = time.time()
        stats = self.stats
        stats["events_total"] += len(batch) - skipped
        stats["events_skipped"] += skipped
        stats["batches"] += 1
        last = batch[-1].get("local_received") if isinstance(batch[-1], dict) else None
        first = batch[0].get("local_received") if isinstance(batch[0], dict) else None
        if isinstance(last, (int, float)):
            stats["last_event_at"] = last
        if isinstance(first, (int, float)):
            stats["lag_seconds"] = max(0.0, now - first)
        self._rate.append((now, len(batch)))
        if self._listeners:
            rows = {row["uuid"]: row for row in tasks}
            for listener in self._listeners:
                self._safely("a batch listener", lambda: listener(batch, rows))
        self._publish(tasks, workers, stats=False)

    def _update_rate(self) -> None:
        now = time.time()
        receiver = self._receiver
        reconnects = self._reconnects_before + (
            receiver.reconnects if receiver is not None else 0)
        if reconnects > self.stats["listener_reconnects"]:
            logger.warning("dashboard: the event listener lost its connection (%d time(s) "
                           "so far) and listens again; events sent meanwhile were missed",
                           reconnects)
        self.stats["listener_reconnects"] = reconnects
        while self._rate and self._rate[0][0] < now - RATE_WINDOW:
            self._rate.popleft()
        self.stats["events_per_second"] = round(sum(n for _, n in self._rate) / RATE_WINDOW, 1)
        if not self._buffer:
            self.stats["lag_seconds"] = 0.0

    def _prune(self) -> None:
        self.stats["pruned"] += self.store.prune()

    # -- chores -------------------------------------------------------------------------
    def _run_chores(self) -> None:
        due: dict[str, float] = {"events": 0.0, "backfill": 0.0}
        if self.queue_sampler is not None:
            due["sample"] = 0.0
        if self.purge_offline_workers is not None:
            due["purge"] = 0.0
        every = {"events": CHORES_EVERY, "backfill": self.backfill_every,
                 "sample": self.sample_every,
                 "purge": min(CHORES_EVERY, max(1.0, (self.purge_offline_workers or 0) / 2))}
        jobs: dict[str, Callable[[], Any]] = {
            "events": self._enable_events, "backfill": self.backfill,
            "sample": self._sample, "purge": self._purge}
        if not self.enable_events:
            del due["events"]
        while not self._stopping.is_set():
            now = time.monotonic()
            for name, when in list(due.items()):
                if when <= now:
                    self._safely(name, jobs[name])
                    interval = every[name]
                    if name == "backfill" and self._gap is not None and self._lists_results:
                        interval = GAP_EVERY
                    if interval is None:
                        del due[name]
                    else:
                        due[name] = time.monotonic() + interval
            wait = min(due.values(), default=now + CHORES_EVERY) - time.monotonic()
            self._wake_chores.wait(max(0.05, min(wait, CHORES_EVERY)))
            self._wake_chores.clear()
            if self._joined:
                joined, self._joined = self._joined, set()
                self._safely("enable_events", lambda: self.app.control.enable_events(
                    destination=sorted(joined)))

    def _safely(self, name: str, job: Callable[[], Any]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - a chore fails, the next run may not
            logger.warning("dashboard: %s failed: %r", name, exc)

    def _enable_events(self) -> None:
        self.app.control.enable_events()

    def _sample(self) -> None:
        assert self.queue_sampler is not None
        self.store.record_queue_depths(time.time(), self.queue_sampler())

    def _purge(self) -> None:
        assert self.purge_offline_workers is not None
        self.store.forget_offline_workers(self.purge_offline_workers)

    def backfill(self, quiet: float = BACKFILL_QUIET) -> int:
        """Complete unfinished tasks of the store from the result backend (those that
        finished while nobody listened), ``BACKFILL_LIMIT`` per run, going round the
        unfinished ones run after run; and while a gap is open (see the module
        docstring) add the tasks done within it that the store does not know,
        from ``GAP_LIMIT`` results read per run. Returns the rows completed or added.

        Args:
            quiet: only tasks with no event for this many seconds (the end event of
                a task that just ended is on its way: it tells more).
        """
        uuids = self.store.unfinished(limit=BACKFILL_LIMIT, after=self._backfill_after,
                                      before=time.time() - quiet)
        self._backfill_after = None if len(uuids) < BACKFILL_LIMIT else uuids[-1][1]
        backend = self.app.backend
        events = []
        if uuids:
            metas = backend.get_many_metas([u for u, _ in uuids])
            for (uuid, _), meta in zip(uuids, metas):
                event = _event_from_meta(backend, uuid, meta)
                if event is not None:
                    events.append(event)
        gap_events, gap_moved = self._fill_gap(backend)
        events += gap_events
        tasks = self.store.ingest_batch(events)[0] if events else []
        gap_moved()  # only once stored: a failed batch is read again next time
        if not tasks:
            return 0
        self.stats["backfilled"] += len(tasks)
        self._publish(tasks, [], stats=False)
        return len(tasks)

    def _open_gap(self, since: float, until: float) -> None:
        """Results done from ``since`` to ``until`` may belong to tasks the store never
        heard of."""
        with self._gap_lock:
            if self._gap is not None:
                since, until = min(since, self._gap[0]), max(until, self._gap[1])
            self._gap = (since, until, None)  # a pass from the start
            self.stats["gap_since"] = since

    def _newest_stored(self) -> float:
        """Where the gap before ``start`` begins."""
        rows, _ = self.store.tasks(limit=1, sort_by="-timestamp")
        newest = rows[0]["timestamp"] if rows else None
        if isinstance(newest, (int, float)):
            return float(newest) - GAP_MARGIN
        max_age = self.store.max_age
        return time.time() - float(max_age) if max_age is not None else 0.0

    def _fill_gap(self, backend: Any) -> tuple[list[dict[str, Any]], Callable[[], None]]:
        """Events for the tasks of one page of the open gap's results that the store
        does not know, and what moves the gap on past them once they are stored (it
        closes when its pass is over)."""
        with self._gap_lock:
            gap = self._gap
        if gap is None:
            return [], lambda: None
        since, until, cursor = gap
        metas: list[dict[str, Any]] = []
        try:
            if self._lists_results:
                metas, cursor = backend.recent_results(since, GAP_LIMIT, cursor)
            else:
                cursor = None  # nothing to read: the gap stays unfilled, and closes
        except NotImplementedError:
            self._lists_results = False
            cursor = None
            logger.info("dashboard: the result backend cannot list its results; tasks "
                        "sent and finished while nobody listened are not shown")
        events: list[dict[str, Any]] = []
        # one query for the page, not a task() (three queries) per result
        seen = self.store.known(list({m["task_id"] for m in metas
                                      if isinstance(m.get("task_id"), str)}))
        for meta in metas:
            uuid = meta.get("task_id")
            done = done_at(meta)
            if not isinstance(uuid, str) or uuid in seen or done is None or done > until:
                continue
            seen.add(uuid)
            event = _event_from_meta(backend, uuid, meta)
            if event is not None:
                events.append(_with_request(event, meta))

        def move_on() -> None:
            with self._gap_lock:
                if self._gap is gap:  # else a new gap opened meanwhile: a new pass
                    self._gap = None if cursor is None else (since, until, cursor)
                    self.stats["gap_since"] = None if cursor is None else since

        return events, move_on


#: the event a task in each ready state of the result backend would have sent
_READY_EVENTS = {states.SUCCESS: "task-succeeded", states.FAILURE: "task-failed",
                 states.REVOKED: "task-revoked"}


def _event_from_meta(backend: Any, uuid: str, meta: Any) -> dict[str, Any] | None:
    """The end event of a task as its stored result tells it (None when not ready)."""
    if not isinstance(meta, dict):
        return None
    type_ = _READY_EVENTS.get(str(meta.get("status")))
    if type_ is None:
        return None
    now = time.time()
    event: dict[str, Any] = {"type": type_, "uuid": uuid, "timestamp": _done_or(meta, now),
                             "local_received": now, "backfilled": True}
    result = meta.get("result")
    if type_ == "task-succeeded":
        event["result"] = short_repr(result)
    else:
        event["exception"] = short_repr(backend.exception_to_python(result))
        event["traceback"] = meta.get("traceback")
    for key in ("name", "group_id", "parent_id"):
        if meta.get(key):
            event[key] = meta[key]
    return event


def _with_request(event: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """``event`` with what an extended meta tells of the task's request, in the form
    the worker's events give it (reprs)."""
    if meta.get("args") is not None:
        args = meta["args"]
        event["args"] = short_repr(tuple(args) if isinstance(args, list) else args)
    if meta.get("kwargs") is not None:
        event["kwargs"] = short_repr(meta["kwargs"])
    if isinstance(meta.get("retries"), int):
        event["retries"] = meta["retries"]
    if meta.get("queue"):
        event["routing_key"] = meta["queue"]
    return event


def _done_or(meta: dict[str, Any], default: float) -> float:
    done = done_at(meta)  # the backends' reading of date_done (naive means UTC)
    return default if done is None else done


__all__ = ["Ingestor", "Subscription"]
