"""The memcached result backend on the machine's memcached (127.0.0.1:11211).

One celeriac worker (prefork, 4 processes, broker in a SQLite file) serves the module;
its results go to memcached. Every key is a uuid task or group id's, deleted at the end:
the server is shared, and never flushed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import answers, free_port, lines, require, wait_until  # noqa: E402

HOST, PORT = "127.0.0.1", 11211
URL = f"cache+memcached://{HOST}:{PORT}/"
T = 30  # seconds a result may take (only reached when something is broken)
DAY = 24 * 3600

PROJECT = '''
import time
from pathlib import Path

from celeriac import Celery

app = Celery("cacheproj", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.result_expires = 300


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values, marker=None):
    if marker:
        with open(marker, "a") as fh:
            fh.write("body\\n")
    return sum(values)


@app.task
def fail(text):
    raise KeyError(text)


@app.task(bind=True)
def progress(self, go_file):
    self.update_state(state="PROGRESS", meta={{"done": 1, "of": 2}})
    deadline = time.monotonic() + 30
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


@app.task
def big(size):
    return "x" * size
'''


def _client(**options: Any) -> Any:
    from pymemcache.client.base import Client

    return Client((HOST, PORT), default_noreply=False, connect_timeout=5, timeout=5,
                  **options)


class _Flags:
    """A serde that reads (value, flags), to see what is stored exactly."""

    def serialize(self, key: Any, value: Any) -> tuple[Any, int]:
        return value, 0

    def deserialize(self, key: Any, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


def ttl_of(key: str) -> int | None:
    """Seconds ``key`` has left (-1: none), from memcached's meta get; None: no key."""
    with socket.create_connection((HOST, PORT), timeout=5) as sock:
        sock.sendall(f"mg {key} t\r\n".encode())
        reply = sock.recv(256).decode()
    if reply.startswith("EN"):
        return None
    flags = dict((word[0], word[1:]) for word in reply.split()[1:])
    return int(flags["t"])


@pytest.fixture(scope="module")
def memcached() -> Iterator[Any]:
    """A raw client of the shared server; the keys put in ``keys`` are deleted after."""
    try:
        import pymemcache  # noqa: F401
    except ImportError:
        require("the memcached tests need pymemcache: pip install -e '.[dev]'", False)
    require(f"memcached is not reachable on {HOST}:{PORT}",
            answers(PORT, b"version\r\n", b"VERSION"))
    raw = _client(serde=_Flags())
    raw.keys = []
    yield raw
    for start in range(0, len(raw.keys), 200):
        raw.delete_many(raw.keys[start:start + 200])
    raw.close()


@pytest.fixture(scope="module")
def proj(memcached: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The client module of a project whose worker is running."""
    import importlib

    from celeriac.contrib.testing import WorkerProcess

    folder = tmp_path_factory.mktemp("cacheproj")
    queue = f"q-cache-{uuid.uuid4().hex[:12]}"
    (folder / "cacheproj.py").write_text(PROJECT.format(
        broker=f"sqlite:///{folder / 'broker.sqlite3'}", backend=URL, queue=queue))
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    with WorkerProcess("cacheproj", cwd=folder, env={"PYTHONPATH": path},
                       args=["-P", "prefork", "-c", "4"], ready_timeout=60):
        sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module("cacheproj")
        finally:
            sys.path.remove(str(folder))
        try:
            yield module
        finally:
            module.app.close()
            sys.modules.pop("cacheproj", None)


def _sent(memcached: Any, *results: Any) -> None:
    for r in results:
        memcached.keys.append(f"celery-task-meta-{r.id}")


# -- through the worker -------------------------------------------------------------------
def test_a_result_in_celerys_key_layout(proj: Any, memcached: Any) -> None:
    import json

    r = proj.add.delay(2, 3)
    _sent(memcached, r)
    assert r.get(timeout=T) == 5
    value, flags = memcached.get(f"celery-task-meta-{r.id}")
    assert flags == 0  # bytes, as Celery's own client writes them
    meta = json.loads(value)
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 5, r.id)
    # result_expires is the item's TTL
    ttl = ttl_of(f"celery-task-meta-{r.id}")
    assert ttl is not None and 0 < ttl <= 300


def test_a_failure_is_raised_with_its_type(proj: Any, memcached: Any) -> None:
    r = proj.fail.delay("no such thing")
    _sent(memcached, r)
    with pytest.raises(KeyError, match="no such thing"):
        r.get(timeout=T)
    assert r.state == "FAILURE" and r.traceback


def test_a_custom_state_is_seen_while_the_task_runs(proj: Any, memcached: Any,
                                                    tmp_path: Path) -> None:
    go = tmp_path / "go"
    r = proj.progress.delay(str(go))
    _sent(memcached, r)
    try:
        assert wait_until(lambda: r.state == "PROGRESS", T)
        assert r.info == {"done": 1, "of": 2}
    finally:
        go.touch()
    assert r.get(timeout=T) == "finished"


def test_a_group_and_its_saved_result(proj: Any, memcached: Any) -> None:
    from celeriac import GroupResult, group

    g = group(proj.add.s(i, i) for i in range(10))()
    _sent(memcached, *g.results)
    memcached.keys.append(f"celery-taskset-meta-{g.id}")
    assert g.get(timeout=T) == [i * 2 for i in range(10)]
    g.save()
    restored = GroupResult.restore(g.id, app=proj.app)
    assert [r.id for r in restored.results] == [r.id for r in g.results]
    assert restored.get(timeout=T) == [i * 2 for i in range(10)]
    g.delete()
    assert GroupResult.restore(g.id, app=proj.app) is None
    g.forget()
    assert all(r.state == "PENDING" for r in g.results)


def test_chords_with_racing_parts_run_their_body_once(proj: Any, memcached: Any,
                                                      tmp_path: Path) -> None:
    from celeriac import chord

    marker = tmp_path / "bodies"
    chords = [chord([proj.add.s(i, n) for i in range(16)])(proj.tsum.s(marker=str(marker)))
              for n in range(3)]
    for c in chords:
        _sent(memcached, c, *c.parent.results)
        memcached.keys.append(f"celery-taskset-meta-{c.parent.id}.d")
    assert [c.get(timeout=T) for c in chords] == [sum(range(16)) + 16 * n for n in range(3)]
    assert lines(marker) == ["body"] * 3


def test_a_chord_with_a_failed_part_fails_its_body(proj: Any, memcached: Any) -> None:
    from celeriac import chord
    from celeriac.exceptions import ChordError

    c = chord([proj.add.s(1, 1), proj.fail.s("part")])(proj.tsum.s())
    _sent(memcached, c, *c.parent.results)
    with pytest.raises(ChordError, match="part"):
        c.get(timeout=T)


def test_a_result_too_large_for_memcached_becomes_the_tasks_failure(proj: Any,
                                                                    memcached: Any) -> None:
    from celeriac.exceptions import ResultNotSerializable

    limit = int(memcached.stats("settings")[b"item_size_max"])
    r = proj.big.delay(limit + 1)
    _sent(memcached, r)
    with pytest.raises(ResultNotSerializable, match="item_size_max"):
        r.get(timeout=T)
    assert r.state == "FAILURE"


def test_a_worker_stops_at_start_up_when_memcached_is_unreachable(tmp_path: Path,
                                                                  memcached: Any) -> None:
    port = free_port()
    (tmp_path / "downproj.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('downproj', broker='sqlite:///{tmp_path / 'b.sqlite3'}', "
        f"backend='cache+memcached://127.0.0.1:{port}/')\n"
        "app.conf.broker_connection_retry_on_startup = False\n")
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "downproj", "worker",
                           "-c", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert " ready." not in output
    (line,) = [line for line in output.splitlines() if "Cannot start" in line]
    assert f"result backend cache+memcached://127.0.0.1:{port}/" in line
    assert "connection refused" in line and f"memcached 127.0.0.1:{port}" in line


# -- in this process ------------------------------------------------------------------------
def _app(**conf: Any) -> Any:
    from celeriac import Celery

    app = Celery("cachelocal", broker="memory://", backend=conf.pop("backend", URL))
    app.conf.update(conf)
    return app


def test_the_cache_setting_spelling_and_its_options(memcached: Any) -> None:
    prefix = f"celeriac-test-{uuid.uuid4().hex[:8]}:"
    app = _app(backend="cache", cache_backend=f"memcached://{HOST}:{PORT}/",
               cache_backend_options={"key_prefix": prefix.encode(), "timeout": 2})
    task_id = str(uuid.uuid4())
    memcached.keys += [f"{prefix}celery-task-meta-{task_id}"]
    app.backend.mark_as_done(task_id, {"k": "v"})
    assert app.AsyncResult(task_id).get(timeout=T) == {"k": "v"}
    assert memcached.get(f"{prefix}celery-task-meta-{task_id}") is not None
    assert memcached.get(f"celery-task-meta-{task_id}") is None
    app.close()


def test_many_metas_in_one_read_and_forget(memcached: Any) -> None:
    app = _app()
    backend = app.backend
    ids = [str(uuid.uuid4()) for _ in range(3)]
    memcached.keys += [f"celery-task-meta-{i}" for i in ids]
    backend.mark_as_done(ids[0], 1)
    backend.mark_as_failure(ids[1], ValueError("bad"))
    metas = backend.get_many_metas(ids)
    assert [m["status"] for m in metas] == ["SUCCESS", "FAILURE", "PENDING"]
    assert isinstance(backend.exception_to_python(metas[1]["result"]), ValueError)
    backend.forget(ids[0])
    assert backend.get_task_meta(ids[0])["status"] == "PENDING"
    app.close()


def test_result_expires_over_thirty_days_is_kept_that_long(memcached: Any) -> None:
    # Sent as a relative 31 days, memcached would read a time in 1970 and drop the key.
    app = _app(result_expires=31 * DAY)
    task_id = str(uuid.uuid4())
    memcached.keys.append(f"celery-task-meta-{task_id}")
    app.backend.mark_as_done(task_id, 1)
    ttl = ttl_of(f"celery-task-meta-{task_id}")
    # memcached turns an absolute time back into seconds left with its own coarse clock
    # (it ticks once a second, from its start): a few seconds over are its rounding
    assert ttl is not None and 30 * DAY < ttl <= 31 * DAY + 10
    assert app.AsyncResult(task_id).get(timeout=T) == 1
    app.close()


def test_an_asyncio_client_awaits_a_result(memcached: Any) -> None:
    app = _app()
    task_id = str(uuid.uuid4())
    memcached.keys.append(f"celery-task-meta-{task_id}")

    async def main() -> Any:
        waiting = asyncio.ensure_future(app.backend.await_for(task_id, timeout=T,
                                                              interval=0.05))
        await asyncio.sleep(0.05)
        app.backend.mark_as_done(task_id, "awaited")
        return await waiting

    assert asyncio.run(main())["result"] == "awaited"
    app.close()


def test_chord_parts_racing_on_threads_give_the_parts_to_one_caller(memcached: Any) -> None:
    app = _app()
    backend = app.backend
    gid = str(uuid.uuid4())
    size = 40
    key = f"celery-taskset-meta-{gid}"
    memcached.keys += [f"{key}.{s}" for s in "sntd"] + [f"{key}.j{i}" for i in range(size)]
    backend.set_chord_size(gid, size)
    winners: list[Any] = []
    start = threading.Barrier(8)

    def run(first: int) -> None:
        start.wait()
        # every part twice (a redelivery), from two threads
        for index in [*range(first, size, 4), *range(first, size, 4)]:
            parts = backend.chord_part_return(gid, index, f"t{index}", "SUCCESS", index)
            if parts is not None:
                winners.append(parts)

    threads = [threading.Thread(target=run, args=(n % 4,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    (parts,) = winners
    assert [p.result for p in parts] == list(range(size))
    assert [p.task_id for p in parts] == [f"t{i}" for i in range(size)]
    app.close()


def test_a_part_added_to_the_chord_is_waited_for(memcached: Any) -> None:
    app = _app()
    backend = app.backend
    gid = str(uuid.uuid4())
    key = f"celery-taskset-meta-{gid}"
    memcached.keys += [f"{key}.{s}" for s in "sntd"] + [f"{key}.j{i}" for i in range(3)]
    backend.set_chord_size(gid, 2)
    assert backend.add_to_chord(gid) == 3
    assert backend.chord_part_return(gid, 0, "a", "SUCCESS", 0) is None
    assert backend.chord_part_return(gid, 1, "b", "SUCCESS", 1) is None
    parts = backend.chord_part_return(gid, 2, "c", "SUCCESS", 2)
    assert parts is not None and [p.task_id for p in parts] == ["a", "b", "c"]
    app.close()


def test_a_client_used_before_a_fork_works_in_the_child_and_the_parent(memcached: Any) -> None:
    app = _app()
    backend = app.backend
    before, in_child = str(uuid.uuid4()), str(uuid.uuid4())
    memcached.keys += [f"celery-task-meta-{i}" for i in (before, in_child)]
    backend.mark_as_done(before, "parent")
    pid = os.fork()
    if pid == 0:  # the child: its own connections, or its reads would mix with the parent's
        code = 1
        try:
            if backend.get_task_meta(before)["result"] == "parent":
                backend.mark_as_done(in_child, "child")
                code = 0
        finally:
            os._exit(code)
    assert backend.get_task_meta(before)["result"] == "parent"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.get_task_meta(in_child)["result"] == "child"
    app.close()



@contextmanager
def private_memcached(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A memcached of the test's own on ``port`` (the shared one is never restarted)."""
    binary = shutil.which("memcached")
    require("memcached is not on PATH", binary is not None)
    assert binary is not None
    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached will not run as root
    proc = subprocess.Popen([binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", "16",
                             *user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: answers(port, b"version\r\n", b"VERSION"), 20):
            raise RuntimeError(f"memcached on {port} did not answer")
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_store_waits_out_a_memcached_restart_which_forgets_results(memcached: Any) -> None:
    from celeriac.backends.cache import CacheBackend

    port = free_port()
    backend = CacheBackend(f"cache+memcached://{HOST}:{port}/")
    with private_memcached(port):
        backend.mark_as_done("before-restart", "kept?")
        assert backend.get_task_meta("before-restart")["result"] == "kept?"
    storing = threading.Thread(target=backend.mark_as_done, args=("during-outage", "stored"))
    storing.start()
    storing.join(0.3)
    assert storing.is_alive()  # retrying the connection errors meanwhile
    with private_memcached(port):
        storing.join(T)
        assert backend.get_task_meta("during-outage")["result"] == "stored"
        # a restarted memcached has forgotten everything: the result is PENDING again
        assert backend.get_task_meta("before-restart")["status"] == "PENDING"
    backend.close()

# -- the documentation's example runs as written ---------------------------------------------
def test_the_docs_example_runs(tmp_path: Path, memcached: Any) -> None:
    import re

    from celeriac.contrib.testing import WorkerProcess

    doc = (Path(__file__).resolve().parents[2] / "docs" / "memcached.md").read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", doc, re.S))
    assert set(files) == {"mc_tasks.py", "mc_client.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    with WorkerProcess("mc_tasks", cwd=tmp_path, env=env, ready_timeout=60):
        out = subprocess.run([sys.executable, "mc_client.py"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["add: 5", "group: [0, 2, 4, 6, 8]", "chord: 10"]
