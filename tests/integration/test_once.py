"""QueueOnce with a real worker: a task is queued once per arguments until it ends.

Locks live in Redis (a private key prefix, Redis broker and results) or, with ``ONCE``
unset, in the embedded SQLite file beside the messages.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, lines, wait_until  # noqa: E402

from celeriac import states
from celeriac.contrib.once import AlreadyQueued, LockBackendError
from celeriac.contrib.testing import WorkerProcess

REDIS = "redis://127.0.0.1:6379/13"

PROJECT = '''
from pathlib import Path
import time

from celeriac import Celery
from celeriac.contrib.once import QueueOnce

app = Celery("onceproj", broker=BROKER, backend=BACKEND)
app.conf.task_default_queue = QUEUE
if ONCE is not None:
    app.conf.ONCE = ONCE


@app.task(base=QueueOnce, once={"timeout": TIMEOUT})
def hold(marker, n):
    """Waits for marker/go, so a test decides when it ends."""
    with open(Path(marker) / "started", "a") as fh:
        fh.write(f"{n}\\n")
    while not (Path(marker) / "go").exists():
        time.sleep(0.02)
    return n


@app.task(once={"keys": ["n"]})
def boom(n, note=""):
    raise ValueError(f"boom {n}")
'''


def _write_project(directory: Path, broker: str, backend: str, once: Any,
                   timeout: float = 60) -> str:
    queue = f"once-{uuid.uuid4().hex[:8]}"
    values = {"BROKER": broker, "BACKEND": backend, "QUEUE": queue, "ONCE": once,
              "TIMEOUT": timeout}
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    (directory / "onceproj.py").write_text(header + textwrap.dedent(PROJECT))
    return queue


def _import(directory: Path) -> Any:
    sys.modules.pop("onceproj", None)
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("onceproj")
    finally:
        sys.path.remove(str(directory))


def _store(name: str, directory: Path, redis_server: Any) -> tuple[str, str, Any]:
    """``(broker, backend, ONCE)`` for a lock store."""
    if name == "redis":
        prefix = f"test-once-{uuid.uuid4().hex[:8]}:"
        once = {"backend": "celeriac.contrib.once.Redis",
                "settings": {"url": REDIS, "key_prefix": prefix}}
        return REDIS, REDIS, once
    url = f"sqlite:///{directory / 'celeriac.sqlite3'}"
    return url, url, None  # ONCE unset: the locks go in the broker's own file


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The project's module (client side) with one worker serving it."""
    if request.param == "redis":
        request.getfixturevalue("redis_server")
    directory = tmp_path_factory.mktemp(f"once-{request.param}")
    broker, backend, once = _store(request.param, directory, None)
    _write_project(directory, broker, backend, once)
    module = _import(directory)
    with WorkerProcess("onceproj", cwd=directory, args=["-P", "threads", "-c", "3"]):
        yield module
    _forget(module)


def _forget(module: Any) -> None:
    backend = module.hold.once_backend
    if hasattr(backend, "client"):  # Redis: no key of ours is left behind
        keys = list(backend.client.scan_iter(match=backend.prefix + "*"))
        if keys:
            backend.client.delete(*keys)
    module.app.close()
    sys.modules.pop("onceproj", None)


def test_a_second_send_is_refused_until_the_task_ends(served: Any, tmp_path: Path) -> None:
    first = served.hold.delay(str(tmp_path), 1)
    assert wait_until(lambda: lines(tmp_path / "started") == ["1"])
    with pytest.raises(AlreadyQueued) as refused:
        served.hold.delay(str(tmp_path), 1)
    assert 0 < refused.value.countdown <= 60
    graceful = served.hold.apply_async((str(tmp_path), 1), once={"graceful": True})
    assert graceful.state == states.REJECTED and graceful.get() is None
    other = served.hold.delay(str(tmp_path), 2)  # other arguments, another lock
    (tmp_path / "go").touch()
    assert first.get(timeout=20) == 1 and other.get(timeout=20) == 2
    # the worker releases the lock just after storing the result
    assert wait_until(lambda: _accepted(served.hold, str(tmp_path), 1))
    assert wait_until(lambda: sorted(lines(tmp_path / "started")) == ["1", "1", "2"])


def test_a_failed_task_releases_its_lock(served: Any) -> None:
    n = uuid.uuid4().int % 10**6
    failed = served.boom.delay(n)
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    # keys=["n"]: another note is the same lock, taken again once the failure released it
    assert wait_until(lambda: _accepted(served.boom, n, note="again"))


def _accepted(task: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        task.delay(*args, **kwargs)
    except AlreadyQueued:
        return False
    return True


def test_a_killed_workers_lock_expires(redis_server: str, tmp_path: Path) -> None:
    broker, backend, once = _store("redis", tmp_path, redis_server)
    _write_project(tmp_path, broker, backend, once, timeout=1.5)
    module = _import(tmp_path)
    try:
        with WorkerProcess("onceproj", cwd=tmp_path, args=["-P", "solo"]) as worker:
            module.hold.delay(str(tmp_path), 7)
            assert wait_until(lambda: lines(tmp_path / "started") == ["7"])
            worker.kill()  # nobody will release the lock: only its timeout can
        refused = 0
        while not _accepted(module.hold, str(tmp_path), 7):
            refused += 1
            time.sleep(0.01)
            assert refused < 10_000, "the lock never expired"
        assert refused >= 1
    finally:
        module.app.connect_broker().purge(module.app.conf.task_default_queue)
        _forget(module)


def test_a_lock_backend_that_is_down_is_named(tmp_path: Path) -> None:
    port = free_port()
    once = {"backend": "celeriac.contrib.once.Redis",
            "settings": {"url": f"redis://:secret@127.0.0.1:{port}/0"}}
    store = f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"
    _write_project(tmp_path, store, store, once)
    module = _import(tmp_path)
    try:
        with pytest.raises(LockBackendError) as down:
            module.hold.delay(str(tmp_path), 1)
        assert f"redis://:**@127.0.0.1:{port}/0" in str(down.value)
        assert "secret" not in str(down.value)
        assert module.app.connect_broker().size(module.app.conf.task_default_queue) == 0
    finally:
        module.app.close()
        sys.modules.pop("onceproj", None)


def test_the_docs_example_runs(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "once.md").read_text()
    for name, source in re.findall(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", doc, re.S):
        (tmp_path / name).write_text(source)
    with WorkerProcess("once_tasks", cwd=tmp_path, args=["-P", "threads", "-c", "2"]):
        done = subprocess.run([sys.executable, "once_client.py"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "again: REJECTED None",
        "refused: the lock expires in 60 s at most",
        "other: rebuilt search",
        "first: rebuilt index",
        "user 7 is already queued",
    ]
