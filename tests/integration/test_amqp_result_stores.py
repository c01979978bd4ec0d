"""The result stores beside the RabbitMQ broker: Redis (db 14, used by no other test)
and SQLite, with a real celeriac worker.

Results do not travel over RabbitMQ here, so these show that nothing of the rpc://
reply path leaks into other backends: no reply queue is declared and tasks carry no
``reply_to``. Redis is never flushed: the keys written are the tasks' own, deleted at
the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import answers, rabbitmq_answers, require  # noqa: E402
from support import delete_rabbitmq as delete_queues  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_RESULTS = "redis://127.0.0.1:6379/14"
T = 30

PROJECT = '''
from celeriac import Celery

app = Celery("storeproj", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.broker_dead_letter_queue = {queue!r} + ".dead"
app.conf.result_expires = 300


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)


@app.task(bind=True)
def reply_to_seen(self):
    return self.request.reply_to or ""


@app.task
def fail(text):
    raise KeyError(text)
'''






@pytest.fixture(params=["redis", "sqlite"])
def proj(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The client module of a project on RabbitMQ whose results go to Redis or SQLite,
    with its worker running."""
    import importlib

    try:
        import amqp  # noqa: F401
    except ImportError:
        require("these tests need py-amqp: pip install -e '.[dev]'", False)
    require("RabbitMQ is not reachable on 127.0.0.1:5672",
            rabbitmq_answers())
    if request.param == "redis":
        require("Redis is not reachable on 127.0.0.1:6379",
                answers(6379, b"PING\r\n", b"+PONG"))
        backend = REDIS_RESULTS
    else:
        backend = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    from celeriac.contrib.testing import WorkerProcess

    queue = f"q-rpc-stores-{uuid.uuid4().hex[:12]}"
    (tmp_path / "storeproj.py").write_text(
        PROJECT.format(broker=AMQP_URL, backend=backend, queue=queue))
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    sent: list[str] = []
    try:
        with WorkerProcess("storeproj", cwd=tmp_path, env={"PYTHONPATH": path},
                           args=["-P", "prefork", "-c", "2"], ready_timeout=60):
            sys.modules.pop("storeproj", None)
            sys.path.insert(0, str(tmp_path))
            try:
                module = importlib.import_module("storeproj")
            finally:
                sys.path.remove(str(tmp_path))
            module.sent = sent
            try:
                yield module
            finally:
                module.app.close()
                sys.modules.pop("storeproj", None)
    finally:
        delete_queues(queue, f"{queue}.dead")
        if request.param == "redis" and sent:
            import redis

            client = redis.Redis.from_url(REDIS_RESULTS)
            client.delete(*(f"celery-task-meta-{i}" for i in sent))
            client.close()


def test_results_failures_and_a_chord(proj: Any) -> None:
    from celeriac import chord, group

    r = proj.add.delay(2, 3)
    bad = proj.fail.delay("missing")
    g = group(proj.add.s(i, i) for i in range(5))()
    c = chord([proj.add.s(i, 1) for i in range(4)])(proj.tsum.s())
    proj.sent.extend([r.id, bad.id, c.id, *(m.id for m in g.results),
                      *(m.id for m in c.parent.results)])
    assert r.get(timeout=T) == 5
    with pytest.raises(KeyError, match="missing"):
        bad.get(timeout=T)
    assert g.get(timeout=T) == [0, 2, 4, 6, 8]
    assert c.get(timeout=T) == 1 + 2 + 3 + 4


def test_a_second_process_reads_the_results(proj: Any) -> None:
    # unlike rpc://, a stored result is there for anyone with the id
    import subprocess

    r = proj.add.delay(20, 22)
    proj.sent.append(r.id)
    assert r.get(timeout=T) == 42
    module_dir = Path(proj.__file__).parent
    out = subprocess.run(
        [sys.executable, "-c", f"import storeproj; print(storeproj.app.AsyncResult("
                               f"{r.id!r}).get(timeout=10))"],
        cwd=module_dir, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(module_dir)))
    assert out.stdout.strip() == "42", out.stderr


def test_no_reply_to_without_rpc(proj: Any) -> None:
    r = proj.reply_to_seen.delay()
    proj.sent.append(r.id)
    assert r.get(timeout=T) == ""
