"""Celery's event stream both ways on Redis: Celery's ``app.events.Receiver`` and
``events.State`` follow a celeriac ``-E`` worker (its ``task.multi`` batches included),
celeriac's follow a Celery ``-E`` worker, and a real Flower lists a task a celeriac
worker ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from typing import Any, Callable

import pytest
from interop_support import wait_until

from support import free_port, require  # noqa: I001 - tests/support.py

pytestmark = pytest.mark.redis


class Capture:
    """Events of one node, captured by a receiver (Celery's or celeriac's) on a thread."""

    def __init__(self, app: Any, node: str, state: Any) -> None:
        self.node = node
        self.state = state
        self.events: list[dict[str, Any]] = []
        self.conn = app.connection()
        self.receiver = app.events.Receiver(self.conn, handlers={"*": self._keep})
        self.thread = threading.Thread(
            target=lambda: self.receiver.capture(limit=None, timeout=None, wakeup=False),
            daemon=True)
        self.thread.start()

    def _keep(self, event: dict[str, Any]) -> None:
        if str(event.get("hostname", "")).startswith(self.node + "@"):
            self.events.append(event)
            self.state.event(event)

    def wait_for(self, type_: str, match: Callable[[dict[str, Any]], bool] = lambda e: True,
                 **fields: Any) -> dict[str, Any]:
        def found() -> Any:
            return next((e for e in list(self.events) if e["type"] == type_ and match(e)
                         and all(e.get(k) == v for k, v in fields.items())), None)

        return wait_until(found, 30, f"{type_} {fields} among "
                                     f"{[e['type'] for e in self.events]}")

    def close(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(10)
        self.conn.release()


def test_celery_receiver_follows_a_celeriac_worker(start_worker: Any,
                                                   interop_apps: Any) -> None:
    celery_app = interop_apps.celery.app
    capture = Capture(celery_app, "celeriac-ev", celery_app.events.State())
    try:
        start_worker("celeriac", "celeriac-ev", "-E", "-P", "prefork", "-c", "2")
        capture.wait_for("worker-online")
        ok = interop_apps.celery.add.delay(20, 22)
        assert ok.get(timeout=20) == 42
        bad = interop_apps.celery.fail.delay("nope")
        with pytest.raises(Exception):
            bad.get(timeout=20)
        succeeded = capture.wait_for("task-succeeded", uuid=ok.id)
        assert succeeded["result"] == "42"
        capture.wait_for("task-failed", uuid=bad.id)
        capture.wait_for("worker-heartbeat", lambda e: e["processed"] >= 2)
        # Celery's own State folds what the celeriac worker sent
        task = capture.state.tasks[ok.id]
        assert task.state == "SUCCESS" and task.name == "interop.add"
        assert task.args == "(20, 22)" and task.result == "42" and task.received
        assert capture.state.tasks[bad.id].state == "FAILURE"
        worker = capture.state.workers[succeeded["hostname"]]
        assert worker.alive and worker.sw_ident == "py-celeriac"
    finally:
        capture.close()


def test_celeriac_receiver_follows_a_celery_worker(start_worker: Any,
                                                   interop_apps: Any) -> None:
    from celeriac.events import State

    app = interop_apps.celeriac.app
    capture = Capture(app, "celery-ev", State())
    try:
        start_worker("celery", "celery-ev", "-E", "-P", "solo")
        capture.wait_for("worker-online")
        ok = interop_apps.celeriac.add.delay(1, 2)
        assert ok.get(timeout=20) == 3
        received = capture.wait_for("task-received", uuid=ok.id)
        assert received["name"] == "interop.add" and received["args"] == "(1, 2)"
        assert capture.wait_for("task-succeeded", uuid=ok.id)["result"] == "3"
        capture.wait_for("worker-heartbeat")
        task = capture.state.tasks[ok.id]
        assert task.state == "SUCCESS" and task.name == "interop.add"
        assert task.worker is not None and task.worker.sw_ident == "py-celery"
    finally:
        capture.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_flower_lists_a_task_run_by_a_celeriac_worker(start_worker: Any,
                                                      interop_apps: Any) -> None:
    require("flower is not installed", shutil.which("celery") is not None
            and _has_flower())
    port = free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", f"--broker={interop_apps.shared.BROKER_URL}",
         "flower", f"--port={port}", "--address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                _get_json(f"{base}/api/tasks")
                return True
            except OSError:
                return False

        wait_until(up, 60, "flower to answer")
        start_worker("celeriac", "celeriac-flower", "-E", "-P", "threads", "-c", "2")
        result = interop_apps.celeriac.add.delay(4, 5)
        assert result.get(timeout=20) == 9

        def listed() -> Any:
            task = _get_json(f"{base}/api/tasks").get(result.id)
            return task if task and task.get("state") == "SUCCESS" else None

        task = wait_until(listed, 30, "flower to list the task as SUCCESS")
        assert task["name"] == "interop.add" and task["result"] == "9"
        assert task["worker"].startswith("celeriac-flower@")
    finally:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()


def _has_flower() -> bool:
    try:
        import flower  # noqa: F401
    except ImportError:
        return False
    return True
