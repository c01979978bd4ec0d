"""``worker -B``: beat inside a prefork worker runs its entries, and SIGTERM always stops it.

Beat used to start in a thread before the pool forked its processes; a fork while that
thread held a lock (the import lock, the resolver's) left pool processes hung, running
nothing and deaf to SIGTERM, about every second start. Starting the worker many times in
a row is what shows it.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import unique
from support import load_proj, wait_until

from celeriac.beat.lock import lock_for_url
from celeriac.beat.service import default_lock_name
from celeriac.contrib.testing import WorkerProcess

RUNS = 8
# A liveness bound, not a timing assertion: a worker that stops at all stops well
# within it.
EXIT_BOUND = 30.0

PROJECT = '''
import os
from celeriac import Celery

app = Celery("proj", broker={broker!r}, backend={broker!r})
app.conf.task_default_queue = {queue!r}
app.conf.broker_dead_letter_queue = {queue!r} + ".dead"
app.conf.beat_schedule = {{"often": {{"task": "proj.tick", "schedule": 0.5}}}}
MARKS = {marks!r}


@app.task(bind=True)
def tick(self):
    with open(MARKS, "a") as fh:
        fh.write(self.request.id + "\\n")
    return os.getpid()
'''


def test_worker_with_embedded_beat_starts_runs_and_stops_every_time(
        tmp_path: Path, broker_url: str) -> None:
    marks = tmp_path / "ticks"
    queue = f"q-beat-{unique()}"
    (tmp_path / "proj.py").write_text(
        PROJECT.format(broker=broker_url, queue=queue, marks=str(marks)))
    proj = load_proj(tmp_path)
    try:
        for run in range(RUNS):
            marks.unlink(missing_ok=True)
            state = tmp_path / f"beat-state-{run}"
            with WorkerProcess("proj", cwd=tmp_path,
                               args=["-B", "-c", "2", "-s", str(state)]) as worker:
                assert wait_until(lambda: len(ids(marks)) >= 2), (run, worker.output)
                pids = {proj.app.AsyncResult(i).get(timeout=20) for i in ids(marks)[:2]}
                assert pids and all(isinstance(p, int) for p in pids)
                worker.signal(signal.SIGTERM)
                try:
                    code = worker.proc.wait(EXIT_BOUND) if worker.proc else None
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"run {run}: the worker did not exit after SIGTERM"
                                         f"\n{worker.output[-5000:]}") from None
                assert code == 0, (run, worker.output[-5000:])
                assert "Traceback" not in worker.output, worker.output
            # Beat saved its state and let the leader lock go as the worker stopped.
            assert Path(f"{state}.json").exists() or state.exists()
            assert_lock_free(proj.app, broker_url)
    finally:
        proj.app.close()


def ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def assert_lock_free(app: Any, broker_url: str) -> None:
    lock = lock_for_url(broker_url, default_lock_name(app),
                        dict(app.conf.broker_transport_options or {}))
    assert lock is not None
    try:
        assert lock.acquire("the-test", 5), "beat kept its leader lock after the worker stopped"
        lock.release("the-test")
    finally:
        lock.close()
