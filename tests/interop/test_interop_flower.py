"""A real Flower 2.2 pointed at a celeriac worker: it lists the worker (from its
heartbeat events), inspects it (remote control) and shows its tasks (task events)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import free_port, wait_until

from celeriac.contrib.testing import WorkerProcess

APP = '''
from celeriac import Celery
app = Celery("fproj", broker="{url}", backend="{url}")
app.conf.control_exchange = "{exchange}"
app.conf.event_exchange = "{events}"
app.conf.task_default_queue = "{queue}"

@app.task
def add(x, y):
    return x + y
'''


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_flower_sees_a_celeriac_worker_and_its_tasks(redis_server: str, tmp_path: Path) -> None:
    pytest.importorskip("flower")
    tag = uuid.uuid4().hex[:8]
    url = f"{redis_server}/11"
    (tmp_path / "fproj.py").write_text(APP.format(url=url, exchange=f"fl-{tag}",
                                                  events=f"flev-{tag}", queue=f"fl-q-{tag}"))
    (tmp_path / "fcelery.py").write_text(
        f"from celery import Celery\napp = Celery('fproj', broker='{url}')\n"
        f"app.conf.control_exchange = 'fl-{tag}'\napp.conf.event_exchange = 'flev-{tag}'\n")
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fcelery", "flower", f"--port={port}",
         "--address=127.0.0.1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ, FLOWER_UNAUTHENTICATED_API="1"),
        start_new_session=True)
    sys.path.insert(0, str(tmp_path))
    try:
        import fproj

        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: get_json(f"{base}/api/workers?refresh=0") is not None,
                          timeout=60)
        with WorkerProcess("fproj", cwd=tmp_path, args=["-c", "2", "-E", "-n", "fw@x"]):
            assert [fproj.add.delay(i, i).get(timeout=20) for i in range(3)] == [0, 2, 4]
            workers = get_json(f"{base}/api/workers?refresh=1&workername=fw@x") or {}
            node = workers.get("fw@x") or {}
            assert node["stats"]["pool"]["max-concurrency"] == 2
            assert "fproj.add" in node["registered"]
            assert [q["name"] for q in node["active_queues"]] == [f"fl-q-{tag}"]
            assert node["active"] == []

            def tasks() -> dict[str, Any]:
                return get_json(f"{base}/api/tasks") or {}

            assert wait_until(lambda: sum(t["state"] == "SUCCESS" for t in tasks().values())
                              >= 3)
            done = [t for t in tasks().values() if t["name"] == "fproj.add"]
            assert sorted(t["result"] for t in done) == ["0", "2", "4"]
            assert {t["worker"] for t in done} == {"fw@x"}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fproj", None)
        flower.kill()
        flower.wait(10)
