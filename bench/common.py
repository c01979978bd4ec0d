"""What the bench scripts share: their common options, the two client roles run in
processes of their own (the producer and the round-trip client), and how the report is
written.

Each script runs itself again as ``python bench/<script>.py _produce SYSTEM N`` or
``... _latency SYSTEM K WARMUP READY_TIMEOUT``; ``run_role`` answers those, given a
function that imports the script's ``add`` task for a system.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
SYSTEMS = ("celeriac", "celery")


def load_bench_module(name: str) -> ModuleType:
    """bench/<name>.py as a module named ``bench_<name>``: ``run`` is too common a name
    to import by, and the scripts keep bench/ last on sys.path (see bench/amqp.py)."""
    qualified = f"bench_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, os.path.join(HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def add_run_options(parser: argparse.ArgumentParser, *, out: str) -> None:
    """The options every side-by-side script takes; ``out`` is the report's default
    file name under bench/results/."""
    parser.add_argument("--tasks", type=int, default=20000, help="N, tasks per drain run")
    parser.add_argument("--latency-samples", type=int, default=1000,
                        help="K, timed round trips per system (0 to skip)")
    parser.add_argument("--only", choices=SYSTEMS, help="benchmark one system only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of drain runs; medians are reported")
    parser.add_argument("--redis-url", default=os.environ.get(
        "BENCH_REDIS_URL", "redis://127.0.0.1:6379"), help="Redis server, without a db")
    parser.add_argument("--poll-ms", type=float, default=2.0,
                        help="how often the harness counts the stored results")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, out))


def pools(text: str) -> list[tuple[str, int]]:
    """``prefork:2,solo,threads:8`` as [(pool, concurrency)]: 1 for solo, 2 when not given."""
    out = []
    for item in text.split(","):
        pool, _, c = item.strip().partition(":")
        out.append((pool, int(c or (1 if pool == "solo" else 2))))
    return out


def command_line() -> str:
    """This process's command, as a user would retype it."""
    return "python " + " ".join(shlex.quote(a) for a in
                                [os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def write_report(report: str, out: str, data: dict[str, Any] | None = None) -> None:
    """Print the report and write it to ``out``; ``data`` (the raw figures) goes beside
    it as JSON, same name with ``.json``."""
    print(report)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(report)
    written = [out]
    if data is not None:
        raw = os.path.splitext(out)[0] + ".json"
        with open(raw, "w") as f:
            json.dump(data, f, indent=1, default=str)
        written.append(raw)
    print("written to " + ", ".join(os.path.relpath(p) for p in written), file=sys.stderr)


# -- the roles run in their own process ------------------------------------------------------
def _produce(add: Any, n: int) -> dict[str, Any]:
    """``add.delay(i, i)`` for i in range(n), results not waited for."""
    started = time.perf_counter()
    for i in range(n):
        add.delay(i, i)
    elapsed = time.perf_counter() - started
    # Closing lets a producer without publish confirms hand over what it buffered before
    # the harness counts the queue; it is not timed.
    add.app.close()
    return {"n": n, "seconds": elapsed}


def _round_trips(add: Any, samples: int, warmup: int, ready_timeout: float) -> dict[str, Any]:
    """Wait for the worker to answer, warm up, then time ``delay().get()`` one by one."""
    started = time.perf_counter()
    if add.delay(-1, -1).get(timeout=ready_timeout) != -2:
        raise SystemExit("the worker answered the readiness task wrongly")
    ready_after = time.perf_counter() - started
    for i in range(warmup):
        if add.delay(i, i).get(timeout=10) != 2 * i:
            raise SystemExit("wrong result during warm-up")
    out = []
    for i in range(samples):
        t0 = time.perf_counter()
        value = add.delay(i, i).get(timeout=10)
        out.append(time.perf_counter() - t0)
        if value != 2 * i:
            raise SystemExit(f"wrong result: add({i}, {i}) returned {value!r}")
    return {"ready_after": ready_after, "samples": out}


def run_role(argv: list[str], load_task: Callable[[str], Any]) -> bool:
    """Play the role named by ``argv[1]`` (printing its figures as one JSON line) and
    return True, or return False when ``argv`` names none: the harness itself runs."""
    if len(argv) < 2 or argv[1] not in ("_produce", "_latency"):
        return False
    add = load_task(argv[2])
    if argv[1] == "_produce":
        out = _produce(add, int(argv[3]))
    else:
        out = _round_trips(add, int(argv[3]), int(argv[4]), float(argv[5]))
    print(json.dumps(out), flush=True)
    return True
