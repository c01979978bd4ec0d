"""Events from a real worker process, on SQLite and on Redis: a celeriac
``app.events.Receiver`` sees the worker come, beat and go, and with -E the life of each
task; ``celeriac events --dump`` prints them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from support import wait_until

from celeriac.contrib.testing import WorkerProcess

# Also run on RabbitMQ (tests/conftest.py).
BROKERS_ALSO = ("amqp",)


class Capture:
    """Events of one worker (by node name), captured on a thread of the test."""

    def __init__(self, app: Any, hostname_prefix: str) -> None:
        self.prefix = hostname_prefix
        self.events: list[dict[str, Any]] = []
        self.receiver = app.events.Receiver(app.connection(), handlers={"*": self._keep})
        self.thread = threading.Thread(target=self.receiver.capture, daemon=True)
        self.thread.start()

    def _keep(self, event: dict[str, Any]) -> None:
        if str(event.get("hostname", "")).startswith(self.prefix):
            self.events.append(event)

    def find(self, type_: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == type_
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_for(self, type_: str, match: Callable[[dict[str, Any]], bool] = lambda e: True,
                 **fields: Any) -> dict[str, Any]:
        assert wait_until(lambda: any(match(e) for e in self.find(type_, **fields))), (
            type_, fields, [e["type"] for e in self.events])
        return next(e for e in self.find(type_, **fields) if match(e))

    def close(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(10)
        self.receiver.close()


@pytest.fixture
def node() -> str:
    return f"ev-{uuid.uuid4().hex[:8]}"


def test_worker_and_task_events_with_E(proj: Any, project: Path, node: str) -> None:
    proj.app.conf.task_send_sent_event = True
    capture = Capture(proj.app, f"{node}@")
    clients = Capture(proj.app, "gen")
    try:
        with WorkerProcess("proj", cwd=project, args=["-E", "-c", "2", "-n", f"{node}@%h"]):
            online = capture.wait_for("worker-online")
            assert online["sw_ident"] == "py-celeriac" and online["freq"] == 0.5
            assert len(online["loadavg"]) == 3 and online["active"] == 0
            assert isinstance(online["pid"], int) and isinstance(online["clock"], int)
            ok = proj.add.delay(2, 2)
            assert ok.get(timeout=20) == 4
            failed = proj.fail.delay("boom")
            with pytest.raises(ValueError):
                failed.get(timeout=20)
            received = capture.wait_for("task-received", uuid=ok.id)
            assert received["name"] == "proj.add" and received["args"] == "(2, 2)"
            assert received["kwargs"] == "{}" and received["root_id"] == ok.id
            assert received["retries"] == 0 and received["eta"] is None
            capture.wait_for("task-started", uuid=ok.id)
            succeeded = capture.wait_for("task-succeeded", uuid=ok.id)
            assert succeeded["result"] == "4" and isinstance(succeeded["runtime"], float)
            fail = capture.wait_for("task-failed", uuid=failed.id)
            assert fail["exception"] == "ValueError('boom')"
            assert "ValueError: boom" in fail["traceback"]
            # the prefork children's work shows in the main process's heartbeats
            capture.wait_for("worker-heartbeat", lambda e: e["processed"] >= 2)
            sent = clients.wait_for("task-sent", uuid=ok.id)
            assert sent["name"] == "proj.add" and sent["queue"] == proj.app.conf.task_default_queue
            assert sent["hostname"].startswith("gen")
        capture.wait_for("worker-offline")
    finally:
        capture.close()
        clients.close()


def test_without_E_no_task_events_but_heartbeats(proj: Any, project: Path, node: str) -> None:
    capture = Capture(proj.app, f"{node}@")
    try:
        with WorkerProcess("proj", cwd=project, args=["-P", "solo", "-n", f"{node}@%h"]):
            capture.wait_for("worker-online")
            assert proj.add.delay(1, 1).get(timeout=20) == 2
            capture.wait_for("worker-heartbeat", lambda e: e["processed"] >= 1)
        assert not [e for e in capture.events if e["type"].startswith("task-")]
    finally:
        capture.close()


def test_without_heartbeat_no_worker_events(proj: Any, project: Path, node: str) -> None:
    capture = Capture(proj.app, f"{node}@")
    try:
        with WorkerProcess("proj", cwd=project, args=["-E", "-P", "threads",
                                                      "--without-heartbeat",
                                                      "-n", f"{node}@%h"]):
            result = proj.add.delay(3, 3)
            assert result.get(timeout=20) == 6
            capture.wait_for("task-succeeded", uuid=result.id)
        assert not [e for e in capture.events if e["type"].startswith("worker-")]
    finally:
        capture.close()


def test_events_dump_prints_lines(configure: Any, project: Path, node: str) -> None:
    proj = configure(worker_send_task_events=True)
    dump = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "proj", "events", "--dump"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(dump.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any("starting capture" in line for line in lines))
        with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-n", f"{node}@%h"]):
            result = proj.add.delay(5, 5)
            assert result.get(timeout=20) == 10
            assert wait_until(lambda: any(
                line.startswith(f"{node}@") and "task succeeded: proj.add(" in line
                and "result=10" in line for line in list(lines))), lines
            assert any(line.startswith(f"{node}@") and "] started: " in line
                       for line in list(lines))
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(10)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()


def test_events_refuses_cameras(project: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "events",
                           "--camera", "x.Camera", "-F", "1"], cwd=project,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no snapshot cameras" in done.stderr
