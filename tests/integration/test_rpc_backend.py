"""``rpc://`` results with a real celeriac worker on RabbitMQ.

One worker (``celeriac -A rpcproj worker``, prefork, 2 processes) serves the module's
tests on a queue of its own (``q-rpc-<hex>``); each test sends from the test process
and reads the replies on its reply queue. Queues are deleted at the end. The wire
details checked here are Celery 5.7's (CELERY-WIRE §4.4): the reply queue's
declaration, and the properties and body of each reply.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import rabbitmq_answers, require  # noqa: E402
from support import delete_rabbitmq as delete_queues  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
T = 30  # seconds a result may take (only reached when something is broken)

PROJECT = '''
import os
import time
from pathlib import Path

from celeriac import Celery

app = Celery("rpcproj", broker={broker!r}, backend="rpc://")
app.conf.task_default_queue = {queue!r}
app.conf.broker_dead_letter_queue = {queue!r} + ".dead"
app.conf.result_expires = 300
app.conf.task_track_started = True
app.conf.result_persistent = os.environ.get("RPC_PERSISTENT") == "1"


class CustomError(Exception):
    """Defined here so the client re-raises it by type."""


@app.task
def add(x, y):
    return x + y


@app.task
def fail(text):
    raise CustomError(text)


@app.task(bind=True)
def progress(self, go_file):
    self.update_state(state="PROGRESS", meta={{"current": 1, "total": 2}})
    deadline = time.monotonic() + 30
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(ignore_result=True)
def quiet(x):
    return x
'''


# -- services and helpers (local copies: tests import nothing from conftest) ------------------


def _raw() -> Any:
    import amqp

    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest",
                           connect_timeout=5)
    conn.connect()
    return conn




def load(project: Path) -> Any:
    import importlib

    sys.modules.pop("rpcproj", None)
    sys.path.insert(0, str(project))
    try:
        return importlib.import_module("rpcproj")
    finally:
        sys.path.remove(str(project))


@contextlib.contextmanager
def running_worker(project: Path, queue: str, **env: str) -> Iterator[Any]:
    from celeriac.contrib.testing import WorkerProcess

    path = os.pathsep.join(p for p in (str(project), os.environ.get("PYTHONPATH")) if p)
    worker = WorkerProcess("rpcproj", cwd=project, env={"PYTHONPATH": path, **env},
                           args=["-P", "prefork", "-c", "2", "-n",
                                 f"rpc-{uuid.uuid4().hex[:6]}@%h"], ready_timeout=60)
    with worker:
        yield worker


@pytest.fixture(scope="module")
def services() -> None:
    try:
        import amqp  # noqa: F401
    except ImportError:
        require("the rpc:// tests need py-amqp: pip install -e '.[dev]'", False)
    require("RabbitMQ is not reachable on 127.0.0.1:5672", rabbitmq_answers())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, services: None) -> Iterator[Any]:
    """(project dir, its queue); the queue and its dead letters deleted at the end."""
    path = tmp_path_factory.mktemp("rpcproj")
    queue = f"q-rpc-{uuid.uuid4().hex[:12]}"
    (path / "rpcproj.py").write_text(PROJECT.format(broker=AMQP_URL, queue=queue))
    try:
        yield path, queue
    finally:
        delete_queues(queue, f"{queue}.dead")


@pytest.fixture(scope="module")
def worker(project: Any) -> Iterator[Any]:
    path, queue = project
    with running_worker(path, queue) as w:
        yield w


@pytest.fixture
def proj(project: Any, worker: Any) -> Iterator[Any]:
    """The project imported in the test process: the client, with a reply queue of its
    own (deleted after the test)."""
    module = load(project[0])
    try:
        yield module
    finally:
        oid = module.app.backend.oid
        module.app.close()
        sys.modules.pop("rpcproj", None)
        delete_queues(oid)


# -- results ------------------------------------------------------------------------------------
def test_a_result_comes_back(proj: Any) -> None:
    r = proj.add.delay(2, 3)
    assert r.get(timeout=T) == 5
    assert r.state == "SUCCESS"
    assert r.date_done is not None


def test_a_failure_is_reraised_by_type(proj: Any) -> None:
    r = proj.fail.delay("broken over rpc")
    with pytest.raises(proj.CustomError, match="broken over rpc"):
        r.get(timeout=T)
    assert r.state == "FAILURE"
    assert isinstance(r.result, proj.CustomError)
    assert "CustomError" in (r.traceback or "")


def test_progress_is_visible_while_the_task_runs(proj: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    r = proj.progress.delay(str(go))
    deadline = time.monotonic() + T
    while r.state != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.state == "PROGRESS"
    assert r.info == {"current": 1, "total": 2}
    assert not r.ready()
    go.touch()
    assert r.get(timeout=T) == "finished"
    assert r.state == "SUCCESS"


def test_get_with_on_message_sees_every_state(proj: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    seen: list[str] = []

    def on_message(meta: dict[str, Any]) -> None:
        seen.append(meta["status"])
        if meta["status"] == "PROGRESS":
            go.touch()

    r = proj.progress.delay(str(go))
    assert r.get(timeout=T, on_message=on_message, interval=0.05) == "finished"
    assert "PROGRESS" in seen and seen[-1] == "SUCCESS", seen


def test_several_results_in_one_client_in_any_order(proj: Any) -> None:
    results = [proj.add.delay(i, i) for i in range(30)]
    # read last first: the replies of the others arrive meanwhile and wait for their get()
    assert [r.get(timeout=T) for r in reversed(results)] == [2 * i for i in reversed(range(30))]


def test_several_threads_wait_on_one_reply_queue(proj: Any) -> None:
    results = [proj.add.delay(i, 100) for i in range(24)]
    got: dict[int, Any] = {}
    errors: list[BaseException] = []

    def read(index: int) -> None:
        try:
            got[index] = results[index].get(timeout=T)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert not errors
    assert got == {i: i + 100 for i in range(24)}


def test_group_get_and_join(proj: Any) -> None:
    from celeriac import group

    g = group(proj.add.s(i, 1) for i in range(10))()
    assert g.get(timeout=T) == list(range(1, 11))
    g2 = group(proj.add.s(i, 2) for i in range(5))()
    assert g2.join(timeout=T) == list(range(2, 7))
    assert g2.ready() and g2.successful()


def test_a_chain_answers_the_client_that_sent_it(proj: Any) -> None:
    r = (proj.add.s(1, 2) | proj.add.s(3) | proj.add.s(4))()
    assert r.get(timeout=T) == 10
    assert r.parent.get(timeout=T) == 6


def test_ignore_result_publishes_nothing(proj: Any) -> None:
    ignored = proj.add.apply_async((1, 1), ignore_result=True)
    assert ignored.get(timeout=T) is None  # at once: nothing will come
    by_task = proj.quiet.delay(7)
    # a later task's reply arriving proves the worker got past both ignored ones
    after = proj.sleep.delay(0.5)
    assert after.get(timeout=T) == 0.5
    backend = proj.app.backend
    assert backend.get_task_meta(ignored.id)["status"] == "PENDING"
    assert backend.get_task_meta(by_task.id)["status"] == "PENDING"


def test_get_timeout_raises_celeriacs_timeout_error(proj: Any) -> None:
    from celeriac.exceptions import TimeoutError

    r = proj.sleep.delay(3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.5)
    assert time.monotonic() - started < 3
    assert r.get(timeout=T) == 3  # the reply still comes to its get()


def test_a_forked_child_gets_its_own_reply_queue(proj: Any) -> None:
    parent_first = proj.add.delay(1, 1)
    assert parent_first.get(timeout=T) == 2
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own queue, its own connection
        code = 1
        try:
            os.close(read)
            oid = proj.app.backend.oid
            r = proj.add.delay(20, 22)
            ok = r.get(timeout=T) == 42 and proj.app.backend.oid == oid
            os.write(write, json.dumps({"ok": ok, "oid": oid}).encode())
            proj.app.close()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        report = json.loads(fh.read() or "{}")
    os.waitpid(pid, 0)
    assert report.get("ok"), report
    assert report["oid"] != proj.app.backend.oid
    delete_queues(report["oid"])
    assert proj.add.delay(2, 2).get(timeout=T) == 4  # the parent's queue still works


def test_the_client_recovers_a_deleted_queue_and_a_dropped_connection(proj: Any) -> None:
    import socket as socket_module

    assert proj.add.delay(1, 1).get(timeout=T) == 2
    backend = proj.app.backend
    delete_queues(backend.oid)  # RabbitMQ cancels our consumer
    assert proj.add.delay(2, 2).get(timeout=T) == 4  # declared again before the send
    # the reply connection's socket dies under it, as when the server goes away
    backend._reply.conn.sock.shutdown(socket_module.SHUT_RDWR)
    r = proj.add.delay(3, 3)
    assert r.get(timeout=T) == 6


# -- the wire ------------------------------------------------------------------------------------
def test_the_reply_queue_is_declared_as_celery_declares_it(proj: Any) -> None:
    proj.add.delay(1, 2).get(timeout=T)
    oid = proj.app.backend.oid
    uuid.UUID(oid)
    conn = _raw()
    try:
        # RabbitMQ refuses a declaration that differs from the queue's: these are
        # Celery 5.7's arguments (durable, auto-delete, x-expires = result_expires)
        conn.channel().queue_declare(oid, durable=True, auto_delete=True, exclusive=False,
                                     arguments={"x-expires": 300_000})
        import amqp

        with pytest.raises(amqp.exceptions.PreconditionFailed):
            conn.channel().queue_declare(oid, durable=False, auto_delete=True,
                                         arguments={"x-expires": 300_000})
    finally:
        conn.close()


def _replies_to_a_queue_of_our_own(proj: Any, reply_queue: str, count: int,
                                   **options: Any) -> list[Any]:
    conn = _raw()
    try:
        ch = conn.channel()
        ch.queue_declare(reply_queue, durable=False, auto_delete=False, exclusive=False)
        r = proj.add.apply_async((2, 5), reply_to=reply_queue, **options)
        got: list[Any] = []
        deadline = time.monotonic() + T
        while len(got) < count and time.monotonic() < deadline:
            m = ch.basic_get(reply_queue, no_ack=True)
            if m is None:
                time.sleep(0.02)
                continue
            got.append(m)
        assert len(got) == count, [m.body for m in got]
        for m in got:
            assert m.properties["correlation_id"] == r.id
        return got
    finally:
        with contextlib.suppress(Exception):
            conn.channel().queue_delete(reply_queue)
        conn.close()


def test_each_state_is_a_message_in_celerys_layout(proj: Any) -> None:
    got = _replies_to_a_queue_of_our_own(proj, f"rpc-capture-{uuid.uuid4().hex[:8]}", 2)
    started, done = (json.loads(m.body) for m in got)
    assert started["status"] == "STARTED"  # task_track_started
    assert set(started["result"]) == {"pid", "hostname"}
    assert done["status"] == "SUCCESS" and done["result"] == 7
    assert done["task_id"] == got[1].properties["correlation_id"]
    assert {"traceback", "children", "date_done"} <= set(done)
    for m in got:
        assert m.properties["content_type"] == "application/json"
        assert m.properties["content_encoding"] == "utf-8"
        assert m.properties["delivery_mode"] == 1
    # the client never saw them: they went where the message said
    assert proj.app.backend.get_task_meta(done["task_id"])["status"] == "PENDING"


def test_result_persistent_makes_replies_persistent(project: Any, worker: Any) -> None:
    path, queue = project
    # a second worker on its own queue, started with result_persistent = True
    other = f"{queue}-persistent"
    source = (path / "rpcproj.py").read_text().replace(repr(queue), repr(other))
    sub = path / "persistent"
    sub.mkdir(exist_ok=True)
    (sub / "rpcproj.py").write_text(source)
    try:
        with running_worker(sub, other, RPC_PERSISTENT="1"):
            module = load(sub)
            try:
                got = _replies_to_a_queue_of_our_own(
                    module, f"rpc-capture-{uuid.uuid4().hex[:8]}", 2)
                assert [m.properties["delivery_mode"] for m in got] == [2, 2]
            finally:
                module.app.close()
                sys.modules.pop("rpcproj", None)
    finally:
        delete_queues(other, f"{other}.dead")


def test_a_worker_whose_rpc_backend_is_unreachable_says_so(tmp_path: Path,
                                                           services: None) -> None:
    import subprocess

    queue = f"q-rpc-{uuid.uuid4().hex[:12]}"
    (tmp_path / "rpcbad.py").write_text(textwrap.dedent(f"""
        from celeriac import Celery
        app = Celery("rpcbad", broker={AMQP_URL!r},
                     backend="rpc://guest:guest@127.0.0.1:1//")
        app.conf.task_default_queue = {queue!r}
        app.conf.broker_connection_retry_on_startup = False
    """))
    try:
        out = subprocess.run([sys.executable, "-m", "celeriac", "-A", "rpcbad", "worker"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(tmp_path)))
        text = out.stdout + out.stderr
        assert out.returncode != 0, text
        assert "result backend" in text and "127.0.0.1:1" in text, text
        assert "connection refused" in text, text
    finally:
        delete_queues(queue, f"{queue}.dead")


# -- the documentation's example runs as written -------------------------------------------------
def test_the_docs_example_runs(tmp_path: Path, services: None) -> None:
    import re
    import subprocess

    from celeriac.contrib.testing import WorkerProcess

    doc = (Path(__file__).resolve().parents[2] / "docs" / "rpc-backend.md").read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", doc, re.S))
    assert set(files) == {"rpc_tasks.py", "rpc_client.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    try:
        with WorkerProcess("rpc_tasks", cwd=tmp_path, env=env, ready_timeout=60):
            out = subprocess.run([sys.executable, "rpc_client.py"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60,
                                 env=dict(os.environ, **env))
        assert out.returncode == 0, out.stderr
        assert "add: 5" in out.stdout
        assert "group: [0, 2, 4, 6, 8]" in out.stdout
        assert "progress: {'done': " in out.stdout
        assert "crunch: crunched 3" in out.stdout
    finally:
        delete_queues("hello-rpc")
