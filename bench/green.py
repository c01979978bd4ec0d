"""Green pools side by side: 1,000 tasks that wait, on one worker, celeriac vs Celery.

    python bench/green.py [--tasks 1000] [--naps 1,0.1] [--repeat 1]

Each task is ``nap(seconds)``: it sleeps and returns ``seconds``, so the time is what the
pool's concurrency and the framework's overhead make of it (the floor is one nap). One
worker at a time, on the Redis server of bench/run.py (databases 5 and 6, flushed):

* celeriac ``-P gevent -c 1000``, celeriac ``-P eventlet -c 1000``,
  celeriac ``-P threads -c 100``, Celery ``-P gevent -c 1000``.

A run: flush, start the worker through its CLI, wait until it answers one task, then one
producer process sends the N naps and the harness polls DBSIZE of the result database;
the elapsed time is from the producer's first send to the poll that saw all N results
(so sending is counted, start-up is not). Every result is then checked (N, all SUCCESS,
all equal to the nap). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from run import (LOG_DIR, META_PREFIX, MODULES, NAMES, QUEUE, RESULTS_DIR, Bench,
                 _conditions, machine_line)

HERE = os.path.dirname(os.path.abspath(__file__))

# (system, pool, concurrency), run in this order for each nap length
PLAN = [
    ("celeriac", "gevent", 1000),
    ("celeriac", "eventlet", 1000),
    ("celeriac", "threads", 100),
    ("celery", "gevent", 1000),
]
BASELINE = ("celery", "gevent", 1000)


def _module(system: str) -> Any:
    sys.path.insert(0, HERE)
    return __import__(MODULES[system])


def role_ready(system: str, timeout: float) -> None:
    """Wait until the worker answers one task."""
    if _module(system).add.delay(-1, -1).get(timeout=timeout) != -2:
        raise SystemExit("the worker answered the readiness task wrongly")
    print(json.dumps({"ok": True}), flush=True)


def role_send(system: str, n: int, seconds: float) -> None:
    """Send ``n`` naps; print when the first one went (wall clock)."""
    nap = _module(system).nap
    first = time.time()
    for _ in range(n):
        nap.delay(seconds)
    print(json.dumps({"first": first, "sent": time.time()}), flush=True)


@dataclass
class Run:
    system: str
    pool: str
    concurrency: int
    nap: float
    n: int
    elapsed: float = math.nan
    send: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{NAMES[self.system]} -P {self.pool} -c {self.concurrency}"


class GreenBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bench = Bench(args)  # the Redis clients, worker start and stop of run.py
        self.runs: list[Run] = []

    def helper(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], cwd=HERE,
                                env=self.bench.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def one(self, system: str, pool: str, concurrency: int, seconds: float,
            round_no: int) -> Run:
        b, n = self.bench, self.args.tasks
        run = Run(system, pool, concurrency, seconds, n)
        b.flush()
        tag = f"green-{system}-{pool}-{concurrency}-{seconds:g}s-r{round_no}"
        proc, logfile = b.start_worker(system, pool, concurrency, tag)
        try:
            ready = self.helper("_ready", system, "60")
            out, err = ready.communicate(timeout=90)
            if ready.returncode != 0:
                raise RuntimeError(f"worker not ready: {err[-2000:]}")
            b.results.flushdb()
            sender = self.helper("_send", system, str(n), repr(seconds))
            timeout = max(120.0, 5 * n * seconds / concurrency + 60)
            started = time.monotonic()
            count = 0
            while True:
                count = b.results.dbsize()
                if count >= n:
                    done = time.time()
                    break
                if time.monotonic() - started > timeout:
                    run.problems.append(f"timed out with {count}/{n} results")
                    break
                if proc.poll() is not None:
                    run.problems.append(f"worker exited ({proc.returncode}) with "
                                        f"{count}/{n} results")
                    break
                time.sleep(b.poll)
            out, err = sender.communicate(timeout=120)
            if sender.returncode != 0:
                run.problems.append(f"producer failed: {err[-2000:]}")
            elif not run.problems:
                times = json.loads(out.strip().splitlines()[-1])
                run.elapsed = done - times["first"]
                run.send = times["sent"] - times["first"]
        finally:
            _, notes = b.stop_worker(proc, logfile)
            run.problems += [f"(stop) {note}" for note in notes]
        if not math.isnan(run.elapsed):
            run.problems += self.verify(n, seconds)
        b.log(f"{run.label:34} nap {seconds:g}s x {n}: "
              f"{run.elapsed:.2f}s (sending {run.send:.2f}s)"
              + (f"  PROBLEMS: {run.problems}" if run.problems else ""))
        self.runs.append(run)
        return run

    def verify(self, n: int, seconds: float) -> list[str]:
        results = self.bench.results
        keys = [k for k in results.scan_iter(count=2000) if k.startswith(META_PREFIX)]
        states: Counter[str] = Counter()
        values: Counter[str] = Counter()
        for i in range(0, len(keys), 1000):
            for raw in results.mget(keys[i:i + 1000]):
                meta = json.loads(raw) if raw else {}
                states[meta.get("status", "<missing>")] += 1
                values[json.dumps(meta.get("result"))] += 1
        problems = []
        if results.dbsize() != len(keys):
            problems.append("other keys in the result db: is something else using it?")
        if states != Counter({"SUCCESS": n}):
            problems.append(f"result states {dict(states)}, expected {n} SUCCESS")
        if values != Counter({json.dumps(seconds): n}):
            problems.append("some results are not the nap's length")
        if self.bench.broker.llen(QUEUE):
            problems.append("messages left in the queue")
        return problems

    def run(self) -> None:
        naps = [float(x) for x in self.args.naps.split(",")]
        for round_no in range(1, self.args.repeat + 1):
            for seconds in naps:
                for system, pool, concurrency in PLAN:
                    self.one(system, pool, concurrency, seconds, round_no)
        self.bench.flush()

    def report(self, command: str, started: _dt.datetime) -> str:
        naps = [float(x) for x in self.args.naps.split(",")]
        out = [f"# Green pools: {self.args.tasks:,} waiting tasks on one worker — "
               f"{started:%Y-%m-%d %H:%M %Z}".rstrip(), "",
               f"- Command: `{command}`", f"- Machine: {machine_line(self.bench)}",
               f"- {self.args.repeat} round(s); medians of the runs that passed every check",
               "", "| worker | nap | elapsed s (first send → last result) | sending s | "
               "÷ Celery gevent | check |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        for seconds in naps:
            base = self._median(*BASELINE, seconds)
            for system, pool, concurrency in PLAN:
                runs = [r for r in self.runs if (r.system, r.pool, r.concurrency, r.nap)
                        == (system, pool, concurrency, seconds)]
                elapsed = self._median(system, pool, concurrency, seconds)
                send = _median([r.send for r in runs if not r.problems])
                ratio = f"{elapsed / base:.2f}×" if base and not math.isnan(elapsed) else "—"
                problems = sorted({p for r in runs for p in r.problems})
                check = "ok" if not problems else "FAILED: " + "; ".join(problems)
                out.append(f"| {runs[0].label if runs else system} | {seconds:g} s | "
                           f"{_fmt(elapsed)} | {_fmt(send)} | {ratio} | {check} |")
        out += ["", "Lower is better. The floor is one nap: every task at once. The ratio "
                "is each worker's elapsed time ÷ Celery's gevent pool's, same nap."]
        return "\n".join(out) + "\n"

    def _median(self, system: str, pool: str, concurrency: int, seconds: float) -> float:
        return _median([r.elapsed for r in self.runs if not r.problems and
                        (r.system, r.pool, r.concurrency, r.nap)
                        == (system, pool, concurrency, seconds)])


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ready":
        role_ready(sys.argv[2], float(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_send":
        role_send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="naps per run")
    parser.add_argument("--naps", default="1,0.1", help="nap lengths in seconds, comma "
                        "separated")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians reported")
    parser.add_argument("--db", type=int, default=int(os.environ.get("BENCH_GREEN_DB", "5")),
                        help="broker db; results use db+1, both flushed (env BENCH_GREEN_DB, "
                        "default 5)")
    parser.add_argument("--redis-url", default=os.environ.get(
        "BENCH_REDIS_URL", "redis://127.0.0.1:6379"), help="Redis server, without a db")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="DBSIZE poll interval")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "green.md"))
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    started = _dt.datetime.now().astimezone()
    os.makedirs(LOG_DIR, exist_ok=True)
    bench = GreenBench(args)
    before = _conditions("before", bench.bench)
    try:
        bench.run()
    except KeyboardInterrupt:
        pass
    report = bench.report(command, started)
    report += f"\n- {before}\n- {_conditions('after', bench.bench)}\n"
    print(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report)
    print(f"written to {os.path.relpath(args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
