"""The result store killed while tasks run: no result is lost, no task runs twice.

The broker stays up (SQLite, or the shared Redis); the result store is a Redis of the
test's own, with an append-only file, killed and restarted mid-drain.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from support import lines, wait_until

from celeriac.contrib.testing import WorkerProcess


def point_results_at(project: Path, broker_url: str, backend_url: str) -> None:
    source = (project / "proj.py").read_text()
    source = source.replace(f'backend="{broker_url}"', f'backend="{backend_url}"')
    # The backend gives up quickly on its own; the worker must keep the result anyway.
    source += "\napp.conf.result_backend_always_retry = True\n" \
              "app.conf.result_backend_max_retries = 2\n"
    (project / "proj.py").write_text(source)


def test_results_of_tasks_run_during_a_result_store_outage_are_kept(
        project: Path, broker_url: str, durable_redis: dict[str, Any]) -> None:
    from support import load_proj

    point_results_at(project, broker_url, durable_redis["url"])
    proj = load_proj(project)
    runs = project / "runs"
    count = 300
    try:
        with WorkerProcess("proj", cwd=project, args=["-c", "2"]) as worker:
            with proj.app.batch_publish():
                results = [proj.touch_late.delay(str(runs), i) for i in range(count)]
            assert wait_until(lambda: len(lines(runs)) >= 20)
            durable_redis["proc"].send_signal(signal.SIGKILL)
            durable_redis["proc"].wait()
            time.sleep(4.0)  # longer than the backend's own retries
            assert len(lines(runs)) < count
            with durable_redis["restart"]():
                assert [r.get(timeout=90) for r in results] == list(range(count))
                assert sorted(lines(runs), key=int) == [str(i) for i in range(count)]
                assert worker.proc.poll() is None
    finally:
        proj.app.close()
