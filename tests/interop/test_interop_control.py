"""Remote control across the two: Celery's client and CLI against celeriac workers,
celeriac's client and CLI against Celery workers, on one Redis and on RabbitMQ.

Each test has its own control exchange and queue, so nothing else on the server hears
its requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import delete_rabbitmq, rabbitmq_answers, require, wait_until

from celeriac.contrib.testing import WorkerProcess

APPS = '''
import time
from {package} import Celery
app = Celery("ictl", broker="{broker}", backend="{backend}")
app.conf.control_exchange = "{exchange}"
app.conf.task_default_queue = "{queue}"

@app.task(name="ictl.add")
def add(x, y):
    return x + y

@app.task(name="ictl.wait_for")
def wait_for(path):
    import os
    open(path + ".started", "w").close()
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"
'''


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["redis", "amqp"])
def apps(request: pytest.FixtureRequest, redis_server: str,
         tmp_path: Path) -> Iterator[SimpleApps]:
    pytest.importorskip("celery")
    tag = uuid.uuid4().hex[:8]
    backend = f"{redis_server}/12"
    broker = backend
    if request.param == "amqp":
        require("RabbitMQ is not reachable on 127.0.0.1:5672", rabbitmq_answers())
        broker = RABBITMQ
        request.addfinalizer(lambda: delete_rabbitmq(
            f"ictl-q-{tag}", f"ictl-{tag}.pidbox", f"reply.ictl-{tag}.pidbox"))
    for module, package in (("capp", "celery"), ("rapp", "celeriac")):
        (tmp_path / f"{module}.py").write_text(APPS.format(
            package=package, broker=broker, backend=backend, exchange=f"ictl-{tag}",
            queue=f"ictl-q-{tag}"))
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        for name in ("capp", "rapp"):
            sys.modules.pop(name, None)
        yield SimpleApps(importlib.import_module("capp"), importlib.import_module("rapp"),
                         tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("capp", "rapp"):
            sys.modules.pop(name, None)


class SimpleApps:
    def __init__(self, celery: Any, celeriac: Any, path: Path) -> None:
        self.celery, self.celeriac, self.path = celery, celeriac, path


def run(path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=path, capture_output=True,
                          text=True, timeout=60)


def celery_worker(path: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "capp", "worker", "-P",
                             "threads", "-c", "2", "-n", name, "-l", "warning", "--without-mingle"],
                            cwd=path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_celery_inspect_and_control_answer_from_a_celeriac_worker(apps: SimpleApps) -> None:
    path = apps.path
    with WorkerProcess("rapp", cwd=path, args=["-c", "2", "-n", "ours@x"]):
        done = run(path, "celery", "-A", "capp", "inspect", "ping")
        assert done.returncode == 0, done.stderr
        assert "ours@x: OK" in done.stdout and "pong" in done.stdout
        done = run(path, "celery", "-A", "capp", "inspect", "registered")
        assert "* ictl.add" in done.stdout
        marker = str(path / "go")
        running = apps.celeriac.wait_for.delay(marker)
        assert wait_until(lambda: Path(marker + ".started").exists())
        active = apps.celery.app.control.inspect(timeout=2).active()
        assert [t["id"] for t in active["ours@x"]] == [running.id]
        stats = apps.celery.app.control.inspect(timeout=2).stats()["ours@x"]
        assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
        done = run(path, "celery", "-A", "capp", "control", "rate_limit", "ictl.add", "5/s")
        assert "new rate limit set successfully" in done.stdout, done.stdout + done.stderr
        Path(marker).touch()
        assert running.get(timeout=20) == "done"
        # Celery's revoke is a broadcast: the celeriac worker keeps it in the broker, so
        # the task is skipped when it arrives.
        doomed = str(uuid.uuid4())
        apps.celery.app.control.revoke(doomed)
        assert wait_until(lambda: doomed in (
            apps.celeriac.app.control.inspect(timeout=1).revoked() or {}).get("ours@x", []))
        skipped = apps.celeriac.add.apply_async((1, 1), task_id=doomed)
        assert wait_until(lambda: skipped.state == "REVOKED", 90)  # load-bound on 2 cores


def test_celeriac_inspect_answers_from_a_celery_worker(apps: SimpleApps) -> None:
    path = apps.path
    worker = celery_worker(path, "theirs@x")
    try:
        assert wait_until(lambda: apps.celeriac.app.control.inspect(timeout=0.5).ping(),
                          timeout=60)
        assert apps.celeriac.app.control.inspect(timeout=2).ping() == {
            "theirs@x": {"ok": "pong"}}
        registered = apps.celeriac.app.control.inspect(timeout=2).registered()
        assert "ictl.add" in registered["theirs@x"]
        done = run(path, "celeriac", "-A", "rapp", "inspect", "stats", "--json")
        assert done.returncode == 0, done.stderr
        assert "pool" in json.loads(done.stdout)["theirs@x"]
        done = run(path, "celeriac", "-A", "rapp", "status")
        assert "1 node online." in done.stdout
        marker = str(path / "go")
        running = apps.celeriac.wait_for.delay(marker)
        assert wait_until(lambda: Path(marker + ".started").exists())
        active = apps.celeriac.app.control.inspect(timeout=2).active()
        assert [t["id"] for t in active["theirs@x"]] == [running.id]
        Path(marker).touch()
        assert running.get(timeout=20) == "done"
    finally:
        worker.kill()
        worker.wait(10)
