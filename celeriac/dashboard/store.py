"""The dashboard's history store: every task event folded into one row per task, kept
in SQLite (the default, a file in the working directory) or PostgreSQL, bounded by
count (``max_tasks``) and age (``max_age``). Its tables, and how rows reach either
database, are in ``store_sql``.

Merging follows ``celeriac.events.state``: an event that logically comes before the
state a task is in only fills fields still empty and never moves the task back (RETRY
is special: it always applies, and a task in RETRY takes any event). The merge runs in
memory on a bounded LRU of recent rows; a row not in it is read from the database, so
a long task whose events are hours apart still merges right.

Several processes may open one store and all may ingest: each batch runs in one write
transaction that first checks the write counter and forgets its cached rows when
another process wrote since, and events are unique per (task, type, timestamp), so the
same event ingested twice is stored once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import Any, Iterable

from .. import states
from ..events.state import HEARTBEAT_EXPIRE_WINDOW, TASK_EVENT_TO_STATE
from ..utils.sqlite import placeholders
from .store_sql import (_COLUMNS, TASK_FIELDS, WORKER_FIELDS, _Backend, _check_prefix,
                        _chunks, _field, _number, _Postgres, _split_prefix, _SQLite,
                        _timeline_row, _worker_values)

#: the SQLite file of a store opened with no URL, in the working directory
DEFAULT_FILE = "celeriac-dashboard.sqlite3"
#: recent task rows kept in memory for the merge
CACHE_SIZE = 10_000
#: the upper bounds (seconds) of the runtime histogram's buckets
RUNTIME_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0, 3600.0]
#: queue depth samples kept at most this long (seconds), whatever max_age says
QUEUE_SAMPLES_AGE = 86400.0

#: fields an event that comes before the task's state may still fill (when empty)
_EARLY_FIELDS = frozenset({"name", "args", "kwargs", "parent_id", "root_id", "retries",
                           "eta", "expires", "exchange", "routing_key", "group_id"})


class HistoryStore:
    """The history of tasks and workers on disk (see the module docstring).

    Use ``HistoryStore.open(url)``; every method may be called from any thread.

    Args:
        backend: the database (``_SQLite`` or ``_Postgres``).
        max_tasks: tasks kept at most (``prune``).
        max_age: seconds a task is kept at most after its last event; None: forever.
    """

    def __init__(self, backend: _Backend, *, max_tasks: int = 100_000,
                 max_age: float | None = 7 * 86400) -> None:
        self._db = backend
        self.max_tasks = int(max_tasks)
        self.max_age = max_age
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._workers: dict[str, dict[str, Any]] = {}
        self._workers_loaded = False
        self._generation = -1
        self._write_lock = threading.Lock()  # one ingest/prune of this process at a time
        self._db.create_schema()

    @classmethod
    def open(cls, url: str | None, *, max_tasks: int = 100_000,
             max_age: float | None = 7 * 86400,
             table_prefix: str | None = None) -> HistoryStore:
        """The store at ``url``.

        Args:
            url: None (SQLite file ``celeriac-dashboard.sqlite3`` in the working
                directory), ``sqlite:///path``, a bare path, or ``postgresql://...``
                (``postgresql+psycopg://`` too; ``?table_prefix=p_`` names its tables).
            table_prefix: the tables' name prefix (wins over the URL's).

        Raises:
            ValueError: a URL of another kind, or a bad table prefix.
        """
        if url is None or url == "":
            url = DEFAULT_FILE
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme.startswith("postgres"):
            if scheme == "postgres":  # Heroku's spelling, which SQLAlchemy refuses
                url = "postgresql" + url[len("postgres"):]
            pg_url, prefix = _split_prefix(url)
            backend: _Backend = _Postgres(pg_url, _check_prefix(table_prefix or prefix))
        elif scheme in ("", "sqlite", "sqlite3"):
            path = url.split("://", 1)[1] if scheme else url
            if scheme and path.startswith("/"):
                path = path[1:]  # sqlite:///rel -> rel, sqlite:////abs -> /abs
            if not path:
                raise ValueError(f"no file in the history store URL {url!r}: "
                                 "use sqlite:///path/to/file.sqlite3")
            backend = _SQLite(path, _check_prefix(table_prefix or ""))
        else:
            raise ValueError(
                f"the dashboard's history store cannot be a {scheme}:// URL: it is an "
                f"SQLite file (a path or sqlite:///path; the default is {DEFAULT_FILE}) "
                "or PostgreSQL (postgresql://user@host/db)")
        return cls(backend, max_tasks=max_tasks, max_age=max_age)

    @property
    def url(self) -> str:
        """Where the store is, without a password."""
        return self._db.describe()

    # -- taking in events ----------------------------------------------------------------
    def ingest(self, events: list[dict]) -> list[dict]:
        """Fold a batch of raw events into task and worker rows, in one transaction.

        Returns the task rows that changed (as ``task()`` gives them, without
        ``events`` and ``children``). Events that are not dicts or lack a type are
        skipped (``ingest_batch`` counts them).
        """
        return self.ingest_batch(events)[0]

    def ingest_batch(self, events: Iterable[Any]) -> tuple[list[dict], list[dict], int]:
        """``ingest``, returning ``(changed task rows, changed worker rows, skipped)``."""
        try:
            return self._ingest_batch(events)
        except Exception:
            # the transaction rolled back: the cached rows may hold what was not stored
            self._forget_cached()
            self._generation = -1
            raise

    def _ingest_batch(self, events: Iterable[Any]) -> tuple[list[dict], list[dict], int]:
        with self._write_lock, self._db.transaction() as cur:
            self._sync_generation(cur)
            task_events = []
            skipped = 0
            uuids: set[str] = set()
            for event in events:
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    skipped += 1
                    continue
                if event["type"].startswith("task-"):
                    uuid = event.get("uuid")
                    if not isinstance(uuid, str) or not uuid:
                        skipped += 1
                        continue
                    uuids.add(uuid)
                task_events.append(event)
            self._load_rows(cur, [u for u in uuids if u not in self._cache])
            self._load_workers(cur)
            changed: dict[str, dict[str, Any]] = {}
            workers_changed: dict[str, dict[str, Any]] = {}
            timeline: list[tuple[Any, ...]] = []
            for event in task_events:
                try:
                    if event["type"].startswith("task-"):
                        row = self._task_event(event, workers_changed)
                        changed[row["uuid"]] = row
                        timeline.append(_timeline_row(event))
                    elif event["type"].startswith("worker-"):
                        worker = self._worker_event(event)
                        if worker is not None:
                            workers_changed[worker["hostname"]] = worker
                except (TypeError, ValueError, KeyError, AttributeError):
                    skipped += 1
            if changed:
                self._db.upsert(cur, "tasks", "uuid", TASK_FIELDS,
                                [tuple(row[f] for f in TASK_FIELDS) for row in changed.values()])
            if timeline:
                self._db.insert_ignore(cur, "task_events",
                                       ("uuid", "type", "timestamp", "hostname", "fields"),
                                       timeline)
            if workers_changed:
                self._db.upsert(cur, "workers", "hostname", WORKER_FIELDS,
                                [_worker_values(w) for w in workers_changed.values()])
            if changed or workers_changed:
                self._bump_generation(cur)
            self._trim_cache()
        now = time.time()
        return ([dict(row) for row in changed.values()],
                [_public_worker(w, now) for w in workers_changed.values()], skipped)

    def _task_event(self, event: dict[str, Any],
                    workers_changed: dict[str, dict[str, Any]]) -> dict[str, Any]:
        uuid = event["uuid"]
        row = self._cache.get(uuid)
        if row is None:
            row = dict.fromkeys(TASK_FIELDS)
            row.update(uuid=uuid, state=states.PENDING)
            self._cache[uuid] = row
        else:
            self._cache.move_to_end(uuid)
        subject = event["type"][5:]
        timestamp = _number(event.get("timestamp"))
        hostname = event.get("hostname")
        if subject == "sent":
            row["client"] = hostname
        elif isinstance(hostname, str):
            row["worker"] = hostname
            worker = self._alive_sign(hostname, timestamp, _number(event.get("local_received")))
            workers_changed[hostname] = worker
        state = TASK_EVENT_TO_STATE.get(subject)
        if state is None:
            state = subject.upper()  # a custom event names its own state
        else:
            row[subject] = timestamp
        comes_before = (state != states.RETRY and row["state"] != states.RETRY
                        and states.precedence(state) > states.precedence(row["state"]))
        if comes_before:
            for key in _EARLY_FIELDS:
                if row[key] is None and event.get(key) is not None:
                    row[key] = _field(key, event[key])
        else:
            for key in TASK_FIELDS:
                if key in event and key not in _ENVELOPE:
                    row[key] = _field(key, event[key])
            row["state"] = state
            row["timestamp"] = timestamp if timestamp is not None else time.time()
            clock = event.get("clock")
            if isinstance(clock, int):
                row["clock"] = clock
        if row["timestamp"] is None:
            row["timestamp"] = timestamp if timestamp is not None else time.time()
        return row

    def _worker_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            raise ValueError("a worker event without a hostname")
        subject = event["type"][7:]
        worker = self._worker(hostname)
        for key in ("pid", "freq", "processed", "active", "sw_ident", "sw_ver", "sw_sys"):
            if key in event:
                worker[key] = event[key]
        if isinstance(event.get("loadavg"), (list, tuple)):
            worker["loadavg"] = list(event["loadavg"])
        if isinstance(event.get("clock"), int):
            worker["clock"] = event["clock"]
        timestamp = _number(event.get("timestamp"))
        if subject == "offline":
            worker["offline_at"] = timestamp if timestamp is not None else time.time()
            return worker
        seen = _number(event.get("local_received")) or timestamp or time.time()
        worker["last_heartbeat"] = max(worker["last_heartbeat"] or 0.0, seen)
        if worker["offline_at"] is not None and (timestamp or seen) > worker["offline_at"]:
            worker["offline_at"] = None  # started again
        return worker

    def _alive_sign(self, hostname: str, timestamp: float | None,
                    local_received: float | None) -> dict[str, Any]:
        """A task event is a sign of life of its worker, as a heartbeat is; one sent
        before the worker said it went offline (a late batch) revives nothing."""
        worker = self._worker(hostname)
        seen = local_received or timestamp or time.time()
        if worker["offline_at"] is not None:
            if timestamp is None or timestamp <= worker["offline_at"]:
                return worker
            worker["offline_at"] = None
        worker["last_heartbeat"] = max(worker["last_heartbeat"] or 0.0, seen)
        return worker

    def _worker(self, hostname: str) -> dict[str, Any]:
        worker = self._workers.get(hostname)
        if worker is None:
            worker = dict.fromkeys(WORKER_FIELDS)
            worker.update(hostname=hostname, freq=60.0, first_seen=time.time())
            self._workers[hostname] = worker
        return worker

    # -- the cache and other processes --------------------------------------------------
    def _sync_generation(self, cur: Any) -> None:
        """Forget cached rows when another process wrote since our last batch."""
        generation = self._db.generation(cur)
        if generation != self._generation:
            self._forget_cached()
        self._generation = generation

    def _forget_cached(self) -> None:
        self._cache.clear()
        self._workers.clear()
        self._workers_loaded = False

    def _bump_generation(self, cur: Any) -> None:
        self._generation += 1
        self._db.set_generation(cur, self._generation)

    def _load_rows(self, cur: Any, uuids: list[str]) -> None:
        for chunk in _chunks(uuids, 500):
            marks = placeholders(chunk)
            rows = self._db.query(cur, f"SELECT {_COLUMNS} FROM {{p}}tasks "
                                       f"WHERE uuid IN ({marks})", chunk)
            for values in rows:
                self._cache[values[0]] = dict(zip(TASK_FIELDS, values))

    def _load_workers(self, cur: Any) -> None:
        if self._workers_loaded:
            return
        for values in self._db.query(cur, f"SELECT {', '.join(WORKER_FIELDS)} "
                                          "FROM {p}workers", ()):
            worker = _worker_row(values)
            self._workers[worker["hostname"]] = worker
        self._workers_loaded = True

    def _trim_cache(self) -> None:
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- looking --------------------------------------------------------------------------
    def task(self, uuid: str) -> dict | None:
        """The task's row with ``events`` (oldest first: ``{type, timestamp, hostname,
        fields}``) and ``children`` (ids), or None when unknown."""
        with self._db.cursor() as cur:
            rows = self._db.query(cur, f"SELECT {_COLUMNS} FROM {{p}}tasks WHERE uuid = ?",
                                  (uuid,))
            if not rows:
                return None
            task = dict(zip(TASK_FIELDS, rows[0]))
            task["events"] = [
                {"type": t, "timestamp": ts, "hostname": h, "fields": json.loads(f or "{}")}
                for t, ts, h, f in self._db.query(
                    cur, "SELECT type, timestamp, hostname, fields FROM {p}task_events "
                         "WHERE uuid = ? ORDER BY timestamp, id", (uuid,))]
            task["children"] = [r[0] for r in self._db.query(
                cur, "SELECT uuid FROM {p}tasks WHERE parent_id = ? ORDER BY timestamp",
                (uuid,))]
        return task

    def known(self, uuids: list[str]) -> set[str]:
        """The ids among ``uuids`` that the store has a row for."""
        found: set[str] = set()
        with self._db.cursor() as cur:
            for chunk in _chunks(uuids, 500):
                found.update(r[0] for r in self._db.query(
                    cur, f"SELECT uuid FROM {{p}}tasks WHERE uuid IN "
                         f"({placeholders(chunk)})", chunk))
        return found

    def group_members(self, group_id: str) -> list[str]:
        """The ids of the tasks known to belong to the group ``group_id``."""
        with self._db.cursor() as cur:
            return [r[0] for r in self._db.query(
                cur, "SELECT uuid FROM {p}tasks WHERE group_id = ? ORDER BY timestamp",
                (group_id,))]

    def tasks(self, *, limit: int = 100, offset: int = 0,
              state: str | list[str] | None = None, name: str | None = None,
              worker: str | None = None, since: float | None = None,
              until: float | None = None, search: str | None = None,
              sort_by: str = "-timestamp") -> tuple[list[dict], int]:
        """``(rows, total matching)``, rows in ``sort_by`` order.

        Args:
            state: one state or several.
            since, until: bounds of the time the task was received (its first event's
                time when it was never received).
            search: a task id prefix, or text within its args, kwargs or result.
            sort_by: a task field, ``-`` first for descending (empty values last).

        Raises:
            ValueError: ``sort_by`` names no task field.
        """
        where: list[str] = []
        params: list[Any] = []
        if state:
            chosen = [state] if isinstance(state, str) else list(state)
            where.append(f"state IN ({placeholders(chosen)})")
            params += chosen
        if name:
            where.append("name = ?")
            params.append(name)
        if worker:
            where.append("worker = ?")
            params.append(worker)
        if since is not None:
            where.append("COALESCE(received, sent, timestamp) >= ?")
            params.append(float(since))
        if until is not None:
            where.append("COALESCE(received, sent, timestamp) <= ?")
            params.append(float(until))
        if search:
            like = self._db.like
            pattern = "%" + _escape_like(search) + "%"
            where.append(f"(uuid {like} ? ESCAPE '\\' OR args {like} ? ESCAPE '\\' OR "
                         f"kwargs {like} ? ESCAPE '\\' OR result {like} ? ESCAPE '\\')")
            params += [_escape_like(search) + "%", pattern, pattern, pattern]
        field = sort_by[1:] if sort_by.startswith("-") else sort_by
        if field not in TASK_FIELDS:
            raise ValueError(f"cannot sort tasks by {sort_by!r}: sort_by is one of "
                             f"{', '.join(TASK_FIELDS)}, with '-' first for descending")
        order = "DESC" if sort_by.startswith("-") else "ASC"
        if field not in _NEVER_NULL:
            # empty values last both ways (and on PostgreSQL, whose default puts them
            # first when descending); a column never empty keeps its index usable
            order += " NULLS LAST"
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._db.cursor() as cur:
            total = self._db.query(cur, f"SELECT COUNT(*) FROM {{p}}tasks{clause}", params)[0][0]
            rows = self._db.query(
                cur, f"SELECT {_COLUMNS} FROM {{p}}tasks{clause} "
                     f"ORDER BY {field} {order} LIMIT ? OFFSET ?",
                [*params, max(0, int(limit)), max(0, int(offset))])
        return [dict(zip(TASK_FIELDS, r)) for r in rows], int(total)

    def task_types(self) -> list[str]:
        """The task names seen, sorted."""
        with self._db.cursor() as cur:
            return [r[0] for r in self._db.query(
                cur, "SELECT DISTINCT name FROM {p}tasks WHERE name IS NOT NULL "
                     "ORDER BY name", ())]

    def workers(self) -> list[dict]:
        """Every worker row, by node name: ``alive`` is judged now from its last sign
        of life and ``freq`` (twice ``freq``, as Celery's monitors judge)."""
        with self._db.cursor() as cur:
            rows = self._db.query(cur, f"SELECT {', '.join(WORKER_FIELDS)} FROM {{p}}workers "
                                       "ORDER BY hostname", ())
        now = time.time()
        return [_public_worker(_worker_row(values), now) for values in rows]

    def forget_offline_workers(self, older_than: float) -> list[str]:
        """Forget the workers offline whose last sign of life is more than
        ``older_than`` seconds old; returns their node names."""
        now = time.time()
        gone = [w["hostname"] for w in self.workers()
                if not w["alive"] and (w["last_heartbeat"] or w["first_seen"] or 0)
                < now - older_than]
        if gone:
            with self._write_lock, self._db.transaction() as cur:
                for chunk in _chunks(gone, 500):
                    self._db.execute(cur, "DELETE FROM {p}workers WHERE hostname IN "
                                          f"({placeholders(chunk)})", chunk)
                self._workers.clear()
                self._workers_loaded = False
                self._sync_generation(cur)
                self._bump_generation(cur)
        return gone

    def counts(self) -> dict:
        """``{'by_state': {state: n}, 'by_name': {name: {state: n}}, 'total': n}``."""
        by_state: dict[str, int] = {}
        by_name: dict[str, dict[str, int]] = {}
        with self._db.cursor() as cur:
            rows = self._db.query(cur, "SELECT name, state, COUNT(*) FROM {p}tasks "
                                       "GROUP BY name, state", ())
        for name, state, n in rows:
            by_state[state] = by_state.get(state, 0) + n
            if name is not None:
                by_name.setdefault(name, {})[state] = n
        return {"by_state": by_state, "by_name": by_name, "total": sum(by_state.values())}

    def throughput(self, since: float, bucket: float = 10.0) -> list[dict]:
        """Tasks succeeded, failed, retried and received per ``bucket`` seconds from
        ``since`` to now: ``[{t (bucket start), succeeded, failed, retried,
        received}]``, every bucket listed (zeros too)."""
        bucket = float(bucket)
        if bucket <= 0:
            raise ValueError("throughput: bucket must be positive seconds")
        now = time.time()
        since = float(since)
        size = max(1, math.ceil((now - since) / bucket))
        kinds = ("succeeded", "failed", "retried", "received")
        out = [dict(t=since + i * bucket, **dict.fromkeys(kinds, 0)) for i in range(size)]
        with self._db.cursor() as cur:
            for kind in kinds:
                index = self._db.bucket_expr(kind)
                for b, n in self._db.query(
                        cur, f"SELECT {index} AS b, COUNT(*) FROM {{p}}tasks "
                             f"WHERE {kind} >= ? GROUP BY b", (since, bucket, since)):
                    b = int(b)
                    if 0 <= b < size:
                        out[b][kind] = int(n)
        return out

    def runtimes(self, name: str | None = None, since: float | None = None) -> dict:
        """The runtimes of succeeded tasks (of ``name``; succeeded since ``since``):
        ``{'buckets': upper bounds (s), 'counts': per bucket (runtime <= its bound
        and above the previous one), 'over': runtimes above the last bound, 'p50',
        'p90', 'p99', 'n'}``; the percentiles are None when n is 0."""
        where = ["runtime IS NOT NULL", "succeeded IS NOT NULL"]
        params: list[Any] = []
        if name:
            where.append("name = ?")
            params.append(name)
        if since is not None:
            where.append("succeeded >= ?")
            params.append(float(since))
        with self._db.cursor() as cur:
            values = sorted(r[0] for r in self._db.query(
                cur, f"SELECT runtime FROM {{p}}tasks WHERE {' AND '.join(where)}", params))
        counts = [0] * len(RUNTIME_BUCKETS)
        over = 0
        i = 0
        for value in values:  # sorted: one walk along the bounds
            while i < len(RUNTIME_BUCKETS) and value > RUNTIME_BUCKETS[i]:
                i += 1
            if i == len(RUNTIME_BUCKETS):
                over += 1
            else:
                counts[i] += 1
        return {"buckets": list(RUNTIME_BUCKETS), "counts": counts, "over": over,
                "p50": _percentile(values, 50), "p90": _percentile(values, 90),
                "p99": _percentile(values, 99), "n": len(values)}

    # -- queue depths ---------------------------------------------------------------------
    def record_queue_depths(self, timestamp: float, depths: dict[str, int]) -> None:
        """Keep one sample of each queue's length."""
        if not depths:
            return
        with self._db.transaction() as cur:
            self._db.executemany(cur, "INSERT INTO {p}queue_depths (timestamp, queue, "
                                      "messages) VALUES (?, ?, ?)",
                                 [(float(timestamp), str(q), int(n)) for q, n in depths.items()])

    def queue_depth_series(self, since: float) -> dict[str, list[tuple[float, int]]]:
        """``{queue: [(timestamp, messages), ...]}`` oldest first, samples since ``since``."""
        out: dict[str, list[tuple[float, int]]] = {}
        with self._db.cursor() as cur:
            for ts, queue, n in self._db.query(
                    cur, "SELECT timestamp, queue, messages FROM {p}queue_depths "
                         "WHERE timestamp >= ? ORDER BY timestamp", (float(since),)):
                out.setdefault(queue, []).append((ts, n))
        return out

    # -- bounds ---------------------------------------------------------------------------
    def prune(self) -> int:
        """Forget the oldest tasks (by their last event) past ``max_tasks``, and those
        older than ``max_age``, with their events; returns the task rows removed."""
        removed = 0
        with self._write_lock, self._db.transaction() as cur:
            self._sync_generation(cur)
            if self.max_age is not None:
                cutoff = time.time() - float(self.max_age)
                removed += self._delete_where(cur, "timestamp < ?", (cutoff,))
            total = self._db.query(cur, "SELECT COUNT(*) FROM {p}tasks", ())[0][0]
            excess = int(total) - self.max_tasks
            if excess > 0:
                removed += self._delete_where(
                    cur, "uuid IN (SELECT uuid FROM {p}tasks ORDER BY timestamp LIMIT ?)",
                    (excess,))
            samples_age = min(QUEUE_SAMPLES_AGE, self.max_age or QUEUE_SAMPLES_AGE)
            self._db.execute(cur, "DELETE FROM {p}queue_depths WHERE timestamp < ?",
                             (time.time() - samples_age,))
            if removed:
                self._bump_generation(cur)
        return removed

    def _delete_where(self, cur: Any, where: str, params: tuple[Any, ...]) -> int:
        uuids = [r[0] for r in self._db.query(cur, f"SELECT uuid FROM {{p}}tasks WHERE {where}",
                                              params)]
        for chunk in _chunks(uuids, 500):
            marks = placeholders(chunk)
            self._db.execute(cur, f"DELETE FROM {{p}}task_events WHERE uuid IN ({marks})", chunk)
            self._db.execute(cur, f"DELETE FROM {{p}}tasks WHERE uuid IN ({marks})", chunk)
        for uuid in uuids:
            self._cache.pop(uuid, None)
        return len(uuids)

    def count_events(self) -> int:
        """Task events stored (for measurements and tests)."""
        with self._db.cursor() as cur:
            return int(self._db.query(cur, "SELECT COUNT(*) FROM {p}task_events", ())[0][0])

    def unfinished(self, limit: int = 500, after: float | None = None,
                   before: float | None = None) -> list[tuple[str, float]]:
        """``(uuid, timestamp)`` of tasks not in a ready state whose last event came
        after ``after`` and before ``before``, oldest first (a backfill goes round
        them in slices)."""
        ready = sorted(states.READY_STATES)
        sql = f"SELECT uuid, timestamp FROM {{p}}tasks WHERE state NOT IN ({placeholders(ready)})"
        params: list[Any] = list(ready)
        if after is not None:
            sql += " AND timestamp > ?"
            params.append(float(after))
        if before is not None:
            sql += " AND timestamp < ?"
            params.append(float(before))
        with self._db.cursor() as cur:
            return [(r[0], r[1]) for r in self._db.query(
                cur, sql + " ORDER BY timestamp LIMIT ?", [*params, int(limit)])]

    def close(self) -> None:
        """Close every connection of this store."""
        self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HistoryStore {self.url}>"


# -- rows -----------------------------------------------------------------------------------

# Columns every row has a value in (the first event sets them).
_NEVER_NULL = frozenset({"uuid", "state", "timestamp"})
# What every event carries about its sender, not about the task.
_ENVELOPE = frozenset({"type", "uuid", "hostname", "timestamp", "clock", "local_received",
                       "pid", "utcoffset", "state", "worker", "client"})


def _worker_row(values: tuple[Any, ...]) -> dict[str, Any]:
    """A workers table row as a dict, its loadavg decoded."""
    worker = dict(zip(WORKER_FIELDS, values))
    worker["loadavg"] = json.loads(worker["loadavg"]) if worker["loadavg"] else None
    return worker


def _public_worker(worker: dict[str, Any], now: float) -> dict[str, Any]:
    freq = _number(worker.get("freq")) or 60.0
    last = worker.get("last_heartbeat")
    alive = (worker.get("offline_at") is None and last is not None
             and now < last + freq * HEARTBEAT_EXPIRE_WINDOW / 100.0)
    out = {k: worker.get(k) for k in WORKER_FIELDS if k not in ("offline_at", "clock")}
    out["loadavg"] = list(worker["loadavg"]) if worker.get("loadavg") else None
    out.update(alive=alive, status="ONLINE" if alive else "OFFLINE")
    return out


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(values)))
    return values[rank - 1]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
