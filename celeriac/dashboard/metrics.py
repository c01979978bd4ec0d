"""Prometheus ``/metrics``: celeriac's names, and Flower's for Grafana boards built on it.

The text format is written by hand: it is a dozen lines of code, where
``prometheus_client`` would be one more dependency with process-global registries.

Gauges (stored tasks, workers, queue depths) are read from the history store when
scraped; counters and histograms (events, runtimes) are kept by ``EventCounters`` from
every batch of events the ingestor stores, since the dashboard started.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .store import HistoryStore

# Prometheus' own default buckets, in seconds.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0, 30.0, 60.0, 300.0, math.inf)


class _Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * len(RUNTIME_BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(RUNTIME_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += value
        self.n += 1

    def copy(self) -> _Histogram:
        twin = _Histogram()
        twin.counts, twin.total, twin.n = list(self.counts), self.total, self.n
        return twin


class EventCounters:
    """Counters of task events since the dashboard started, and runtime histograms of
    succeeded tasks, by task name and worker. ``follow(ingestor)`` feeds it every
    stored batch (``Ingestor.add_listener``), so no event is missed or counted twice;
    the task's name comes from its row, as a ``task-succeeded`` event carries none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[tuple[str, str, str], int] = defaultdict(int)
        self.runtimes: dict[tuple[str, str], _Histogram] = {}

    def observe(self, events: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> None:
        """Count these raw events; ``rows`` are the task rows they changed."""
        with self._lock:
            for event in events:
                kind = event.get("type") if isinstance(event, dict) else None
                if not isinstance(kind, str) or not kind.startswith("task-"):
                    continue
                row = rows.get(str(event.get("uuid")), {})
                name = str(row.get("name") or event.get("name") or "")
                worker = str(event.get("hostname") or "")
                self.events[(kind, name, worker)] += 1
                runtime = event.get("runtime")
                if kind == "task-succeeded" and isinstance(runtime, (int, float)):
                    self.runtimes.setdefault((name, worker), _Histogram()).observe(runtime)

    def follow(self, ingestor: Any) -> None:
        ingestor.add_listener(self.observe)

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int],
                                dict[tuple[str, str], _Histogram]]:
        with self._lock:
            return dict(self.events), {k: h.copy() for k, h in self.runtimes.items()}


def render(store: HistoryStore, counters: EventCounters | None,
           ingest_stats: dict[str, Any] | None, counts: dict[str, Any] | None = None) -> str:
    """The whole ``/metrics`` page, text format 0.0.4 (``counts``: ``store.counts()``
    when the caller has it already)."""
    out: list[str] = []
    counts = store.counts() if counts is None else counts
    _family(out, "celeriac_tasks", "gauge", "Tasks in the history store, by state and name.",
            (({"state": state, "name": name}, n)
             for name, by_state in sorted(counts.get("by_name", {}).items())
             for state, n in sorted(by_state.items())))
    workers = store.workers()
    # Each is written twice, under celeriac's name and Flower's.
    worker_online = [({"worker": w["hostname"]}, int(bool(w.get("alive")))) for w in workers]
    worker_active = [({"worker": w["hostname"]}, w.get("active") or 0) for w in workers]
    _family(out, "celeriac_workers_online", "gauge", "Workers sending heartbeats.",
            [({}, sum(online for _, online in worker_online))])
    _family(out, "celeriac_worker_online", "gauge", "1 for a worker online, 0 offline.",
            worker_online)
    _family(out, "celeriac_worker_active_tasks", "gauge",
            "Tasks a worker runs now (from its heartbeats).", worker_active)
    _family(out, "celeriac_queue_messages", "gauge", "Messages waiting in a queue.",
            (({"queue": queue}, depth) for queue, depth in _latest_depths(store).items()))
    if counters is not None:
        events, runtimes = counters.snapshot()
        _family(out, "celeriac_task_events_total", "counter",
                "Task events seen since the dashboard started.",
                (({"type": t, "name": n, "worker": w}, c)
                 for (t, n, w), c in sorted(events.items())))
        by_name: dict[str, _Histogram] = {}
        for (name, _worker), hist in runtimes.items():
            merged = by_name.setdefault(name, _Histogram())
            merged.counts = [a + b for a, b in zip(merged.counts, hist.counts)]
            merged.total += hist.total
            merged.n += hist.n
        _histogram(out, "celeriac_task_runtime_seconds", "Runtime of succeeded tasks.",
                   (({"name": name}, hist) for name, hist in sorted(by_name.items())))
        _family(out, "flower_events_total", "counter", "Flower's name: task events.",
                (({"worker": w, "type": t, "task": n}, c)
                 for (t, n, w), c in sorted(events.items())))
        _histogram(out, "flower_task_runtime_seconds", "Flower's name: task runtimes.",
                   (({"worker": w, "task": n}, hist)
                    for (n, w), hist in sorted(runtimes.items())))
    stats = ingest_stats or {}
    if isinstance(stats.get("events_total"), int):
        _family(out, "celeriac_dashboard_events_ingested_total", "counter",
                "Events the dashboard stored since it started.", [({}, stats["events_total"])])
    lag = stats.get("lag_seconds")
    if isinstance(lag, (int, float)):
        _family(out, "celeriac_dashboard_ingest_lag_seconds", "gauge",
                "How far behind the event stream the store is.", [({}, lag)])
    _family(out, "flower_worker_online", "gauge", "Flower's name: worker online.",
            worker_online)
    _family(out, "flower_worker_number_of_currently_executing_tasks", "gauge",
            "Flower's name: tasks a worker runs now.", worker_active)
    return "\n".join(out) + "\n"


def _latest_depths(store: HistoryStore) -> dict[str, int]:
    series = store.queue_depth_series(time.time() - 600)
    return {queue: points[-1][1] for queue, points in sorted(series.items()) if points}


def _family(out: list[str], name: str, kind: str, help: str,
            samples: Iterable[tuple[dict[str, str], float]]) -> None:
    out.append(f"# HELP {name} {help}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{_labels(labels)} {_number(value)}")


def _histogram(out: list[str], name: str, help: str,
               samples: Iterable[tuple[dict[str, str], _Histogram]]) -> None:
    out.append(f"# HELP {name} {help}")
    out.append(f"# TYPE {name} histogram")
    for labels, hist in samples:
        running = 0
        for bound, count in zip(RUNTIME_BUCKETS, hist.counts):
            running += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            out.append(f"{name}_bucket{_labels({**labels, 'le': le})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_number(hist.total)}")
        out.append(f"{name}_count{_labels(labels)} {hist.n}")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
