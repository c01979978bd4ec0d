"""The celeriac dashboard and Flower side by side on one synthetic event stream.

    python bench/dashboard.py [--tasks 100000] [--rate 5000] [--flat-out-tasks 30000]
                              [--workers 8] [--requests 50] [--only celeriac|flower]

Both run as real processes (``python -m celeriac -A benchproj dashboard --port N --db
<tmp> --max-tasks 100000`` and ``python -m celery -A benchproj flower --port M
--max_tasks=100000``) against a private redis-server on a free port, started by this
script (``--save "" --appendonly no``; its pub/sub output buffer unbounded, so a
subscriber that falls behind is measured as behind instead of being disconnected at
Redis's 32 MB default). bench/event_stream.py plays a fleet of ``--workers`` fake
Celery workers publishing ``task.multi`` batches and heartbeats, and both listen to it
at the same time:

1. warm-up: 200 tasks, until both have counted their events (so both are subscribed);
2. offered rate: ``--tasks`` tasks (3 events each) at ``--rate`` task events/s. Every
   ``--poll`` s, each side in a thread of its own, the harness reads its count of
   task events taken in (celeriac: ``ingest.events_total`` of ``/api/dashboard/overview``,
   events stored, less the heartbeats published; Flower: the sum of its
   ``flower_events_total``, events applied to its state), its RSS (VmRSS of its process
   tree) and CPU (utime + stime). RSS is taken when a side has taken in 10k, 100k and 1M
   tasks. Lag: events published minus taken in, ``--grace`` s after the generator
   stopped; then how long until each has caught up (at most ``--catch-up`` s). The
   generator counts the subscribers each PUBLISH reached, so an event a monitor never
   had (it was not subscribed) is told from one it lost after Redis sent it;
3. tasks page with what is stored (100,000 with the defaults): ``--requests`` GETs of
   each query, alternating the two sides, median and p95 (celeriac's page JSON
   ``/api/dashboard/tasks`` and its Flower-compatible ``/api/tasks``; Flower's
   ``/api/tasks``): the first page of 50, filtered by state, sorted by received;
4. flat out: ``--flat-out-tasks`` tasks published as fast as one process can; each
   side's rate from the generator's start until it has taken them all in.

CPU per 10k events is phase 2's CPU over its events. The report goes to
bench/results/dashboard.md (and .json), with the load average before and after: the
machine is shared, so read the figures beside it.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/ last on sys.path: its amqp.py must not stand in for py-amqp (see bench/sql.py)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE] + [HERE]

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402

SIDES = ("celeriac", "flower")
RSS_MARKS = (10_000, 100_000, 1_000_000)
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGS = os.path.join(common.RESULTS_DIR, "logs")

CELERIAC_APP = '''\
"""bench/dashboard.py's app for the celeriac dashboard."""
from celeriac import Celery

app = Celery("benchproj", broker={broker!r}, backend={backend!r})
'''
FLOWER_APP = '''\
"""bench/dashboard.py's app for Flower."""
from celery import Celery

app = Celery("benchproj", broker={broker!r}, backend={backend!r})
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET; status 0 when nothing answered."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except OSError:
        body, status = b"", 0
    return status, body, time.perf_counter() - started


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, read from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def rss_kb(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                # after the command name in parentheses: utime and stime are fields 14, 15
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLK_TCK


@dataclass
class Side:
    """One monitor process: how it is started, asked and measured."""

    name: str
    command: list[str]
    cwd: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    baseline: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: how long each count request took: the harness's own load on the side
    asked: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        os.makedirs(LOGS, exist_ok=True)
        self.log_path = os.path.join(LOGS, f"dashboard-{self.name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def counts_worker_events(self) -> bool:
        """celeriac's count is of every event stored; Flower's of task events."""
        return self.name == "celeriac"

    def count(self) -> float | None:
        """Events taken in since the process started (celeriac: stored, its
        ``ingest.events_total``; Flower: applied to its state, ``flower_events_total``);
        None when it did not answer."""
        if self.name == "celeriac":
            status, body, seconds = http_get(f"{self.base}/api/dashboard/overview", timeout=60)
            self.asked.append(seconds)
            if status != 200:
                return None
            return float(json.loads(body)["ingest"]["events_total"])
        status, body, seconds = http_get(f"{self.base}/metrics", timeout=60)
        self.asked.append(seconds)
        if status != 200:
            return None
        return metric_sum(body.decode("utf-8", "replace"), "flower_events_total")

    def ingest_stats(self) -> dict[str, Any]:
        """celeriac's own ingest figures (dropped, lag...); {} for Flower."""
        if self.name != "celeriac":
            return {}
        status, body, _ = http_get(f"{self.base}/api/dashboard/overview", timeout=60)
        return dict(json.loads(body)["ingest"]) if status == 200 else {}

    def sample(self, phase: str, t0: float, gen: Generator) -> dict[str, Any]:
        """One reading of task events taken in during ``gen``'s run; ``t`` is when the
        count came back (a busy monitor answers late, and what it says is true when it
        answers), seconds after ``t0``. For celeriac the worker events published so far
        are taken off: the error is the few heartbeats still on their way."""
        assert self.proc is not None
        count = self.count()
        published = gen.last["task_events"]
        if count is not None:
            count -= self.baseline
            if self.counts_worker_events:
                count = max(0.0, count - gen.last["worker_events"])
        row = {"phase": phase, "t": time.perf_counter() - t0, "published": published,
               "ingested": count,
               "rss_kb": rss_kb(self.proc.pid), "cpu": cpu_seconds(self.proc.pid),
               "load1": os.getloadavg()[0]}
        self.samples.append(row)
        return row


class Generator:
    """bench/event_stream.py in its own process; its progress lines read by a thread."""

    def __init__(self, url: str, tasks: int, rate: float, workers: int) -> None:
        self.last: dict[str, Any] = {"tasks": 0, "task_events": 0, "worker_events": 0,
                                     "elapsed": 0.0}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "event_stream.py"), url, "--tasks",
             str(tasks), "--rate", str(rate), "--workers", str(workers)],
            stdout=subprocess.PIPE, start_new_session=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last = json.loads(line)

    @property
    def done(self) -> bool:
        return bool(self.last.get("done"))

    def wait(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout)
        self.thread.join(10)
        if not self.done:
            raise RuntimeError(f"the event generator exited {self.proc.returncode} early")
        return self.last


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = tempfile.mkdtemp(prefix="bench-dashboard-")
        self.redis_port = free_port()
        self.url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis: subprocess.Popen[bytes] | None = None
        self.sides: list[Side] = []
        self.last_moved: dict[str, tuple[float, float]] = {}
        self.results: dict[str, Any] = {"phases": {}, "pages": {}, "rss": {}, "notes": []}
        self.notes: list[str] = self.results["notes"]

    # -- set-up ----------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--client-output-buffer-limit", "pubsub 0 0 0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        client = redis.Redis(port=self.redis_port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.results["redis_version"] = client.info("server").get("redis_version")

    def make_sides(self) -> None:
        backend = f"redis://127.0.0.1:{self.redis_port}/1"
        max_tasks = str(self.args.max_tasks)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CELERIAC_DASHBOARD_TOKEN", None)
        wanted = [self.args.only] if self.args.only else list(SIDES)
        for name in wanted:
            cwd = os.path.join(self.scratch, name)
            os.makedirs(cwd)
            source = CELERIAC_APP if name == "celeriac" else FLOWER_APP
            with open(os.path.join(cwd, "benchproj.py"), "w") as f:
                f.write(source.format(broker=self.url, backend=backend))
            port = free_port()
            if name == "celeriac":
                command = [sys.executable, "-m", "celeriac", "-A", "benchproj", "dashboard",
                           "--port", str(port), "--db", os.path.join(cwd, "history.sqlite3"),
                           "--max-tasks", max_tasks]
                if self.args.celeriac_loglevel:
                    command += ["-l", self.args.celeriac_loglevel]
                side_env = env
            else:
                command = [sys.executable, "-m", "celery", "-A", "benchproj", "flower",
                           f"--port={port}", "--address=127.0.0.1",
                           f"--max_tasks={max_tasks}"]
                side_env = dict(env, FLOWER_UNAUTHENTICATED_API="1")
            self.sides.append(Side(name, command, cwd, port, side_env))

    def wait_ready(self) -> None:
        for side in self.sides:
            side.start()
        deadline = time.monotonic() + 90
        for side in self.sides:
            while side.count() is None:
                if not side.alive():
                    raise RuntimeError(f"{side.name} exited; see {side.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{side.name} never answered /metrics; see "
                                       f"{side.log_path}")
                time.sleep(0.5)

    def warm_up(self) -> None:
        """200 tasks, then wait until both have seen all 600 events: both are listening."""
        gen = Generator(self.url, 200, 2000, self.args.workers)
        gen.wait(60)
        deadline = time.monotonic() + 90
        for side in self.sides:
            want = 600 + (gen.last["worker_events"] if side.counts_worker_events else 0)
            while (side.count() or 0) < want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{side.name} did not take in the warm-up events")
                time.sleep(0.3)
            side.baseline = side.count() or 0.0

    # -- the phases ------------------------------------------------------------------------
    def _watch(self, phase: str, gen: Generator, t0: float, *, target: int | None,
               timeout: float, every: float,
               on_sample: Callable[[Side, dict[str, Any]], None] | None = None
               ) -> dict[str, float | None]:
        """Read each side every ``every`` s, each in a thread of its own (a monitor busy
        with a backlog answers late, and must not hold back the other's readings),
        until the generator is done (``target`` None) or the side has taken in
        ``target`` events, stopped moving for 10 s, or ``timeout`` passed. Returns when
        each side reached ``target``, seconds after ``t0`` (None: it did not); the
        last time its count moved is in ``self.last_moved``."""
        reached: dict[str, float | None] = {s.name: None for s in self.sides}
        deadline = time.perf_counter() + timeout

        def watch(side: Side) -> None:
            moved = (-1.0, 0.0)
            while time.perf_counter() < deadline:
                row = side.sample(phase, t0, gen)
                if on_sample is not None:
                    on_sample(side, row)
                got = row["ingested"]
                if target is None:
                    if gen.done or gen.proc.poll() is not None:
                        return
                elif got is None:
                    pass  # no answer in time: busy, not stalled
                elif got >= target:
                    reached[side.name] = row["t"]
                    return
                elif got != moved[0]:
                    moved = (got, row["t"])
                    self.last_moved[side.name] = moved
                elif row["t"] - moved[1] > 10:
                    return  # stalled: it lost events or stopped
                time.sleep(every)

        threads = [threading.Thread(target=watch, args=(side,), daemon=True)
                   for side in self.sides]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return reached

    def offered(self) -> None:
        args = self.args
        marks = [m for m in RSS_MARKS if m <= args.tasks]
        rss: dict[str, dict[str, Any]] = {s.name: {} for s in self.sides}
        # (events already counted, CPU s, RSS kB) as the phase starts
        start = {s.name: ((s.count() or s.baseline) - s.baseline,
                          cpu_seconds(s.proc.pid), rss_kb(s.proc.pid))
                 for s in self.sides if s.proc is not None}

        def mark(side: Side, row: dict[str, Any]) -> None:
            tasks_in = (row["ingested"] or 0) / 3
            for m in marks:
                if str(m) not in rss[side.name] and tasks_in >= m:
                    rss[side.name][str(m)] = {"rss_kb": row["rss_kb"], "t": row["t"],
                                              "tasks_in": tasks_in}

        t0 = time.perf_counter()
        gen = Generator(self.url, args.tasks, args.rate, args.workers)
        self._watch("offered", gen, t0, target=None, every=args.poll, on_sample=mark,
                    timeout=args.tasks * 3 / args.rate * 3 + 120)
        final = gen.wait(60)
        stopped = time.perf_counter() - t0
        time.sleep(args.grace)
        at_grace = {}
        for side in self.sides:
            row = side.sample("offered", t0, gen)
            mark(side, row)
            at_grace[side.name] = row["ingested"]
        target = final["task_events"]
        reached = self._watch("offered", gen, t0, target=target, every=args.poll,
                              on_sample=mark, timeout=args.catch_up)
        for side in self.sides:
            row = side.sample("offered", t0, gen)
            mark(side, row)
            rss[side.name]["end"] = {"rss_kb": row["rss_kb"], "t": row["t"],
                                     "tasks_in": (row["ingested"] or 0) / 3}
            rss[side.name]["hwm_kb"] = _hwm_kb(side.proc.pid) if side.proc else None
            rss[side.name]["start_kb"] = start[side.name][2]
        self._delivery("offered", final)
        out = {"published": target, "published_worker_events": final["worker_events"],
               "generator_seconds": final["elapsed"],
               "offered_rate": target / final["elapsed"], "grace": args.grace, "sides": {}}
        for side in self.sides:
            got = at_grace[side.name]
            count, cpu0, _ = start[side.name]
            last = side.samples[-1]
            events = last["ingested"] if last["ingested"] is not None else math.nan
            if last["ingested"] is None:
                self.notes.append(f"{side.name} did not answer its count within 60 s at the "
                                  f"end of the offered-rate phase (busy with a backlog)")
            out["sides"][side.name] = {
                "ingested_at_grace": got,
                # what came in while the stream lasted (and the grace second after)
                "rate_at_grace": None if got is None else got / final["elapsed"],
                "lag_events": None if got is None else target - got,
                "lag_seconds": None if got is None else (target - got) / (target / final["elapsed"]),
                "caught_up_after": _minus(reached[side.name], stopped),
                "ingested_total": last["ingested"],
                "cpu_seconds": last["cpu"] - cpu0,
                "cpu_per_10k": (last["cpu"] - cpu0) / (events - count) * 10_000
                if events - count > 0 else math.nan,
                "own_stats": side.ingest_stats(),
            }
        loads = [row["load1"] for side in self.sides for row in side.samples
                 if row["phase"] == "offered"]
        out["mean_load1"] = statistics.mean(loads) if loads else None
        self.notes.append(f"mean 1-min load average during the offered-rate phase: "
                          f"{_f(out['mean_load1'], '.2f')}")
        self.results["phases"]["offered"] = out
        self.results["rss"] = rss

    def pages(self) -> None:
        """Time the tasks page on each side, requests alternating between the sides;
        also the harness's own count read, with the CPU each of its answers costs."""
        q = "/api/tasks?limit=50"
        page = "/api/dashboard/tasks?limit=50"
        queries: list[tuple[str, dict[str, str]]] = [
            ("first 50", {"celeriac": page, "flower": q}),
            ("state=FAILURE", {"celeriac": page + "&state=FAILURE", "flower": q + "&state=FAILURE"}),
            ("sort_by=-received", {"celeriac": page + "&sort_by=-received",
                                   "flower": q + "&sort_by=-received"}),
            ("Flower API, first 50", {"celeriac": q}),
            ("Flower API, state=FAILURE", {"celeriac": q + "&state=FAILURE"}),
            ("Flower API, sort_by=-received", {"celeriac": q + "&sort_by=-received"}),
            ("count read", {"celeriac": "/api/dashboard/overview", "flower": "/metrics"}),
        ]
        out: dict[str, dict[str, Any]] = {s.name: {} for s in self.sides}
        for label, paths in queries:
            sides = [s for s in self.sides if s.name in paths]
            times: dict[str, list[float]] = {s.name: [] for s in sides}
            checks: dict[str, str] = {}
            cpu0 = {s.name: s.cpu() for s in sides}
            given_up: set[str] = set()
            for _ in range(self.args.requests):
                for side in sides:
                    if side.name in given_up:
                        continue
                    status, body, seconds = http_get(side.base + paths[side.name], timeout=30)
                    if status == 0:
                        given_up.add(side.name)
                        checks[side.name] = "no answer within 30 s: given up"
                        continue
                    times[side.name].append(seconds)
                    if label != "count read":
                        checks.setdefault(side.name, _check(status, body, label))
            for side in sides:
                ts = sorted(times[side.name])
                if not ts:
                    out[side.name][label] = {"path": paths[side.name], "check": checks[side.name]}
                    continue
                out[side.name][label] = {
                    "path": paths[side.name], "median_ms": statistics.median(ts) * 1000,
                    "p95_ms": ts[max(0, math.ceil(0.95 * len(ts)) - 1)] * 1000, "n": len(ts),
                    "cpu_per_request": (side.cpu() - cpu0[side.name]) / len(ts),
                    "check": checks.get(side.name, "")}
        self.results["pages"] = out

    def flat_out(self) -> None:
        args = self.args
        n = args.flat_out_tasks
        before = {s.name: s.count() or 0.0 for s in self.sides}
        for side in self.sides:
            side.baseline = before[side.name]
        cpu0 = {s.name: cpu_seconds(s.proc.pid) for s in self.sides if s.proc}
        self.last_moved = {}
        profilers = self._start_profilers() if args.profile else []
        t0 = time.perf_counter()
        gen = Generator(self.url, n, 0, args.workers)
        final = gen.wait(300)
        target = final["task_events"]
        reached = self._watch("flat_out", gen, t0, target=target, every=args.poll / 2,
                              timeout=max(args.catch_up, n / 1000))
        for proc, path in profilers:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            self.notes.append(f"py-spy profile of the flat-out phase: {os.path.relpath(path)}")
        self._delivery("flat-out", final)
        out = {"published": target, "generator_seconds": final["elapsed"],
               "offered_rate": target / final["elapsed"], "sides": {}}
        for side in self.sides:
            last = side.samples[-1]
            got = last["ingested"] or 0.0
            # a side that never got them all (it dropped some) is timed to its last event
            done_at = reached[side.name] or self.last_moved.get(side.name, (0.0, 0.0))[1]
            out["sides"][side.name] = {
                "ingested": got, "seconds": done_at,
                "rate": got / done_at if done_at else math.nan,
                "cpu_seconds": last["cpu"] - cpu0[side.name],
                "cpu_per_10k": (last["cpu"] - cpu0[side.name]) / got * 10_000 if got else math.nan,
                "caught_up": reached[side.name] is not None,
                "own_stats": side.ingest_stats()}
        self.results["phases"]["flat_out"] = out

    def _delivery(self, phase: str, final: dict[str, Any]) -> None:
        """Say when Redis handed a batch to fewer monitors than run: one was not
        subscribed then (its connection was being made again), so it never had it."""
        missing = final["task_events"] * len(self.sides) - final["delivered"]
        if missing:
            self.notes.append(f"{phase} phase: {missing:,} task events were published while "
                              f"a monitor was not subscribed (PUBLISH receiver counts)")

    def _start_profilers(self) -> list[tuple[subprocess.Popen[bytes], str]]:
        """py-spy on each side (all threads, collapsed stacks), stopped by SIGINT."""
        out = []
        for side in self.sides:
            assert side.proc is not None
            path = os.path.join(common.RESULTS_DIR, f"dashboard-profile-{side.name}.txt")
            proc = subprocess.Popen(
                ["py-spy", "record", "--pid", str(side.proc.pid), "--format", "raw",
                 "--rate", "200", "--threads", "--idle", "-o", path],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out.append((proc, path))
        time.sleep(1.0)  # py-spy attaches
        return out

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> None:
        self.start_redis()
        self.make_sides()
        try:
            self.wait_ready()
            self.warm_up()
            self.offered()
            self.pages()
            if self.args.flat_out_tasks:
                self.flat_out()
        finally:
            for side in self.sides:
                self.results.setdefault("samples", {})[side.name] = side.samples
                side.stop()
            if self.redis is not None:
                self.redis.terminate()
                self.redis.wait(10)
            shutil.rmtree(self.scratch, ignore_errors=True)


def _hwm_kb(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def _minus(a: float | None, b: float) -> float | None:
    return None if a is None else a - b


def _check(status: int, body: bytes, label: str) -> str:
    """What one answer held: 'ok 50 rows', or what was wrong with it."""
    if status != 200:
        return f"HTTP {status}: {body[:120]!r}"
    try:
        data = json.loads(body)
    except ValueError:
        return "not JSON"
    rows = data["tasks"] if isinstance(data, dict) and "tasks" in data else list(data.values())
    if "state=" in label and any(r.get("state") != "FAILURE" for r in rows):
        return f"{len(rows)} rows, some not FAILURE"
    total = f" of {data['total']:,}" if isinstance(data, dict) and "total" in data else ""
    return f"ok {len(rows)} rows{total}"


# -- the report ----------------------------------------------------------------------------
def _f(v: Any, spec: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, spec)


def _ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b or any(isinstance(x, float) and math.isnan(x)
                                              for x in (a, b)):
        return "—"
    return f"{a / b:.2f}×"


def build_report(bench: Bench, command: str, started: _dt.datetime, wall: float) -> str:
    r = bench.results
    rows: list[tuple[str, Any, Any, str, str]] = []

    def row(label: str, a: Any, b: Any, better: str, spec: str = ",.0f") -> None:
        rows.append((label, _f(a, spec), _f(b, spec), _ratio(a, b), better))

    def get(d: dict[str, Any], name: str, *keys: str) -> Any:
        for k in (name, *keys):
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    off = r["phases"].get("offered", {})
    flat = r["phases"].get("flat_out", {})
    s_off, s_flat = off.get("sides", {}), flat.get("sides", {})
    rate = bench.args.rate
    row(f"Task events/s taken in, {rate:,.0f}/s offered (N {off.get('published', 0):,} "
        f"events, at stop + {bench.args.grace:g} s)",
        get(s_off, "celeriac", "rate_at_grace"), get(s_off, "flower", "rate_at_grace"),
        "higher")
    row(f"Lag at stop + {bench.args.grace:g} s, events behind", get(s_off, "celeriac", "lag_events"),
        get(s_off, "flower", "lag_events"), "lower")
    row("Lag at stop + grace, seconds of stream", get(s_off, "celeriac", "lag_seconds"),
        get(s_off, "flower", "lag_seconds"), "lower", ".2f")
    caught = [f"≤ {bench.args.grace:g}" if get(s_off, n, "lag_events") == 0
              else _f(get(s_off, n, "caught_up_after"), ".1f") for n in ("celeriac", "flower")]
    rows.append(("Caught up, s after the generator stopped", caught[0], caught[1], "—", "lower"))
    row(f"Task events/s taken in, flat out (offered {_f(flat.get('offered_rate'))}/s, "
        f"N {flat.get('published', 0):,})", get(s_flat, "celeriac", "rate"),
        get(s_flat, "flower", "rate"), "higher")
    for phase, sides in (("offered", s_off), ("flat out", s_flat)):
        stats = get(sides, "celeriac", "own_stats") or {}
        if stats.get("events_dropped"):
            bench.notes.append(f"celeriac dropped {stats['events_dropped']:,} events in the "
                               f"{phase} phase (its receive buffer was full)")
    for m in RSS_MARKS:
        if m <= bench.args.tasks:
            a, b = (get(r["rss"], n, str(m), "rss_kb") for n in ("celeriac", "flower"))
            row(f"RSS after {m:,} tasks, MB", a and a / 1024, b and b / 1024, "lower", ",.1f")
    a, b = (get(r["rss"], n, "end", "rss_kb") for n in ("celeriac", "flower"))
    row(f"RSS at the end of the offered-rate phase ({bench.args.tasks:,} tasks published), MB",
        a and a / 1024, b and b / 1024, "lower", ",.1f")
    a, b = (get(r["rss"], n, "hwm_kb") for n in ("celeriac", "flower"))
    row("Peak RSS (VmHWM) in the offered-rate phase, MB", a and a / 1024, b and b / 1024,
        "lower", ",.1f")
    row(f"CPU s per 10k events at {rate:,.0f}/s", get(s_off, "celeriac", "cpu_per_10k"),
        get(s_off, "flower", "cpu_per_10k"), "lower", ".2f")
    net = []
    for name in ("celeriac", "flower"):
        side = next((x for x in bench.sides if x.name == name), None)
        per = get(r.get("pages", {}), name, "count read", "cpu_per_request")
        cpu, events = get(s_off, name, "cpu_seconds"), get(s_off, name, "ingested_total")
        reads = sum(1 for x in (side.samples if side else []) if x["phase"] == "offered")
        net.append((cpu - per * reads) / events * 10_000 if None not in (per, cpu) and events
                   else None)
    row("… less the harness's count reads (CPU of one, measured idle, × reads)", net[0],
        net[1], "lower", ".2f")
    row("CPU s per 10k events, flat out", get(s_flat, "celeriac", "cpu_per_10k"),
        get(s_flat, "flower", "cpu_per_10k"), "lower", ".2f")
    pages = r.get("pages", {})
    for label in ("first 50", "state=FAILURE", "sort_by=-received"):
        for stat in ("median_ms", "p95_ms"):
            row(f"Tasks page, {label}, {stat[:-3]} ms (celeriac /api/dashboard/tasks, Flower "
                f"/api/tasks)", get(pages, "celeriac", label, stat),
                get(pages, "flower", label, stat), "lower", ".1f")
    for stat in ("median_ms", "p95_ms"):
        row(f"The harness's count read, {stat[:-3]} ms (celeriac /api/dashboard/overview, "
            f"Flower /metrics)", get(pages, "celeriac", "count read", stat),
            get(pages, "flower", "count read", stat), "lower", ".1f")
    for label in ("first 50", "state=FAILURE", "sort_by=-received"):
        for stat in ("median_ms", "p95_ms"):
            row(f"Flower's /api/tasks, {label}, {stat[:-3]} ms",
                get(pages, "celeriac", f"Flower API, {label}", stat),
                get(pages, "flower", label, stat), "lower", ".1f")

    for side in bench.sides:
        if side.asked:
            bench.notes.append(
                f"{side.name} answered {len(side.asked)} count requests of the harness "
                f"({'/api/dashboard/overview' if side.name == 'celeriac' else '/metrics'}) in "
                f"{sum(side.asked):.1f} s, median {statistics.median(side.asked) * 1000:.0f} ms")
    out = [f"# celeriac dashboard vs Flower on one event stream — {started:%Y-%m-%d %H:%M %Z}",
           ""]
    out.append(f"- Command: `{command}` (wall time {wall / 60:.1f} min)")
    out.append(f"- Machine: nproc {os.cpu_count()}; {platform.system()} {platform.release()}; "
               f"Python {platform.python_version()}; redis-server {r.get('redis_version')} "
               f"(private, port {bench.redis_port}); flower {_version('flower')}, celery "
               f"{_version('celery')}; celeriac {_source()}")
    out.append(f"- Stream: {bench.args.workers} fake workers (bench/event_stream.py), 3 task "
               f"events a task, 1 in 20 failed, `task.multi` batches of ≤ 100 events; "
               f"--max-tasks {bench.args.max_tasks:,} on both")
    out += [f"- {note}" for note in bench.notes]
    out += ["", "| metric | celeriac | Flower | celeriac / Flower | better |",
            "|---|---:|---:|---:|---|"]
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    checks = [f"{n} {label}: {v['check']}" for n, kinds in pages.items()
              for label, v in kinds.items() if v.get("check")]
    if checks:
        out += ["", "Answers checked (first request of each): " + "; ".join(checks) + "."]
    return "\n".join(out) + "\n"


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _source() -> str:
    """The commit, and whether celeriac/ differed from it (others commit as we run)."""
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h %cd", "--date=iso"],
                              cwd=HERE, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../celeriac"],
                               cwd=HERE, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head.strip() + (" + uncommitted changes in celeriac/" if dirty.strip() else "")


def _load(when: str) -> str:
    return f"load average {when} the run: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000,
                        help="tasks at the offered rate (3 events each); 1000000 for the "
                             "RSS after 1M tasks (about 11 min at 5,000/s)")
    parser.add_argument("--rate", type=float, default=5000.0, help="task events/s offered")
    parser.add_argument("--flat-out-tasks", type=int, default=30_000,
                        help="tasks published flat out after the pages are timed (0: skip)")
    parser.add_argument("--workers", type=int, default=8, help="fake workers in the fleet")
    parser.add_argument("--max-tasks", type=int, default=100_000,
                        help="--max-tasks of both monitors")
    parser.add_argument("--requests", type=int, default=50, help="GETs per tasks-page query")
    parser.add_argument("--poll", type=float, default=2.0,
                        help="seconds between the harness's readings of both sides (each "
                             "costs celeriac a store.counts(): do not read too often)")
    parser.add_argument("--grace", type=float, default=1.0,
                        help="seconds after the generator stops before lag is read")
    parser.add_argument("--catch-up", type=float, default=120.0,
                        help="seconds a side may take to catch up after the stream stops")
    parser.add_argument("--only", choices=SIDES, help="one side only")
    parser.add_argument("--celeriac-loglevel", help="the dashboard's -l (its log is in "
                        "bench/results/logs/dashboard-celeriac.log)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy each side in the flat-out phase (pip install py-spy); "
                             "collapsed stacks in bench/results/dashboard-profile-*.txt")
    parser.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "dashboard.md"))
    args = parser.parse_args()
    command = common.command_line()
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    bench = Bench(args)
    # `timeout` and CI stop with SIGTERM: still stop the sides and write what was measured
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench.notes.append(_load("before"))
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    bench.notes.append(_load("after"))
    report = build_report(bench, command, started, time.perf_counter() - t0)
    common.write_report(report, args.out, bench.results)


if __name__ == "__main__":
    main()
