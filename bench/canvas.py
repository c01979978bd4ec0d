"""Canvas at scale, celeriac beside Celery: a 1,000-task chord and a 10,000-task group.

    python bench/canvas.py [--chord 1000] [--group 10000] [--stores redis,sqlite]
                           [--only celeriac|celery] [--pool prefork] [-c 4]

For each store (Redis; SQLite: celeriac's own broker, Celery's ``sqla+sqlite`` transport
with the ``db+sqlite`` result backend) and each system, a scratch project gets the same
two tasks, ``add(x, y)`` and ``tsum(numbers)``; one worker is started through its CLI
(``-P prefork -c 4 -l warning``) and a separate client process answers a warm-up task,
then times

- the chord ``chord(add.s(i, i) for i in range(N))(tsum.s())`` from the call to the
  body's result, and
- the group ``group(add.s(i, i) for i in range(M))()`` from the call to the last result,

checking every value. The two systems take turns on each store. Each system keeps its
default settings (Celery completes Redis chords with its counter, and database chords
with its polling ``chord_unlock`` task). Prints a table of seconds and the ratio
celeriac ÷ Celery (lower is better); worker logs go to ``bench/results/logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
LOG_DIR = os.path.join(HERE, "results", "logs")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Two databases the bench flushes before each Redis run: broker, then results.
REDIS_DB = int(os.environ.get("BENCH_CANVAS_DB", "14"))

PROJECT = '''
from {package} import Celery
app = Celery("canvasbench", broker={broker!r}, backend={backend!r})

@app.task
def add(x, y):
    return x + y

@app.task
def tsum(numbers):
    return sum(numbers)
'''


def urls(system: str, store: str, scratch: str) -> tuple[str, str]:
    if store == "redis":
        return f"{REDIS}/{REDIS_DB}", f"{REDIS}/{REDIS_DB + 1}"
    if system == "celeriac":
        url = f"sqlite:///{scratch}/celeriac.sqlite3"
        return url, url
    return (f"sqla+sqlite:///{scratch}/celery-broker.sqlite3",
            f"db+sqlite:///{scratch}/celery-results.sqlite3")


# -- the client, in its own process ------------------------------------------------------------
def role_client(n_chord: int, n_group: int, timeout: float) -> None:
    sys.path.insert(0, os.getcwd())
    import canvasbench

    package = canvasbench.Celery.__module__.split(".")[0]
    canvas = __import__(package, fromlist=["chord", "group"])
    add, tsum = canvasbench.add, canvasbench.tsum
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if add.delay(-1, -1).get(timeout=120) != -2:
        raise SystemExit("the worker answered the warm-up task wrongly")
    out["ready_after"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = canvas.chord(add.s(i, i) for i in range(n_chord))(tsum.s())
    out["chord_sent"] = time.perf_counter() - t0
    if result.get(timeout=timeout) != sum(2 * i for i in range(n_chord)):
        raise SystemExit("the chord body returned a wrong sum")
    out["chord"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    group_result = canvas.group(add.s(i, i) for i in range(n_group))()
    out["group_sent"] = time.perf_counter() - t0
    if group_result.get(timeout=timeout) != [2 * i for i in range(n_group)]:
        raise SystemExit("the group returned wrong values")
    out["group"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)


# -- the harness ---------------------------------------------------------------------------------
def cli(system: str) -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), system)
    if os.path.exists(beside):
        return [beside]
    return [shutil.which(system) or system]


def flush_redis() -> None:
    import redis

    for db in (REDIS_DB, REDIS_DB + 1):
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def measure(system: str, store: str, opts: argparse.Namespace) -> dict[str, Any]:
    os.makedirs(LOG_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canvasbench-") as scratch:
        broker, backend = urls(system, store, scratch)
        package = "celeriac" if system == "celeriac" else "celery"
        with open(os.path.join(scratch, "canvasbench.py"), "w") as fh:
            fh.write(PROJECT.format(package=package, broker=broker, backend=backend))
        if store == "redis":
            flush_redis()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        worker_cmd = [*cli(system), "-A", "canvasbench", "worker", "-l", "warning",
                      "-P", opts.pool, "-c", str(opts.concurrency)]
        log_path = os.path.join(LOG_DIR, f"canvas-{system}-{store}.log")
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(worker_cmd, cwd=scratch, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
            try:
                client = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--role", "client",
                     "--chord", str(opts.chord), "--group", str(opts.group),
                     "--timeout", str(opts.timeout)],
                    cwd=scratch, env=env, capture_output=True, text=True,
                    timeout=2 * opts.timeout + 180, check=False)
            finally:
                stop(worker)
        if client.returncode != 0:
            return {"failed": client.stderr.strip().splitlines()[-1:] or ["no output"],
                    "log": log_path}
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
        return result


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # pool children left behind go too
    except ProcessLookupError:
        pass
    worker.wait()


def cell(result: dict[str, Any], key: str) -> str:
    return "failed" if "failed" in result else f"{result[key]:.2f} s"


def ratio(ours: dict[str, Any], theirs: dict[str, Any], key: str) -> str:
    if "failed" in ours or "failed" in theirs:
        return "—"
    return f"{ours[key] / theirs[key]:.2f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="harness", choices=["harness", "client"])
    parser.add_argument("--chord", type=int, default=1000)
    parser.add_argument("--group", type=int, default=10000)
    parser.add_argument("--stores", default="redis,sqlite")
    parser.add_argument("--only", choices=["celeriac", "celery"])
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a chord or a group may take before the run fails")
    opts = parser.parse_args()
    if opts.role == "client":
        role_client(opts.chord, opts.group, opts.timeout)
        return

    systems = [opts.only] if opts.only else ["celeriac", "celery"]
    rows = []
    for store in opts.stores.split(","):
        results = {}
        for system in systems:
            print(f"[{time.strftime('%H:%M:%S')}] {system} on {store} ...", file=sys.stderr,
                  flush=True)
            results[system] = measure(system, store, opts)
            print(f"    {results[system]}", file=sys.stderr, flush=True)
        rows.append((store, results))

    print(f"\nprefork -c {opts.concurrency}, chord of {opts.chord:,} and group of "
          f"{opts.group:,}; seconds from the call to the last result "
          f"(ratio celeriac ÷ Celery, lower is better)\n")
    print("| store | what | " + " | ".join(systems) + (" | ratio |" if len(systems) == 2
                                                         else " |"))
    print("|---|---|" + "---|" * len(systems) + ("---|" if len(systems) == 2 else ""))
    for store, results in rows:
        for key, what in (("chord", f"chord of {opts.chord:,}"),
                          ("group", f"group of {opts.group:,}")):
            cells = [cell(results[s], key) for s in systems]
            line = f"| {store} | {what} | " + " | ".join(cells) + " |"
            if len(systems) == 2:
                line += f" {ratio(results['celeriac'], results['celery'], key)} |"
            print(line)
    for store, results in rows:
        for system, result in results.items():
            if "failed" in result:
                print(f"\n{system} on {store} failed: {result['failed']} (log: {result['log']})")


if __name__ == "__main__":
    main()
