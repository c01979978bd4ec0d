"""celeriac vs Celery 5 on Redis, side by side: enqueue rate, drain rate, round trip.

    python bench/run.py [--tasks 20000] [--latency-samples 1000] [--only celeriac|celery]

See bench/README.md for what is measured and how to read the table. Everything runs on
this machine against one Redis server; the two systems take turns, with the same N.
Producers, latency clients and workers are separate processes, started the way a user
would start them (workers through their own CLI).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import common

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = common.RESULTS_DIR
LOG_DIR = os.path.join(RESULTS_DIR, "logs")

SYSTEMS = common.SYSTEMS
NAMES = {"celeriac": "celeriac", "celery": "Celery"}
MODULES = {"celeriac": "bench_tasks_celeriac", "celery": "bench_tasks_celery"}
QUEUE = "celery"  # both write kombu's list named after the default queue
META_PREFIX = b"celery-task-meta-"

# The drain runs, in the order they are made: the two systems alternate, pool by pool.
# (system, pool, concurrency)
DRAIN_PLAN = [
    ("celeriac", "prefork", 2),
    ("celery", "prefork", 2),
    ("celeriac", "threads", 2),
    ("celery", "threads", 2),
    ("celery", "threads", 8),
    ("celeriac", "solo", 1),
    ("celery", "solo", 1),
]
LATENCY_POOL = ("prefork", 2)
WARMUP = 50


# -- helpers run in their own process -------------------------------------------------------
def _import_task(system: str) -> Any:
    sys.path.insert(0, HERE)
    module = __import__(MODULES[system])
    return module.add


# -- the harness ------------------------------------------------------------------------------
@dataclass
class DrainRun:
    system: str
    pool: str
    concurrency: int
    n: int
    enqueue_rate: float = 0.0
    start_to_first: float = math.nan
    start_to_done: float = math.nan
    first_to_done: float = math.nan
    drained: int = 0  # results stored after the first poll that saw any
    rate: float = math.nan
    stop_seconds: float = math.nan
    ok: bool = False
    problems: list[str] = field(default_factory=list)  # the run does not count
    warnings: list[str] = field(default_factory=list)  # it counts, but read with care

    @property
    def label(self) -> str:
        return f"{self.pool} -c {self.concurrency}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import redis

        self.args = args
        self.n: int = args.tasks
        self.db: int = args.db
        self.url = args.redis_url
        from redis.backoff import ConstantBackoff
        from redis.retry import Retry

        # Ride out a dropped connection (another test suite on this Redis may CLIENT
        # KILL everyone) instead of losing the run.
        def client(db: int) -> Any:
            return redis.Redis.from_url(
                f"{self.url}/{db}", retry=Retry(ConstantBackoff(0.05), 40),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError, OSError])

        self.broker = client(self.db)
        self.results = client(self.db + 1)
        self.env = dict(os.environ, BENCH_REDIS_DB=str(self.db), BENCH_REDIS_URL=self.url)
        self.env.pop("PYTHONPATH", None)
        self.poll = args.poll_ms / 1000.0
        self.drains: list[DrainRun] = []
        self.latency: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        # What a script built on this harness changes: the file its helpers run, the
        # directory its workers and helpers start in, its apps and their names in the logs.
        self.script = os.path.abspath(__file__)
        self.workdir = HERE
        self.modules = MODULES
        self.names = NAMES
        self.log_prefix = ""
        self.min_drain_timeout = 120.0  # seconds a drain run may take, at least
        os.makedirs(LOG_DIR, exist_ok=True)

    # -- small things ---------------------------------------------------------------------
    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def ping_rtt(self) -> str:
        """Median and p90 of a PING from here: how fast this machine's loopback is now."""
        self.broker.ping()
        samples = []
        for _ in range(2000):
            t0 = time.perf_counter()
            self.broker.ping()
            samples.append((time.perf_counter() - t0) * 1e6)
        samples.sort()
        return f"median {_percentile(samples, 50):.0f} µs, p90 {_percentile(samples, 90):.0f} µs"

    def stored(self) -> int:
        """How many results are stored now: what a drain run polls."""
        return int(self.results.dbsize())

    def flush(self) -> None:
        self.broker.flushdb()
        self.results.flushdb()

    def busy(self) -> list[str]:
        """Processes that compete for the CPU: test suites, workers not started by us."""
        out = []
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if ("pytest" in cmd or " worker" in cmd and ("celery" in cmd or "celeriac" in cmd)) \
                    and "bench/run.py" not in cmd:
                out.append(f"{entry}: {cmd[:100]}")
        return out

    def strangers(self) -> list[str]:
        """Other clients that have one of our databases selected (a stray worker?)."""
        mine = {self.broker.client_id(), self.results.client_id()}
        out = []
        for c in self.broker.client_list():
            if int(c.get("db", -1)) in (self.db, self.db + 1) and int(c["id"]) not in mine:
                out.append(f"{c.get('addr')} db={c.get('db')} cmd={c.get('cmd')}")
        return out

    def cli(self, system: str) -> list[str]:
        name = "celeriac" if system == "celeriac" else "celery"
        beside = os.path.join(os.path.dirname(sys.executable), name)
        if os.path.exists(beside):
            return [beside]
        found = shutil.which(name)
        if found:
            return [found]
        return [sys.executable, "-m", name]

    def helper(self, *argv: str, timeout: float) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, self.script, *argv], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    # -- workers ----------------------------------------------------------------------------
    def start_worker(self, system: str, pool: str, concurrency: int,
                     tag: str) -> tuple[subprocess.Popen[bytes], Any]:
        cmd = [*self.cli(system), "-A", self.modules[system], "worker", "-l", "warning",
               "-c", str(concurrency), "-P", pool]
        # closed by stop_worker, once the worker is gone
        logfile = open(os.path.join(LOG_DIR, f"{self.log_prefix}{tag}.log"), "wb")  # noqa: SIM115
        logfile.write((" ".join(cmd) + "\n").encode())
        logfile.flush()
        proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=logfile,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        return proc, logfile

    def stop_worker(self, proc: subprocess.Popen[bytes], logfile: Any) -> tuple[float, list[str]]:
        """SIGTERM, a grace period, then SIGKILL to the whole group; returns (seconds, notes)."""
        notes: list[str] = []
        started = time.perf_counter()
        pgid = proc.pid  # start_new_session: the worker leads its own group
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=self.args.grace)
        except subprocess.TimeoutExpired:
            notes.append(f"no exit {self.args.grace:g}s after SIGTERM; SIGKILLed")
            _killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        seconds = time.perf_counter() - started
        # Anything left in the group (pool children outliving their parent) goes too.
        if _group_alive(pgid):
            deadline = time.monotonic() + self.args.grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(pgid):
                notes.append("pool processes outlived the worker; SIGKILLed")
                _killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while _group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _group_alive(pgid):
                    raise RuntimeError(f"worker process group {pgid} is still alive")
        logfile.close()
        return seconds, notes

    # -- checks -------------------------------------------------------------------------------
    def verify_results(self, n: int) -> list[str]:
        """Every result is SUCCESS and the values are exactly {2i for i < n}."""
        problems = []
        keys = [k for k in self.results.scan_iter(count=2000)]
        others = [k for k in keys if not k.startswith(META_PREFIX)]
        if others:
            problems.append(f"{len(others)} unexpected keys in the result db, e.g. {others[0]!r}")
        metas = [k for k in keys if k.startswith(META_PREFIX)]
        values: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for i in range(0, len(metas), 1000):
            for raw in self.results.mget(metas[i:i + 1000]):
                if raw is None:
                    states["<expired>"] += 1
                    continue
                meta = json.loads(raw)
                states[meta.get("status")] += 1
                values[json.dumps(meta.get("result"), sort_keys=True)] += 1
        if states != Counter({"SUCCESS": n}):
            problems.append(f"result states {dict(states)} (expected {n} SUCCESS)")
            for k in metas:
                raw = self.results.get(k)
                if raw and json.loads(raw).get("status") != "SUCCESS":
                    problems.append(f"e.g. {raw[:300]!r}")
                    break
        if values != Counter(json.dumps(2 * i) for i in range(n)):
            problems.append("result values are not exactly {2i : i < N}")
        left = self.broker.llen(QUEUE)
        if left:
            problems.append(f"{left} messages still in the queue")
        return problems

    # -- the three measurements ------------------------------------------------------------------
    def enqueue(self, system: str) -> float:
        self.flush()
        out = self.helper("_produce", system, str(self.n), timeout=max(300, self.n / 20))
        queued = self.broker.llen(QUEUE)
        if queued != self.n:
            raise RuntimeError(f"{system}: {queued} messages queued after sending {self.n}")
        return self.n / out["seconds"]

    def drain(self, system: str, pool: str, concurrency: int, round_no: int) -> DrainRun:
        run = DrainRun(system, pool, concurrency, self.n)
        strangers = self.strangers()
        if strangers:
            run.warnings.append(f"other clients on the bench dbs: {strangers}")
        busy = self.busy()
        if busy:
            run.warnings.append(_busy_note(busy))
        run.enqueue_rate = self.enqueue(system)
        self.log(f"{self.names[system]:8} {run.label:14} enqueue {run.enqueue_rate:8.0f} tasks/s")
        tag = f"drain-{system}-{pool}-{concurrency}-r{round_no}"
        poll, n = self.poll, self.n
        timeout = max(self.min_drain_timeout, n / 50)
        t_start = time.perf_counter()
        proc, logfile = self.start_worker(system, pool, concurrency, tag)
        t_first = None
        first_count = 0
        count = 0
        try:
            while True:
                count = self.stored()
                now = time.perf_counter()
                if count and t_first is None:
                    t_first, first_count = now, count
                if count >= n:
                    t_done = now
                    break
                if now - t_start > timeout:
                    raise TimeoutError
                if proc.poll() is not None:
                    raise ChildProcessError
                time.sleep(poll)
        except TimeoutError:
            run.problems.append(f"timed out after {timeout:.0f}s with {count}/{n} results")
        except ChildProcessError:
            run.problems.append(f"worker exited ({proc.returncode}) with {count}/{n} results; "
                                f"see {os.path.relpath(logfile.name)}")
        else:
            assert t_first is not None
            run.start_to_first = t_first - t_start
            run.start_to_done = t_done - t_start
            run.first_to_done = t_done - t_first
            run.drained = n - first_count
            run.rate = (run.drained / run.first_to_done if run.first_to_done > 0
                        else math.inf)
        finally:
            run.stop_seconds, notes = self.stop_worker(proc, logfile)
            run.warnings += notes
        if not run.problems:
            run.problems += self.verify_results(n)
        run.ok = not math.isnan(run.rate) and not run.problems
        self.log(f"{self.names[system]:8} {run.label:14} drain   {run.rate:8.0f} tasks/s "
                 f"(start->done {run.start_to_done:.2f}s, stop {run.stop_seconds:.2f}s)"
                 + (f"  PROBLEMS: {run.problems}" if run.problems else "")
                 + (f"  warnings: {run.warnings}" if run.warnings else ""))
        self.drains.append(run)
        return run

    def round_trip(self, system: str, samples: int | None = None,
                   warmup: int = WARMUP) -> dict[str, Any]:
        """Time K round trips on an idle worker (K: ``samples``, else --latency-samples)."""
        k = self.args.latency_samples if samples is None else samples
        self.flush()
        busy = self.busy()
        if busy:
            self.notes.append(f"round trip {self.names[system]}: {_busy_note(busy)}")
        pool, concurrency = LATENCY_POOL
        proc, logfile = self.start_worker(system, pool, concurrency, f"latency-{system}")
        problems: list[str] = []
        try:
            out = self.helper("_latency", system, str(k), str(warmup), "60",
                              timeout=120 + (k + warmup) * 10)
        finally:
            _, notes = self.stop_worker(proc, logfile)
            problems += notes
        self.notes += [f"round trip {self.names[system]}: {p}" for p in problems]
        ms = sorted(s * 1000 for s in out["samples"])
        stats = {
            "p50": _percentile(ms, 50), "p99": _percentile(ms, 99),
            "mean": statistics.fmean(ms), "min": ms[0], "max": ms[-1], "k": len(ms),
            "ready_after": out["ready_after"], "problems": problems,
        }
        self.log(f"{self.names[system]:8} round trip p50 {stats['p50']:.3f} ms, p99 "
                 f"{stats['p99']:.3f} ms, mean {stats['mean']:.3f} ms")
        self.latency[system] = stats
        return stats

    # -- the whole run ----------------------------------------------------------------------
    def run(self) -> None:
        systems = [self.args.only] if self.args.only else list(SYSTEMS)
        plan = [step for step in DRAIN_PLAN if step[0] in systems]
        for round_no in range(1, self.args.repeat + 1):
            # Later rounds reverse the order so neither system always goes first.
            steps = plan if round_no % 2 else _reverse_pairs(plan)
            for system, pool, concurrency in steps:
                self.drain(system, pool, concurrency, round_no)
        lat_order = systems if self.args.repeat % 2 else list(reversed(systems))
        if self.args.latency_samples > 0:
            for system in lat_order:
                self.round_trip(system)
        self.flush()


def _busy_note(busy: list[str]) -> str:
    return (f"machine not idle: {len(busy)} other process(es) at the start, e.g. "
            f"`{busy[-1].split(': ', 1)[1][:70]}`")


def _reverse_pairs(plan: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The plan with, for each pool, the other system first."""
    by_pool: dict[str, list[tuple[str, str, int]]] = {}
    for step in plan:
        by_pool.setdefault(step[1], []).append(step)
    out = []
    for steps in by_pool.values():
        out += sorted(steps, key=lambda s: (s[0] != "celery", s[2]))
    return out


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in the group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# -- the report ------------------------------------------------------------------------------
def _fmt_rate(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:,.0f}"


def _fmt_s(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.2f}"


def _fmt_ms(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def build_report(bench: Bench, command: str, started: _dt.datetime, wall: float) -> str:
    drains = bench.drains
    n_rounds = bench.args.repeat

    def runs(system: str, pool: str | None = None, c: int | None = None) -> list[DrainRun]:
        return [r for r in drains if r.system == system and (pool is None or r.pool == pool)
                and (c is None or r.concurrency == c)]

    def med(system: str, pool: str, c: int, attr: str) -> float:
        return _median([getattr(r, attr) for r in runs(system, pool, c) if r.ok])

    rows: list[tuple[str, str, str, str, str]] = []
    enq = {s: _median([r.enqueue_rate for r in runs(s)]) for s in SYSTEMS}
    enq_n = {s: len(runs(s)) for s in SYSTEMS}
    rows.append(((f"Enqueue rate, tasks/s (1 producer; median of {enq_n['celeriac']} / "
                  f"{enq_n['celery']} runs)"), _fmt_rate(enq["celeriac"]),
                 _fmt_rate(enq["celery"]), _ratio(enq["celeriac"], enq["celery"]), "higher"))
    pools = [("prefork", 2, 2), ("threads", 2, 2), ("threads", None, 8), ("solo", 1, 1)]
    for pool, c_ours, c_theirs in pools:
        ours = med("celeriac", pool, c_ours, "rate") if c_ours else math.nan
        theirs = med("celery", pool, c_theirs, "rate")
        label = f"{pool} -c {c_theirs}" if pool != "solo" else "solo"
        rows.append((f"Drain rate, {label}, tasks/s", _fmt_rate(ours), _fmt_rate(theirs),
                     _ratio(ours, theirs) if c_ours else "—", "higher"))
    best: dict[str, tuple[float, str]] = {}
    for s in SYSTEMS:
        cands = {(r.pool, r.concurrency) for r in runs(s)}
        scored = [(med(s, p, c, "rate"), f"{p} -c {c}" if p != "solo" else "solo")
                  for p, c in cands]
        scored = [x for x in scored if not math.isnan(x[0])]
        best[s] = max(scored) if scored else (math.nan, "")
    rows.append(("**Drain rate, best pool, tasks/s**",
                 f"**{_fmt_rate(best['celeriac'][0])}** ({best['celeriac'][1]})"
                 if best["celeriac"][1] else "—",
                 f"**{_fmt_rate(best['celery'][0])}** ({best['celery'][1]})"
                 if best["celery"][1] else "—",
                 f"**{_ratio(best['celeriac'][0], best['celery'][0])}**", "higher"))
    for pool, c_ours, c_theirs in pools:
        ours = med("celeriac", pool, c_ours, "start_to_done") if c_ours else math.nan
        theirs = med("celery", pool, c_theirs, "start_to_done")
        label = f"{pool} -c {c_theirs}" if pool != "solo" else "solo"
        rows.append((f"Worker start → all {bench.n:,} done, {label}, s", _fmt_s(ours),
                     _fmt_s(theirs), _ratio(ours, theirs) if c_ours else "—", "lower"))
    lat = bench.latency
    for key, name in (("p50", "p50"), ("p99", "p99"), ("mean", "mean")):
        a = lat.get("celeriac", {}).get(key, math.nan)
        b = lat.get("celery", {}).get(key, math.nan)
        k = bench.args.latency_samples
        rows.append((f"Round trip `delay().get()`, {name}, ms (prefork -c 2, K={k})",
                     _fmt_ms(a), _fmt_ms(b), _ratio(a, b), "lower"))

    out = []
    out.append(f"# celeriac vs Celery on Redis — {started:%Y-%m-%d %H:%M %Z}".rstrip())
    out.append("")
    out.append(f"- Command: `{command}` (wall time {wall / 60:.1f} min)")
    out.append(f"- Machine: {machine_line(bench)}")
    out.append(f"- N = {bench.n:,} tasks per drain run, {n_rounds} round(s); broker db "
               f"{bench.db}, result db {bench.db + 1}; DBSIZE polled every "
               f"{bench.args.poll_ms:g} ms")
    out.append("")
    out.append("| metric | celeriac | Celery | celeriac / Celery | better |")
    out.append("| --- | ---: | ---: | ---: | :---: |")
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("Ratios are celeriac ÷ Celery. For rates higher is better (2.00× = twice "
               "as fast); for times and latency lower is better (0.50× = half the time).")
    out.append("")
    out.append("## Every drain run")
    out.append("")
    out.append("| system | pool | round | enqueue/s | drain/s | start→first result s | "
               "first→last s | start→done s | stop s | check |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in drains:
        rnd = 1 + sum(1 for x in drains[:drains.index(r)]
                      if (x.system, x.pool, x.concurrency) == (r.system, r.pool, r.concurrency))
        check = "ok" if r.ok else "FAILED: " + ("; ".join(r.problems) or "no rate")
        if r.warnings:
            check += " (" + "; ".join(r.warnings) + ")"
        out.append(f"| {NAMES[r.system]} | {r.label} | {rnd} | {_fmt_rate(r.enqueue_rate)} | "
                   f"{_fmt_rate(r.rate)} | {_fmt_s(r.start_to_first)} | "
                   f"{_fmt_s(r.first_to_done)} | {_fmt_s(r.start_to_done)} | "
                   f"{_fmt_s(r.stop_seconds)} | {check} |")
    if lat:
        out.append("")
        out.append("## Round trip detail (ms)")
        out.append("")
        out.append("| system | min | p50 | p99 | mean | max | worker ready after s |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for s in SYSTEMS:
            if s in lat:
                L = lat[s]
                out.append(f"| {NAMES[s]} | {_fmt_ms(L['min'])} | {_fmt_ms(L['p50'])} | "
                           f"{_fmt_ms(L['p99'])} | {_fmt_ms(L['mean'])} | {_fmt_ms(L['max'])} | "
                           f"{_fmt_s(L['ready_after'])} |")
    if bench.notes:
        out.append("")
        out += [f"- {note}" for note in bench.notes]
    return "\n".join(out) + "\n"


def machine_line(bench: Bench) -> str:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = bench.broker.info("server")
    return (f"nproc {os.cpu_count()}{f' ({cpu})' if cpu else ''}; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}; redis-server "
            f"{info.get('redis_version')}; celery {version('celery')} (kombu "
            f"{version('kombu')}, billiard {version('billiard')}); celeriac "
            f"{version('celeriac')}; redis-py {version('redis')}")


def _conditions(when: str, bench: Bench) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{when} the run: load average {load}; Redis PING round trip from the "
            f"harness {bench.ping_rtt()}")


def main() -> None:
    if common.run_role(sys.argv, _import_task):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_run_options(parser, out="latest.md")
    parser.add_argument("--db", type=int, default=int(os.environ.get("BENCH_REDIS_DB", "10")),
                        help="broker db; results use db+1 (env BENCH_REDIS_DB, default 10)")
    args = parser.parse_args()
    command = common.command_line()
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    bench = Bench(args)
    bench.notes.append(_conditions("before", bench))
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    bench.notes.append(_conditions("after", bench))
    report = build_report(bench, command, started, time.perf_counter() - t0)
    common.write_report(report, args.out)


if __name__ == "__main__":
    main()
