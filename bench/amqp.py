"""celeriac vs Celery 5 on RabbitMQ, side by side: enqueue rate, drain rate, round trip.

    python bench/amqp.py [--tasks 20000] [--latency-samples 1000] [--pools prefork:2,solo:1]

The same measurements as bench/run.py (whose harness this subclasses: the drain is timed
by its code, from the first result stored to the N-th, DBSIZE polled every 2 ms), with
the broker on RabbitMQ (``amqp://guest:guest@127.0.0.1:5672//``, a queue of the run's
own, ``q-amqp-bench-<hex>``, deleted at the end) and the results in Redis (db 4 by
default, **flushed** between runs; it must hold nothing but this bench's results).

- enqueue: one producer process, ``add.delay(i, i)`` N times, results not waited for;
  then the queue must hold exactly N messages (a passive declare).
- drain: one worker through its CLI (``-l warning``, each system's defaults otherwise),
  per pool; every result checked (N, all SUCCESS, values {2i}) and the queue empty.
- round trip: an idle ``prefork -c 2`` worker, one client, 50 warm-up calls, then K
  timed ``add.delay(i, i).get(timeout=10)``; p50/p99 nearest rank.

Ratios are celeriac / Celery. The apps are written into a scratch directory at start
(``amqpbench_celeriac.py``, ``amqpbench_celery.py``: one task ``add``), so that no
worker runs with ``bench/`` on its path (where this file would hide py-amqp).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Run as ``python bench/amqp.py``, this file's directory comes first on sys.path, and
# this module would stand in for py-amqp (``import amqp``) in everything imported later:
# it goes last instead, where bench/common.py is still found.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE] + [HERE]

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402

run = common.load_bench_module("run")

SYSTEMS = common.SYSTEMS
NAMES = {"celeriac": "celeriac", "celery": "Celery"}
MODULES = {"celeriac": "amqpbench_celeriac", "celery": "amqpbench_celery"}
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"

APP_SOURCE = '''\
"""bench/amqp.py's {system} app: one task on RabbitMQ, results in Redis."""
import os

from {package} import Celery

app = Celery("{module}", broker=os.environ["AMQP_BENCH_BROKER"],
             backend=os.environ["AMQP_BENCH_BACKEND"])
app.conf.task_default_queue = os.environ["AMQP_BENCH_QUEUE"]
{extra}

@app.task(name="amqpbench.add")
def add(x, y):
    return x + y
'''


def write_apps(directory: str) -> None:
    for system, module in MODULES.items():
        extra = ("app.conf.broker_connection_retry_on_startup = True"
                 if system == "celery" else "")
        with open(os.path.join(directory, f"{module}.py"), "w") as f:
            f.write(APP_SOURCE.format(system=NAMES[system], package=system, module=module,
                                      extra=extra))


# -- helpers run in their own process (cwd: the scratch directory) --------------------------
def _task(system: str) -> Any:
    return __import__(MODULES[system]).add


# -- RabbitMQ, seen from the harness ----------------------------------------------------------
def _rabbit(url: str) -> Any:
    import amqp
    from urllib.parse import unquote, urlparse

    u = urlparse(url)
    vhost = unquote(u.path[1:]) if u.path and u.path != "/" else "/"
    conn = amqp.Connection(host=f"{u.hostname or '127.0.0.1'}:{u.port or 5672}",
                           userid=unquote(u.username or "guest"),
                           password=unquote(u.password or "guest"),
                           virtual_host=vhost or "/", connect_timeout=5)
    conn.connect()
    return conn


class AMQPBench(run.Bench):  # type: ignore[name-defined,misc]
    """bench/run.py's harness with RabbitMQ as the broker: its drain and round trip as
    they are, the queue, the apps and the workers' directory made here."""

    def __init__(self, args: argparse.Namespace) -> None:
        # run.Bench talks to Redis dbs ``db`` (broker) and ``db + 1`` (results): here
        # only the results db is Redis; the broker handle is pointed at it too.
        args.db = args.result_db - 1
        super().__init__(args)
        self.broker = self.results
        self.amqp_url = args.amqp_url
        self.queue = f"q-amqp-bench-{uuid.uuid4().hex[:10]}"
        self.workdir = tempfile.mkdtemp(prefix="celeriac-amqp-bench-")
        write_apps(self.workdir)
        self.script = os.path.abspath(__file__)
        self.modules = MODULES
        self.log_prefix = "amqp-"
        self.env = dict(os.environ, PYTHONPATH=self.workdir, AMQP_BENCH_BROKER=self.amqp_url,
                        AMQP_BENCH_BACKEND=f"{self.url}/{args.result_db}",
                        AMQP_BENCH_QUEUE=self.queue)
        self.plan = [(s, p, c) for p, c in args.pools for s in SYSTEMS
                     if not args.only or s == args.only]
        self.rabbit_version = "?"
        conn = _rabbit(self.amqp_url)
        try:
            props = conn.server_properties or {}
            v = props.get("version")
            self.rabbit_version = v.decode() if isinstance(v, bytes) else str(v)
        finally:
            conn.close()

    # -- what differs from Redis -----------------------------------------------------------
    def flush(self) -> None:
        self.results.flushdb()

    def strangers(self) -> list[str]:
        mine = {self.results.client_id()}
        return [f"{c.get('addr')} db={c.get('db')} cmd={c.get('cmd')}"
                for c in self.results.client_list()
                if int(c.get("db", -1)) == self.args.result_db and int(c["id"]) not in mine]

    def busy(self) -> list[str]:
        # RabbitMQ's own server (beam.smp) matches run.py's test for a stray worker
        return [p for p in super().busy() if "beam.smp" not in p]

    def depth(self) -> int | None:
        """Messages ready in the queue; None when it does not exist."""
        conn = _rabbit(self.amqp_url)
        try:
            _, count, _ = conn.channel().queue_declare(self.queue, passive=True)
            return int(count)
        except Exception:  # noqa: BLE001 - NotFound: not declared yet
            return None
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def delete_queue(self) -> None:
        conn = _rabbit(self.amqp_url)
        try:
            for what in ("queue_delete", "exchange_delete"):
                try:
                    getattr(conn.channel(), what)(self.queue)
                except Exception:  # noqa: BLE001 - not there
                    pass
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def enqueue(self, system: str) -> float:
        self.flush()
        self.delete_queue()  # each run declares it afresh: nothing left from the last one
        out = self.helper("_produce", system, str(self.n), timeout=max(300, self.n / 20))
        # a producer without confirms (Celery's default) may exit a moment before
        # RabbitMQ counts its last messages
        deadline = time.monotonic() + 10
        queued = self.depth()
        while queued != self.n and time.monotonic() < deadline:
            time.sleep(0.05)
            queued = self.depth()
        if queued != self.n:
            raise RuntimeError(f"{system}: {queued} messages queued after sending {self.n}")
        return float(self.n / out["seconds"])

    def verify_results(self, n: int) -> list[str]:
        problems: list[str] = super().verify_results(n)
        left = self.depth()
        if left:
            problems.append(f"{left} messages still in {self.queue}")
        return problems

    def run(self) -> None:
        for round_no in range(1, self.args.repeat + 1):
            steps = self.plan if round_no % 2 else run._reverse_pairs(self.plan)
            for system, pool, concurrency in steps:
                self.drain(system, pool, concurrency, round_no)
        systems = [self.args.only] if self.args.only else list(SYSTEMS)
        if self.args.latency_samples > 0:
            for system in (systems if self.args.repeat % 2 else systems[::-1]):
                self.round_trip(system)
        self.flush()

    def close(self) -> None:
        self.delete_queue()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- the report ----------------------------------------------------------------------------
def build_report(bench: AMQPBench, command: str, started: _dt.datetime, wall: float) -> str:
    fmt_rate, fmt_s, fmt_ms, ratio, median = (run._fmt_rate, run._fmt_s, run._fmt_ms,
                                              run._ratio, run._median)

    def runs(system: str, pool: str | None = None, c: int | None = None) -> list[Any]:
        return [r for r in bench.drains if r.system == system
                and (pool is None or r.pool == pool) and (c is None or r.concurrency == c)]

    def med(system: str, pool: str, c: int, attr: str) -> float:
        return float(median([getattr(r, attr) for r in runs(system, pool, c) if r.ok]))

    rows = []
    enq = {s: median([r.enqueue_rate for r in runs(s)]) for s in SYSTEMS}
    rows.append(("Enqueue rate, tasks/s (1 producer; median of all runs)",
                 fmt_rate(enq["celeriac"]), fmt_rate(enq["celery"]),
                 ratio(enq["celeriac"], enq["celery"]), "higher"))
    for pool, c in bench.args.pools:
        label = "solo" if pool == "solo" else f"{pool} -c {c}"
        a, b = med("celeriac", pool, c, "rate"), med("celery", pool, c, "rate")
        rows.append((f"Drain rate, {label}, tasks/s", fmt_rate(a), fmt_rate(b), ratio(a, b),
                     "higher"))
    best: dict[str, tuple[float, str]] = {}
    for s in SYSTEMS:
        scored = [(med(s, p, c, "rate"), "solo" if p == "solo" else f"{p} -c {c}")
                  for p, c in bench.args.pools]
        scored = [x for x in scored if not math.isnan(x[0])]
        best[s] = max(scored) if scored else (math.nan, "")
    rows.append(("**Drain rate, best pool, tasks/s**",
                 f"**{fmt_rate(best['celeriac'][0])}** ({best['celeriac'][1]})",
                 f"**{fmt_rate(best['celery'][0])}** ({best['celery'][1]})",
                 f"**{ratio(best['celeriac'][0], best['celery'][0])}**", "higher"))
    for pool, c in bench.args.pools:
        label = "solo" if pool == "solo" else f"{pool} -c {c}"
        a = med("celeriac", pool, c, "start_to_done")
        b = med("celery", pool, c, "start_to_done")
        rows.append((f"Worker start → all {bench.n:,} done, {label}, s", fmt_s(a), fmt_s(b),
                     ratio(a, b), "lower"))
    lat = bench.latency
    for key in ("p50", "p99", "mean"):
        a = lat.get("celeriac", {}).get(key, math.nan)
        b = lat.get("celery", {}).get(key, math.nan)
        rows.append((f"Round trip `delay().get()`, {key}, ms (prefork -c 2, "
                     f"K={bench.args.latency_samples})", fmt_ms(a), fmt_ms(b), ratio(a, b),
                     "lower"))

    out = [f"# celeriac vs Celery on RabbitMQ — {started:%Y-%m-%d %H:%M %Z}".rstrip(), ""]
    out.append(f"- Command: `{command}` (wall time {wall / 60:.1f} min)")
    out.append(f"- Machine: {run.machine_line(bench)}; RabbitMQ {bench.rabbit_version}")
    out.append(f"- N = {bench.n:,} tasks per drain run, {bench.args.repeat} round(s); broker "
               f"{_masked(bench.amqp_url)} queue "
               f"`{bench.queue}`; results Redis db {bench.args.result_db}; DBSIZE polled "
               f"every {bench.args.poll_ms:g} ms")
    out += ["", "| metric | celeriac | Celery | celeriac / Celery | better |",
            "| --- | ---: | ---: | ---: | :---: |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "Ratios are celeriac ÷ Celery: for rates higher is better, for times lower.",
            "", "## Every drain run", "",
            "| system | pool | enqueue/s | drain/s | start→first result s | first→last s | "
            "start→done s | stop s | check |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in bench.drains:
        check = "ok" if r.ok else "FAILED: " + ("; ".join(r.problems) or "no rate")
        if r.warnings:
            check += " (" + "; ".join(r.warnings) + ")"
        out.append(f"| {NAMES[r.system]} | {r.label} | {fmt_rate(r.enqueue_rate)} | "
                   f"{fmt_rate(r.rate)} | {fmt_s(r.start_to_first)} | {fmt_s(r.first_to_done)}"
                   f" | {fmt_s(r.start_to_done)} | {fmt_s(r.stop_seconds)} | {check} |")
    if lat:
        out += ["", "## Round trip detail (ms)", "",
                "| system | min | p50 | p99 | mean | max | worker ready after s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in SYSTEMS:
            if s in lat:
                L = lat[s]
                out.append(f"| {NAMES[s]} | {fmt_ms(L['min'])} | {fmt_ms(L['p50'])} | "
                           f"{fmt_ms(L['p99'])} | {fmt_ms(L['mean'])} | {fmt_ms(L['max'])} | "
                           f"{fmt_s(L['ready_after'])} |")
    if bench.notes:
        out.append("")
        out += [f"- {note}" for note in bench.notes]
    return "\n".join(out) + "\n"


def _masked(url: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(url)
    return f"{u.scheme}://{u.hostname}:{u.port or 5672}{u.path}"


def main() -> None:
    if common.run_role(sys.argv, _task):
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    common.add_run_options(parser, out="amqp.md")
    parser.add_argument("--pools", type=common.pools,
                        default=common.pools("prefork:2,solo:1,threads:2"),
                        help="pool:concurrency list, both systems each (default "
                             "prefork:2,solo:1,threads:2)")
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_AMQP_URL", DEFAULT_AMQP))
    parser.add_argument("--result-db", type=int,
                        default=int(os.environ.get("BENCH_AMQP_RESULT_DB", "4")),
                        help="Redis db of the results (flushed; env BENCH_AMQP_RESULT_DB)")
    args = parser.parse_args()
    command = common.command_line()
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    bench = AMQPBench(args)
    leftover = [k for k in bench.results.scan_iter(count=1000)
                if not k.startswith(run.META_PREFIX)][:1]
    if leftover:
        raise SystemExit(f"Redis db {args.result_db} holds {leftover[0]!r}, not a result of "
                         "this bench: pick another --result-db (it is flushed)")
    bench.notes.append(run._conditions("before", bench))
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    finally:
        bench.close()
    bench.notes.append(run._conditions("after", bench))
    report = build_report(bench, command, started, time.perf_counter() - t0)
    common.write_report(report, args.out)


if __name__ == "__main__":
    main()
