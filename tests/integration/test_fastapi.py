"""FastAPI: docs/fastapi.md's app (``await task.adelay()``, ``await result.aget()``)
served by Starlette's TestClient and by a real uvicorn process, against a real worker;
and in eager mode, with no worker."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.contrib.testing import WorkerProcess

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

DOC = Path(__file__).resolve().parents[2] / "docs" / "fastapi.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", re.S)
MODULE = "fastapi_demo"


def _forget_module() -> None:
    # imported here under the doc's name: no other test's module of that name is used
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The doc's module in a directory, with a worker serving it on a private broker."""
    where = tmp_path_factory.mktemp("fastapi_project")
    files = dict(FILE_BLOCK.findall(DOC.read_text()))
    assert list(files) == [f"{MODULE}.py"]
    (where / f"{MODULE}.py").write_text(files[f"{MODULE}.py"])
    env = {"CELERIAC_BROKER_URL": f"sqlite:///{where / 'broker.sqlite3'}"}
    mp = pytest.MonkeyPatch()
    mp.setenv("CELERIAC_BROKER_URL", env["CELERIAC_BROKER_URL"])
    mp.syspath_prepend(str(where))
    _forget_module()
    try:
        with WorkerProcess(MODULE, cwd=where, env=env, args=["-P", "threads", "-c", "4"]):
            import fastapi_demo  # type: ignore[import-not-found]

            yield {"module": fastapi_demo, "where": where, "env": env}
    finally:
        _forget_module()
        mp.undo()


def _exercise(client: Any) -> None:
    """What a user of the doc's app sees, through any HTTP client."""
    task_id = client.post("/add", params={"x": 2, "y": 3}).json()["task_id"]
    reply = client.get(f"/result/{task_id}", params={"wait": 20}).json()
    assert reply == {"task_id": task_id, "state": "SUCCESS", "value": 5}
    assert client.get(f"/state/{task_id}").json() == {
        "task_id": task_id, "state": "SUCCESS", "ready": True}

    failing = client.post("/divide", params={"x": 1, "y": 0}).json()["task_id"]
    reply = client.get(f"/result/{failing}", params={"wait": 20})
    assert reply.status_code == 500
    assert reply.json()["detail"] == "ZeroDivisionError: float division by zero"

    unknown = client.get("/result/no-such-task", params={"wait": 0.2})
    assert unknown.status_code == 504
    assert unknown.json()["detail"] == "no-such-task is PENDING"


def test_starlette_test_client_against_a_worker(project: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    with TestClient(project["module"].app) as client:
        _exercise(client)
        # many requests waiting at once: each woken with its own result
        ids = [client.post("/add", params={"x": i, "y": i}).json()["task_id"]
               for i in range(10)]
        assert [client.get(f"/result/{tid}").json()["value"] for tid in ids] == \
            [2 * i for i in range(10)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_served_by_uvicorn_against_a_worker(project: dict[str, Any]) -> None:
    pytest.importorskip("uvicorn")
    port = _free_port()
    log = project["where"] / f"uvicorn-{port}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"{MODULE}:app", "--port", str(port),
             "--host", "127.0.0.1"],
            cwd=project["where"], env={**os.environ, **project["env"]},
            stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while b"Uvicorn running" not in log.read_bytes():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=30) as client:
            _exercise(client)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_eager_mode_needs_no_worker(project: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    conf = project["module"].celery_app.conf
    conf.update(task_always_eager=True, task_store_eager_result=True)
    try:
        with TestClient(project["module"].app) as client:
            task_id = client.post("/add", params={"x": 20, "y": 22}).json()["task_id"]
            assert client.get(f"/result/{task_id}").json()["value"] == 42
    finally:
        conf.update(task_always_eager=False, task_store_eager_result=False)
