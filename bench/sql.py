"""celeriac vs Celery 5 with PostgreSQL (and MariaDB), side by side: enqueue, drain, round trip.

    python bench/sql.py [--tasks 20000] [--celery-sqla-tasks 2000] [--latency-samples 1000]

Results are stored in PostgreSQL (``db+postgresql+psycopg://``) for every broker; the
brokers are each system's SQL transport (celeriac's ``sqla+postgresql+psycopg://``,
kombu's SQLAlchemy transport under Celery at the same URL) and Redis, plus an all-MariaDB
pair (``sqla+mysql+pymysql://`` broker, ``db+mysql+pymysql://`` results). The timing is
bench/run.py's (this harness subclasses it): one producer process, then one worker started
through its CLI, the rate counted from the first stored result to the N-th.

Everything the bench writes is its own: a PostgreSQL schema (``celeriac_bench_sql`` in
database ``test``, reached through ``search_path`` so kombu's tables and every sequence
land there too), a MariaDB database of the same name, one Redis db (3, which must be empty
at start) and a queue named ``sqlbench-<hex>``. The schema, the MariaDB database and the
Redis db are dropped and made afresh before every run and dropped at the end. See
bench/README.md for how to read the table.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/ last on sys.path: its amqp.py must not stand in for py-amqp in what is imported
# later, yet bench/common.py is still found.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE] + [HERE]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402

run = common.load_bench_module("run")

SCHEMA = "celeriac_bench_sql"
TASK_NAME = "sqlbench.add"


@dataclass(frozen=True)
class Setup:
    """One system on one broker: an app module of its own."""

    system: str  # "celeriac" or "celery"
    broker: str  # "postgresql", "redis" or "mysql"

    @property
    def key(self) -> str:
        return f"{self.system}-{self.broker}"

    @property
    def module(self) -> str:
        return f"sqlbench_{self.system}_{self.broker}"

    @property
    def store(self) -> str:
        """Where the results go: MariaDB for the MariaDB broker, PostgreSQL otherwise."""
        return "mysql" if self.broker == "mysql" else "postgresql"

    @property
    def table(self) -> str:
        return f"bench_{self.system}_taskmeta"


BROKERS = ("postgresql", "redis", "mysql")
SETUPS = [Setup(s, b) for b in BROKERS for s in common.SYSTEMS]
BROKER_NAMES = {"postgresql": "PostgreSQL", "redis": "Redis", "mysql": "MariaDB"}

APP_SOURCE = '''\
"""bench/sql.py's app: {system} on a {broker} broker, results in {store}."""
from {package} import Celery

app = Celery("{module}", broker={broker_url!r}, backend={backend_url!r})
app.conf.task_default_queue = {queue!r}
app.conf.database_table_names = {{"task": {table!r}, "group": {group!r}}}
{extra}

@app.task(name={task!r})
def add(x, y):
    return x + y
'''


# -- helpers run in their own process (cwd: the scratch directory) --------------------------
def _task(key: str) -> Any:
    return __import__(_setup(key).module).add


def _setup(key: str) -> Setup:
    return next(s for s in SETUPS if s.key == key)


def role_depth(key: str) -> None:
    """Print how many messages wait in the app's queue, asked through its own broker."""
    add = _task(key)
    app, queue = add.app, add.app.conf.task_default_queue
    if _setup(key).system == "celeriac":
        with app.connection() as conn:
            count = conn.broker.size(queue)
    else:
        with app.connection_for_write() as conn:
            try:
                count = conn.default_channel.queue_declare(queue, passive=True).message_count
            except conn.channel_errors:  # kombu on Redis: an empty list is no queue at all
                count = 0
    print(json.dumps({"depth": int(count)}), flush=True)


# -- the databases, seen from the harness ----------------------------------------------------
class Store:
    """One SQL server the bench owns a schema (PostgreSQL) or a database (MariaDB) of."""

    def __init__(self, url: str, private: str, kind: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.kind = kind
        self.private = private
        # Autocommit: every count sees what the worker committed (MariaDB's repeatable
        # read would otherwise keep showing the first snapshot).
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.conn = self.engine.connect()

    def scalar(self, sql: str) -> Any:
        return self.conn.execute(self.sa.text(sql)).scalar()

    def rows(self, sql: str) -> list[Any]:
        return list(self.conn.execute(self.sa.text(sql)))

    def qualified(self, table: str) -> str:
        q = '"' if self.kind == "postgresql" else "`"
        return f"{q}{self.private}{q}.{q}{table}{q}"

    def reset(self) -> None:
        """Drop everything of the bench's and start from nothing."""
        self.drop()
        word = "SCHEMA" if self.kind == "postgresql" else "DATABASE"
        self.conn.execute(self.sa.text(f"CREATE {word} {self.private}"))

    def drop(self) -> None:
        if self.kind == "postgresql":
            self.conn.execute(self.sa.text(f"DROP SCHEMA IF EXISTS {self.private} CASCADE"))
        else:
            self.conn.execute(self.sa.text(f"DROP DATABASE IF EXISTS {self.private}"))

    def count(self, table: str, at_least: int) -> int:
        """Rows in ``table`` (0 while it does not exist). The ids come from a sequence that
        starts afresh each run, so ``max(id)`` counts them in one index probe instead of a
        scan that would load the server being measured; only once it reaches
        ``at_least`` is the exact ``count(*)`` asked for (ids of two racing inserts can
        commit out of order)."""
        try:
            top = self.scalar(f"SELECT max(id) FROM {self.qualified(table)}") or 0
            if top < at_least:
                return int(top)
            return int(self.scalar(f"SELECT count(*) FROM {self.qualified(table)}"))
        except self.sa.exc.ProgrammingError:  # no table yet: no result stored yet
            return 0

    def version(self) -> str:
        try:
            return str(self.scalar("SELECT version()")).split(" on ")[0].split(",")[0]
        except Exception as exc:  # noqa: BLE001 - a report line, not a failure
            return f"? ({exc.__class__.__name__})"

    def ping_ms(self) -> float:
        """Median ``SELECT 1`` round trip from the harness, ms."""
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            self.scalar("SELECT 1")
            samples.append((time.perf_counter() - t0) * 1000)
        return sorted(samples)[len(samples) // 2]

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


class SQLBench(run.Bench):  # type: ignore[name-defined,misc]
    """bench/run.py's harness over SQL brokers and backends: its drain loop and round trip
    as they are; the apps, the storage, the checks and the plan are made here."""

    def __init__(self, args: argparse.Namespace) -> None:
        args.db = args.redis_db
        super().__init__(args)
        self.full_n = args.tasks
        self.queue = f"sqlbench-{uuid.uuid4().hex[:10]}"
        self.workdir = tempfile.mkdtemp(prefix="celeriac-sql-bench-")
        self.script = os.path.abspath(__file__)
        self.log_prefix = "sql-"
        # Celery's threads pool on kombu's SQL transport runs ~16 tasks/s here
        self.min_drain_timeout = 600.0
        self.setups = [s for s in SETUPS if (not args.only or s.system == args.only)
                       and s.broker in args.brokers]
        self.modules = {s.key: s.module for s in SETUPS}
        self.names = {s.key: f"{run.NAMES[s.system]}/{BROKER_NAMES[s.broker]}"
                      for s in SETUPS}
        self.stores = {"postgresql": Store(args.pg_url, SCHEMA, "postgresql")}
        if "mysql" in args.brokers:
            self.stores["mysql"] = Store(args.mysql_url, SCHEMA, "mysql")
        self.urls = {
            "postgresql": _with_search_path(args.pg_url, SCHEMA),
            "mysql": f"{args.mysql_url.rstrip('/').rsplit('/', 1)[0]}/{SCHEMA}",
            "redis": f"{self.url}/{self.db}",
        }
        self.servers = "; ".join(store.version() for store in self.stores.values())
        self.write_apps()
        self.env = dict(os.environ, PYTHONPATH=self.workdir)
        self.current = self.setups[0]
        self.loads: list[float] = []  # one per drain run, in order
        self.source = _source_state()

    def write_apps(self) -> None:
        for s in SETUPS:
            extra = ("app.conf.broker_connection_retry_on_startup = True"
                     if s.system == "celery" else "")
            broker = self.urls[s.broker]
            with open(os.path.join(self.workdir, f"{s.module}.py"), "w") as f:
                f.write(APP_SOURCE.format(
                    system=run.NAMES[s.system], broker=BROKER_NAMES[s.broker],
                    store=BROKER_NAMES[s.store], package=s.system, module=s.module,
                    broker_url=broker if s.broker == "redis" else f"sqla+{broker}",
                    backend_url=f"db+{self.urls[s.store]}", queue=self.queue, table=s.table,
                    group=f"bench_{s.system}_groupmeta", extra=extra, task=TASK_NAME))

    # -- what differs from run.py's Redis ---------------------------------------------------
    def flush(self) -> None:
        for store in self.stores.values():
            store.reset()
        self.broker.flushdb()

    def stored(self) -> int:
        return self.stores[self.current.store].count(self.current.table, self.n)

    def strangers(self) -> list[str]:
        mine = {self.broker.client_id(), self.results.client_id()}
        return [f"{c.get('addr')} db={c.get('db')} cmd={c.get('cmd')}"
                for c in self.broker.client_list()
                if int(c.get("db", -1)) == self.db and int(c["id"]) not in mine]

    def cli(self, key: str) -> list[str]:
        return list(super().cli(_setup(key).system))

    def depth(self, key: str) -> int:
        return int(self.helper("_depth", key, timeout=120)["depth"])

    def enqueue(self, key: str) -> float:
        self.current = _setup(key)
        self.flush()
        out = self.helper("_produce", key, str(self.n), timeout=max(300, self.n / 20))
        queued = self.depth(key)
        if queued != self.n:
            raise RuntimeError(f"{key}: {queued} messages queued after sending {self.n}")
        return float(self.n / out["seconds"])

    def verify_results(self, n: int) -> list[str]:
        """Every result is SUCCESS, the values are exactly {2i for i < n}, the queue empty."""
        setup = self.current
        store = self.stores[setup.store]
        problems = []
        rows = store.rows(f"SELECT status, result FROM {store.qualified(setup.table)}")
        states = Counter(r[0] for r in rows)
        if states != Counter({"SUCCESS": n}):
            problems.append(f"result states {dict(states)} (expected {n} SUCCESS)")
        values = Counter(json.dumps(_decoded(r[1])) for r in rows)
        if values != Counter(json.dumps(2 * i) for i in range(n)):
            problems.append("result values are not exactly {2i : i < N}")
        try:
            left = self.depth(setup.key)
        except Exception as exc:  # noqa: BLE001 - the run is reported, with this
            problems.append(f"queue depth unknown: {_short(exc)}")
        else:
            if left:
                problems.append(f"{left} messages still in {self.queue}")
        return problems

    # -- the plan -------------------------------------------------------------------------------
    def n_for(self, setup: Setup) -> int:
        """kombu's SQL transport is far slower: Celery on it gets its own, smaller N."""
        if setup.system == "celery" and setup.broker in ("postgresql", "mysql"):
            return min(self.args.celery_sqla_tasks, self.full_n)
        return self.full_n

    def pools(self, broker: str) -> list[tuple[str, int]]:
        """Every pool on the PostgreSQL broker; prefork -c 2 on the others."""
        return list(self.args.pools) if broker == "postgresql" else [("prefork", 2)]

    def plan(self) -> list[tuple[str, str, int]]:
        steps = []
        for broker in BROKERS:
            for pool, c in self.pools(broker):
                steps += [(s.key, pool, c) for s in self.setups if s.broker == broker]
        return steps

    def drain(self, system: str, pool: str, concurrency: int, round_no: int) -> Any:
        """run.py's drain with this setup's N; a setup that fails to start or enqueue is a
        FAILED row with its error, not the end of the whole bench."""
        self.n = self.n_for(_setup(system))
        # the 1-minute load average as the run starts, shown beside its figures
        self.loads.append(os.getloadavg()[0])
        try:
            return super().drain(system, pool, concurrency, round_no)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failed = run.DrainRun(system, pool, concurrency, self.n)
            failed.problems.append(_short(exc))
            self.log(f"{self.names[system]} {failed.label} FAILED: {_short(exc)}")
            self.drains.append(failed)
            return failed

    def run(self) -> None:
        plan = self.plan()
        for round_no in range(1, self.args.repeat + 1):
            steps = plan if round_no % 2 else run._reverse_pairs(plan)
            for key, pool, concurrency in steps:
                self.drain(key, pool, concurrency, round_no)
        if self.args.latency_samples > 0:
            pairs = [s for s in self.setups if s.broker == "postgresql"]
            for setup in (pairs if self.args.repeat % 2 else pairs[::-1]):
                self.current = setup
                k = (self.args.latency_samples if setup.system == "celeriac"
                     else min(self.args.celery_latency_samples, self.args.latency_samples))
                load = os.getloadavg()[0]
                try:
                    # a tenth of K warms up (Celery polls: its K is small, each ~1 s)
                    stats = self.round_trip(setup.key, samples=k,
                                            warmup=min(run.WARMUP, max(1, k // 10)))
                    stats["load"] = load
                except Exception as exc:  # noqa: BLE001 - reported in the notes
                    self.notes.append(f"round trip {self.names[setup.key]} FAILED: "
                                      f"{_short(exc)}")
                    self.log(f"round trip {setup.key} FAILED: {_short(exc)}")

    def close(self) -> None:
        for store in self.stores.values():
            store.drop()
            store.close()
        self.broker.flushdb()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _source_state() -> str:
    """The celeriac measured: its commit, and whether the working tree differs from it
    (other engineers edit it while the bench runs)."""
    import subprocess

    def git(*argv: str) -> str:
        proc = subprocess.run(["git", "-C", HERE, *argv], capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", os.path.join(HERE, "..", "celeriac"))
    n = len(changed.splitlines())
    return f"celeriac at commit {commit}" + (f" with {n} file(s) changed in the working tree"
                                             if n else "")


def _decoded(value: Any) -> Any:
    """A stored result as a value: JSON text as Celery 5.7 writes it, else an older
    Celery's pickle (the bench's own rows only)."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, (bytes, memoryview)):
        try:
            return json.loads(bytes(value))
        except ValueError:
            return pickle.loads(bytes(value))  # noqa: S301 - rows this bench wrote just now
    return value


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # a helper's failure ends with the traceback's last line: the one that names the error
    return f"{exc.__class__.__name__}: " + (" / ".join(text[:1] + text[-2:]) if text else "")


# -- the report ----------------------------------------------------------------------------
def build_report(bench: SQLBench, command: str, started: _dt.datetime, wall: float) -> str:
    fmt_rate, fmt_s, fmt_ms, ratio, median = (run._fmt_rate, run._fmt_s, run._fmt_ms,
                                              run._ratio, run._median)

    def runs(key: str, pool: str | None = None, c: int | None = None) -> list[Any]:
        return [r for r in bench.drains if r.system == key
                and (pool is None or r.pool == pool) and (c is None or r.concurrency == c)]

    def med(key: str, pool: str, c: int, attr: str) -> float:
        return float(median([getattr(r, attr) for r in runs(key, pool, c) if r.ok]))

    def pair(broker: str) -> tuple[str, str]:
        return f"celeriac-{broker}", f"celery-{broker}"

    def n_of(key: str) -> str:
        ns = sorted({r.n for r in runs(key)})
        return "/".join(f"{n:,}" for n in ns) or "—"

    rows = []
    brokers = [b for b in BROKERS if any(s.broker == b for s in bench.setups)]
    for broker in brokers:
        ours, theirs = pair(broker)
        a = median([r.enqueue_rate for r in runs(ours) if r.enqueue_rate])
        b = median([r.enqueue_rate for r in runs(theirs) if r.enqueue_rate])
        rows.append((f"Enqueue, {BROKER_NAMES[broker]} broker, tasks/s (1 producer)",
                     fmt_rate(a), fmt_rate(b), ratio(a, b), "higher"))
    best: dict[str, tuple[float, str]] = {}
    for broker in brokers:
        ours, theirs = pair(broker)
        store = BROKER_NAMES["mysql" if broker == "mysql" else "postgresql"]
        pools = bench.pools(broker)
        for pool, c in pools:
            label = "solo" if pool == "solo" else f"{pool} -c {c}"
            a, b = med(ours, pool, c, "rate"), med(theirs, pool, c, "rate")
            rows.append((f"Drain, {BROKER_NAMES[broker]} broker, results in {store}, {label}, "
                         f"tasks/s (N {n_of(ours)} / {n_of(theirs)})", fmt_rate(a), fmt_rate(b),
                         ratio(a, b), "higher"))
        for key in (ours, theirs):
            scored = [(med(key, p, c, "rate"), "solo" if p == "solo" else f"{p} -c {c}")
                      for p, c in pools]
            scored = [x for x in scored if not math.isnan(x[0])]
            best[key] = max(scored) if scored else (math.nan, "")
        if len(pools) > 1:
            rows.append((f"**Drain, {BROKER_NAMES[broker]} broker, best pool, tasks/s**",
                         f"**{fmt_rate(best[ours][0])}** ({best[ours][1] or '—'})",
                         f"**{fmt_rate(best[theirs][0])}** ({best[theirs][1] or '—'})",
                         f"**{ratio(best[ours][0], best[theirs][0])}**", "higher"))
        a, b = med(ours, "prefork", 2, "start_to_done"), med(theirs, "prefork", 2, "start_to_done")
        rows.append((f"Worker start → all done, {BROKER_NAMES[broker]} broker, prefork -c 2, s "
                     f"(N {n_of(ours)} / {n_of(theirs)})", fmt_s(a), fmt_s(b),
                     "—" if n_of(ours) != n_of(theirs) else ratio(a, b), "lower"))
    lat = bench.latency
    ours, theirs = pair("postgresql")
    for key in ("p50", "p99", "mean"):
        a = lat.get(ours, {}).get(key, math.nan)
        b = lat.get(theirs, {}).get(key, math.nan)
        ks = f"K={lat.get(ours, {}).get('k', 0)} / {lat.get(theirs, {}).get('k', 0)}"
        rows.append((f"Round trip `delay().get()`, PostgreSQL broker + results, {key}, ms "
                     f"(prefork -c 2, {ks})", fmt_ms(a), fmt_ms(b), ratio(a, b), "lower"))

    pg_prefork = med(ours, "prefork", 2, "rate")
    times = (best[ours][0] / best[theirs][0] if ours in best and theirs in best
             and best[theirs][0] else math.nan)
    p50 = lat.get(ours, {}).get("p50", math.nan)
    targets = [
        ("celeriac's PostgreSQL broker drains ≥ 1,500 tasks/s (prefork -c 2, results in "
         "PostgreSQL)", pg_prefork, pg_prefork >= 1500, fmt_rate(pg_prefork)),
        ("… ≥ 5× Celery on kombu's SQLAlchemy transport (best pool each)", times, times >= 5,
         f"{times:.2f}×"),
        ("PostgreSQL round trip p50 ≤ 3 ms", p50, p50 <= 3, f"{fmt_ms(p50)} ms"),
    ]

    out = [f"# celeriac vs Celery on PostgreSQL — {started:%Y-%m-%d %H:%M %Z}".rstrip(), ""]
    out.append(f"- Command: `{command}` (wall time {wall / 60:.1f} min)")
    out.append(f"- Machine: {run.machine_line(bench)}; {bench.servers}")
    out.append(f"- Source: {bench.source}")
    smaller = bench.n_for(_setup(theirs))
    out.append(f"- N = {bench.full_n:,} tasks per drain run"
               + (f", but {smaller:,} for Celery on kombu's SQLAlchemy transport (compare its "
                  "rates, not its times)" if smaller != bench.full_n and bench.args.only !=
                  "celeriac" else "")
               + f"; {bench.args.repeat} round(s); queue `{bench.queue}`; PostgreSQL "
               f"schema / MariaDB database `{SCHEMA}`, Redis db {bench.db}; stored results "
               f"counted every {bench.args.poll_ms:g} ms")
    out += ["", "| metric | celeriac | Celery | celeriac / Celery | better |",
            "| --- | ---: | ---: | ---: | :---: |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "Ratios are celeriac ÷ Celery: for rates higher is better, for times lower. "
            "The load average each figure was measured at is in the tables below (2 cores).",
            "", "## Targets", ""]
    for text, value, met, shown in targets:
        verdict = "not measured" if math.isnan(value) else ("met" if met else "NOT met")
        out.append(f"- {text}: {shown} — {verdict}")
    out += ["", "## Every drain run", "",
            "| system / broker | pool | N | load | enqueue/s | drain/s | start→first result s | "
            "first→last s | start→done s | stop s | check |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r, load in zip(bench.drains, bench.loads):
        check = "ok" if r.ok else "FAILED: " + ("; ".join(r.problems) or "no rate")
        if r.warnings:
            check += " (" + "; ".join(r.warnings) + ")"
        out.append(f"| {bench.names[r.system]} | {r.label} | {r.n:,} | {load:.1f} | "
                   f"{fmt_rate(r.enqueue_rate or math.nan)} | {fmt_rate(r.rate)} | "
                   f"{fmt_s(r.start_to_first)} | {fmt_s(r.first_to_done)} | "
                   f"{fmt_s(r.start_to_done)} | {fmt_s(r.stop_seconds)} | {check} |")
    if lat:
        out += ["", "## Round trip detail (ms)", "",
                "| system / broker | K | load | min | p50 | p99 | mean | max | worker ready "
                "after s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key, L in lat.items():
            out.append(f"| {bench.names[key]} | {L['k']} | {L.get('load', math.nan):.1f} | "
                       f"{fmt_ms(L['min'])} | "
                       f"{fmt_ms(L['p50'])} | {fmt_ms(L['p99'])} | {fmt_ms(L['mean'])} | "
                       f"{fmt_ms(L['max'])} | {fmt_s(L['ready_after'])} |")
    if bench.notes:
        out.append("")
        out += [f"- {note}" for note in bench.notes]
    return "\n".join(out) + "\n"


def _conditions(when: str, bench: SQLBench) -> str:
    pings = ", ".join(f"{BROKER_NAMES[k]} `SELECT 1` median {s.ping_ms():.3f} ms"
                      for k, s in bench.stores.items())
    return f"{run._conditions(when, bench)}; {pings}"


def _brokers(text: str) -> list[str]:
    out = [b.strip() for b in text.split(",") if b.strip()]
    unknown = set(out) - set(BROKERS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown broker(s) {sorted(unknown)}; "
                                          f"known: {', '.join(BROKERS)}")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_depth":
        role_depth(sys.argv[2])
        return
    if common.run_role(sys.argv, _task):
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    common.add_run_options(parser, out="sql.md")
    parser.add_argument("--celery-sqla-tasks", type=int, default=2000,
                        help="N for Celery on kombu's SQLAlchemy transport (default 2000)")
    parser.add_argument("--celery-latency-samples", type=int, default=100,
                        help="K for Celery's round trip (it polls: ~1 s each; default 100)")
    parser.add_argument("--pools", type=common.pools,
                        default=common.pools("prefork:2,threads:2,solo"),
                        help="pools on the PostgreSQL broker, both systems each (default "
                             "prefork:2,threads:2,solo); the other brokers run prefork:2")
    parser.add_argument("--brokers", type=_brokers, default=list(BROKERS),
                        help="which brokers (default postgresql,redis,mysql)")
    parser.add_argument("--pg-url", default=os.environ.get(
        "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL database (a schema of the bench's is made in it)")
    parser.add_argument("--mysql-url", default=os.environ.get(
        "BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
        help="MariaDB server (a database of the bench's is made beside this one)")
    parser.add_argument("--redis-db", type=int,
                        default=int(os.environ.get("BENCH_SQL_REDIS_DB", "3")),
                        help="Redis db of the Redis broker runs (flushed; must start empty)")
    args = parser.parse_args()
    command = common.command_line()
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    bench = SQLBench(args)
    if bench.broker.dbsize():
        raise SystemExit(f"Redis db {args.redis_db} is not empty: pick another --redis-db "
                         "(the bench flushes it)")
    bench.notes.append(_conditions("before", bench))
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    finally:
        bench.notes.append(_conditions("after", bench))
        bench.close()
    wall = time.perf_counter() - t0
    report = build_report(bench, command, started, wall)
    data = {"command": command, "started": started.isoformat(), "wall_seconds": wall,
            "queue": bench.queue, "source": bench.source,
            "drains": [dict(dataclasses.asdict(r), load=load)
                       for r, load in zip(bench.drains, bench.loads)],
            "latency": bench.latency, "notes": bench.notes}
    common.write_report(report, args.out, data)


if __name__ == "__main__":
    main()
