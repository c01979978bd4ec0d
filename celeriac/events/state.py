"""What a cluster looks like, folded from its events: ``State`` with its ``Worker`` and
``Task`` records, as Celery's ``events.State`` keeps them (monitors and dashboards are
built on it).

Events may arrive out of order (several workers, a batch sent late): a task event that
logically comes before the state a task is in (a ``task-received`` after its
``task-succeeded``) only fills in the fields that event owns (name, arguments...), and
never moves the task back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from itertools import islice
from typing import Any, Callable, Iterator
from weakref import WeakSet

from .. import states

logger = logging.getLogger("celeriac.events")

#: a worker is taken as gone when no heartbeat came for this share (in %) of its freq
HEARTBEAT_EXPIRE_WINDOW = 200
#: seconds between a sender's clock and ours past which a warning is logged (once)
HEARTBEAT_DRIFT_MAX = 16

#: the state a task is in after each task event
TASK_EVENT_TO_STATE = {
    "sent": states.PENDING,
    "received": states.RECEIVED,
    "started": states.STARTED,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "succeeded": states.SUCCESS,
    "revoked": states.REVOKED,
    "rejected": states.REJECTED,
}

_drift_warned: set[str] = set()


def heartbeat_expires(timestamp: float, freq: float = 60.0,
                      expire_window: float = HEARTBEAT_EXPIRE_WINDOW) -> float:
    """When a worker whose last heartbeat came at ``timestamp`` is taken as gone."""
    return float(timestamp) + float(freq) * (expire_window / 100.0)


class Worker:
    """One worker node, as its events told it.

    Attributes:
        heartbeats: when (local time) its last few heartbeats arrived, oldest first.
        freq: its heartbeat interval in seconds.
        active: tasks it was running at its last heartbeat.
        processed: tasks it had finished since it started.
    """

    #: heartbeats kept
    heartbeat_max = 4
    expire_window = HEARTBEAT_EXPIRE_WINDOW

    def __init__(self, hostname: str | None = None, pid: int | None = None,
                 freq: float = 60.0, heartbeats: list[float] | None = None, clock: int = 0,
                 active: int | None = None, processed: int | None = None,
                 loadavg: list[float] | None = None, sw_ident: str | None = None,
                 sw_ver: str | None = None, sw_sys: str | None = None) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats: list[float] = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys

    def event(self, type_: str | None, timestamp: float | None = None,
              local_received: float | None = None, fields: dict[str, Any] | None = None) -> None:
        """Take in one event about this worker (``type_`` without the ``worker-``)."""
        if fields:
            self.update(fields)
        if type_ == "offline":
            self.heartbeats.clear()
            return
        if not local_received or not timestamp:
            return
        drift = abs(local_received - timestamp)
        if drift > HEARTBEAT_DRIFT_MAX and self.hostname not in _drift_warned:
            _drift_warned.add(str(self.hostname))
            logger.warning("%s's clock is %.0f s away from ours: its heartbeats may be "
                           "misjudged", self.hostname, drift)
        beats = self.heartbeats
        beats.append(local_received)
        if len(beats) > 1 and beats[-2] > local_received:
            beats.sort()  # arrived out of order
        del beats[:-self.heartbeat_max]

    def update(self, fields: dict[str, Any], **more: Any) -> None:
        for key, value in (dict(fields, **more) if more else fields).items():
            setattr(self, key, value)

    @property
    def heartbeat_expires(self) -> float:
        return heartbeat_expires(self.heartbeats[-1], self.freq, self.expire_window)

    @property
    def alive(self) -> bool:
        return bool(self.heartbeats) and time.time() < self.heartbeat_expires

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def id(self) -> str:
        return f"{self.hostname}.{self.pid}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Worker) and other.hostname == self.hostname

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} ({self.status_string} clock:{self.clock})>"


class Task:
    """One task, as its events told it: ``state`` and, per event, when it came
    (``received``, ``started``, ``succeeded``... are timestamps)."""

    name: str | None = None
    state: str = states.PENDING
    clock: int = 0
    sent = received = started = succeeded = failed = retried = revoked = rejected = None
    args = kwargs = eta = expires = retries = result = exception = traceback = None
    timestamp = runtime = exchange = routing_key = root_id = parent_id = client = None
    worker: Worker | None = None

    #: the fields an event that comes before the current state may still fill in
    merge_rules: dict[str, tuple[str, ...]] = {
        states.RECEIVED: ("name", "args", "kwargs", "parent_id", "root_id", "retries",
                          "eta", "expires"),
    }
    #: what ``info()`` shows by default
    _info_fields = ("args", "kwargs", "retries", "result", "eta", "runtime", "expires",
                    "exception", "exchange", "routing_key", "root_id", "parent_id")
    _fields = ("uuid", "name", "state", "received", "sent", "started", "rejected",
               "succeeded", "failed", "retried", "revoked", "args", "kwargs", "eta",
               "expires", "retries", "worker", "result", "exception", "timestamp",
               "runtime", "traceback", "exchange", "routing_key", "clock", "client",
               "root_id", "parent_id", "children")

    def __init__(self, uuid: str | None = None, cluster_state: State | None = None,
                 **fields: Any) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self.children: WeakSet[Task] = WeakSet()
        if fields:
            self.__dict__.update(fields)

    def event(self, type_: str, timestamp: float | None = None,
              local_received: float | None = None, fields: dict[str, Any] | None = None) -> None:
        """Take in one event about this task (``type_`` without the ``task-``)."""
        fields = dict(fields or {})
        state = TASK_EVENT_TO_STATE.get(type_)
        if state is None:
            state = type_.upper()  # a custom event names its own state
        else:
            setattr(self, type_, timestamp)
        comes_before = (state != states.RETRY and self.state != states.RETRY
                        and states.precedence(state) > states.precedence(self.state))
        if comes_before:
            keep = self.merge_rules.get(state, ())
            fields = {k: v for k, v in fields.items() if k in keep}
        else:
            fields.update(state=state, timestamp=timestamp)
        self.__dict__.update(fields)

    @property
    def id(self) -> str | None:
        return self.uuid

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def origin(self) -> str | None:
        return self.client if self.worker is None else self.worker.id

    @property
    def parent(self) -> Task | None:
        return self._lookup(self.parent_id)

    @property
    def root(self) -> Task | None:
        return self._lookup(self.root_id)

    def _lookup(self, task_id: str | None) -> Task | None:
        if not task_id or self.cluster_state is None:
            return None
        return self.cluster_state.tasks.get(task_id)

    def info(self, fields: tuple[str, ...] | None = None,
             extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields worth showing (those that are set)."""
        names = list(self._info_fields if fields is None else fields) + list(extra)
        return {name: getattr(self, name) for name in names
                if getattr(self, name, None) is not None}

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name, None) for name in self._fields}
        out["children"] = [child.uuid for child in self.children]
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"


class _ByKey(dict):  # type: ignore[type-arg]
    """``{key: WeakSet of tasks}`` that is also callable: ``state.tasks_by_type[name]``
    (unordered) and ``state.tasks_by_type(name, limit=10)`` (newest first), as Celery's."""

    def __init__(self, ordered: Callable[..., Iterator[tuple[str, Task]]]) -> None:
        super().__init__()
        self._ordered = ordered

    def __missing__(self, key: str) -> WeakSet[Task]:
        found: WeakSet[Task] = WeakSet()
        self[key] = found
        return found

    def __call__(self, key: str, limit: int | None = None,
                 reverse: bool = True) -> Iterator[tuple[str, Task]]:
        return self._ordered(key, limit=limit, reverse=reverse)


class State:
    """The cluster as its events told it.

    Args:
        callback: called as ``callback(state, event)`` for each event.
        max_workers_in_memory: workers kept (the least recently heard of go first).
        max_tasks_in_memory: tasks kept (the least recently updated go first).
        on_node_join: called with a ``Worker`` that came online.
        on_node_leave: called with a ``Worker`` that went offline.
    """

    def __init__(self, callback: Callable[[State, dict[str, Any]], Any] | None = None,
                 max_workers_in_memory: int = 5000, max_tasks_in_memory: int = 10000,
                 on_node_join: Callable[[Worker], Any] | None = None,
                 on_node_leave: Callable[[Worker], Any] | None = None) -> None:
        self.event_callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        #: handlers of other event groups: ``{group: fn(subject, event)}``
        self.handlers: dict[str, Callable[[str, dict[str, Any]], Any]] = {}
        self.event_count = 0
        #: tasks received (``task-received`` events seen)
        self.task_count = 0
        self.tasks_by_type = _ByKey(self._tasks_by_type)
        self.tasks_by_worker = _ByKey(self._tasks_by_worker)
        self._seen_types: set[str] = set()
        self._orphans: dict[str, WeakSet[Task]] = {}  # parent id -> children seen first
        self._mutex = threading.Lock()

    # -- taking in events ---------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> tuple[tuple[Any, bool], str] | None:
        """Fold one event in; returns ``((worker or task, created), subject)``."""
        with self._mutex:
            return self._event(event)

    def _event(self, event: dict[str, Any]) -> tuple[tuple[Any, bool], str] | None:
        self.event_count += 1
        if self.event_callback is not None:
            self.event_callback(self, event)
        group, _, subject = str(event.get("type", "")).partition("-")
        handler = self.handlers.get(group)
        if handler is not None:
            return handler(subject, event), subject
        if group == "worker":
            return self._worker_event(subject, event), subject
        if group == "task" and event.get("uuid"):
            return self._task_event(subject, event), subject
        return None

    def _worker_event(self, subject: str, event: dict[str, Any]) -> tuple[Worker, bool]:
        hostname = event.get("hostname")
        if hostname is None:
            return Worker(), False
        offline = subject == "offline"
        worker = self.workers.get(hostname)
        created = worker is None
        if worker is None:
            worker = Worker(hostname)
            if not offline:
                self._keep_worker(worker)
        else:
            self.workers.move_to_end(hostname)
        worker.event(subject, event.get("timestamp"), event.get("local_received"), event)
        if self.on_node_join is not None and (created or subject == "online") and not offline:
            self.on_node_join(worker)
        if offline:
            if self.on_node_leave is not None:
                self.on_node_leave(worker)
            self.workers.pop(hostname, None)
        return worker, created and not offline

    def _task_event(self, subject: str, event: dict[str, Any]) -> tuple[Task, bool]:
        uuid = event["uuid"]
        hostname = event.get("hostname")
        timestamp = event.get("timestamp")
        local_received = event.get("local_received")
        task = self.tasks.get(uuid)
        created = task is None
        if task is None:
            task = Task(uuid, cluster_state=self)
            self.tasks[uuid] = task
            orphans = self._orphans.pop(uuid, None)
            if orphans:
                task.children.update(orphans)
            while len(self.tasks) > self.max_tasks_in_memory:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(uuid)
        if subject == "sent":
            task.client = hostname
        elif hostname is not None:
            worker = self.workers.get(hostname)
            if worker is None:
                worker = Worker(hostname)
                self._keep_worker(worker)
            task.worker = worker
            # a task event is a sign of life of its worker, as a heartbeat is
            worker.event(None, timestamp, local_received)
        if subject == "received":
            self.task_count += 1
        task.event(subject, timestamp, local_received, event)
        if task.name is not None:
            self._seen_types.add(task.name)
            self.tasks_by_type[task.name].add(task)
        if hostname is not None and subject != "sent":
            self.tasks_by_worker[hostname].add(task)
        if task.parent_id:
            parent = self.tasks.get(task.parent_id)
            if parent is not None:
                parent.children.add(task)
            else:
                self._orphans.setdefault(task.parent_id, WeakSet()).add(task)
        return task, created

    def _keep_worker(self, worker: Worker) -> None:
        self.workers[str(worker.hostname)] = worker
        while len(self.workers) > self.max_workers_in_memory:
            self.workers.popitem(last=False)

    # -- looking ----------------------------------------------------------------------------------
    def get_or_create_worker(self, hostname: str, **fields: Any) -> tuple[Worker, bool]:
        worker = self.workers.get(hostname)
        if worker is not None:
            if fields:
                worker.update(fields)
            return worker, False
        worker = Worker(hostname, **fields)
        self._keep_worker(worker)
        return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        task = self.tasks.get(uuid)
        if task is not None:
            return task, False
        task = self.tasks[uuid] = Task(uuid, cluster_state=self)
        return task, True

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        return islice(iter(list(self.tasks.items())), limit)

    def tasks_by_time(self, limit: int | None = None,
                      reverse: bool = True) -> Iterator[tuple[str, Task]]:
        """``(uuid, task)`` by the time of their last event, newest first (``reverse``)."""
        ordered = sorted(self.tasks.items(), reverse=reverse,
                         key=lambda item: (item[1].clock or 0, item[1].timestamp or 0))
        return islice(iter(ordered), limit)

    tasks_by_timestamp = tasks_by_time

    def _tasks_by_type(self, name: str, limit: int | None = None,
                       reverse: bool = True) -> Iterator[tuple[str, Task]]:
        return islice(((u, t) for u, t in self.tasks_by_time(reverse=reverse)
                       if t.name == name), limit)

    def _tasks_by_worker(self, hostname: str, limit: int | None = None,
                         reverse: bool = True) -> Iterator[tuple[str, Task]]:
        return islice(((u, t) for u, t in self.tasks_by_time(reverse=reverse)
                       if t.worker is not None and t.worker.hostname == hostname), limit)

    def task_types(self) -> list[str]:
        """The task names seen, sorted."""
        return sorted(self._seen_types)

    def alive_workers(self) -> list[Worker]:
        """The workers whose heartbeats have not expired."""
        return [w for w in self.workers.values() if w.alive]

    # -- forgetting --------------------------------------------------------------------------------
    def freeze_while(self, fun: Callable[..., Any], *args: Any, clear_after: bool = False,
                     **kwargs: Any) -> Any:
        """Call ``fun`` with no event taken in meanwhile (a snapshot)."""
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear()

    def clear_tasks(self, ready: bool = True) -> None:
        """Forget the finished tasks (``ready``), or every task."""
        with self._mutex:
            self._clear_tasks(ready)

    def _clear_tasks(self, ready: bool) -> None:
        if ready:
            for uuid in [u for u, t in self.tasks.items() if t.ready]:
                del self.tasks[uuid]
        else:
            self.tasks.clear()

    def clear(self, ready: bool = True) -> None:
        with self._mutex:
            self._clear(ready)

    def _clear(self, ready: bool = True) -> None:
        self.workers.clear()
        self._clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"
