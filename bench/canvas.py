"""Canvas at scale: a 1,000-task chord and a 10,000-task group, on SQLite and Redis.

    python bench/canvas.py [--chord 1000] [--group 10000] [--backends sqlite,redis]

Starts one worker (prefork, -c 4, log level WARNING) per backend in a scratch project
and prints wall-clock seconds for sending and for the full round trip.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celeriac.contrib.testing import WorkerProcess

PROJECT = '''
from celeriac import Celery
app = Celery("benchcanvas", broker="{url}", backend="{url}")
app.conf.task_default_queue = "{queue}"

@app.task
def add(x, y):
    return x + y

@app.task
def tsum(numbers):
    return sum(numbers)
'''


def run(kind: str, n_chord: int, n_group: int) -> None:
    from celeriac import chord, group

    with tempfile.TemporaryDirectory() as tmp:
        url = (f"sqlite:///{tmp}/bench.sqlite3" if kind == "sqlite"
               else "redis://127.0.0.1:6379/14")
        Path(tmp, "benchcanvas.py").write_text(
            PROJECT.format(url=url, queue=f"bench-{uuid.uuid4().hex[:8]}"))
        sys.path.insert(0, tmp)
        sys.modules.pop("benchcanvas", None)
        proj = importlib.import_module("benchcanvas")
        try:
            with WorkerProcess("benchcanvas", cwd=tmp, args=["-P", "prefork", "-c", "4"],
                               loglevel="WARNING"):
                t0 = time.perf_counter()
                res = chord(proj.add.s(i, i) for i in range(n_chord))(proj.tsum.s())
                sent = time.perf_counter() - t0
                assert res.get(timeout=300) == sum(i + i for i in range(n_chord))
                total = time.perf_counter() - t0
                print(f"{kind:6} chord of {n_chord:>6}: sent in {sent:6.2f}s, "
                      f"body result after {total:6.2f}s")
                t0 = time.perf_counter()
                gres = group(proj.add.s(i, i) for i in range(n_group))()
                sent = time.perf_counter() - t0
                assert gres.get(timeout=600) == [i + i for i in range(n_group)]
                total = time.perf_counter() - t0
                print(f"{kind:6} group of {n_group:>6}: sent in {sent:6.2f}s, "
                      f"all results after {total:6.2f}s")
        finally:
            proj.app.close()
            sys.path.remove(tmp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chord", type=int, default=1000)
    parser.add_argument("--group", type=int, default=10000)
    parser.add_argument("--backends", default="sqlite,redis")
    opts = parser.parse_args()
    for kind in opts.backends.split(","):
        run(kind, opts.chord, opts.group)


if __name__ == "__main__":
    main()
