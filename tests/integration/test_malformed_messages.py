"""Messages a worker cannot understand are set aside at once, with the reason, and
their callers told; the good messages behind them run without delay.

The bad messages are published raw, as a buggy or foreign producer would.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from celeriac import messages
from celeriac.exceptions import InvalidTaskError

# Also run on RabbitMQ (tests/conftest.py).
BROKERS_ALSO = ("amqp",)

# (header, bad value): each stalled the worker before, retried as a broker error.
BAD_HEADERS = [
    ("eta", "not-a-date"),
    ("eta", 12345),
    ("expires", {"when": "soon"}),
    ("timelimit", ["ten", None]),
    ("retries", "three"),
    ("group_index", -1),
    ("root_id", 7),
]


def raw(proj: Any, name: str, task_id: str, **headers: Any) -> str:
    msg = messages.task_message(name, task_id, [1, 2])
    msg.headers.update(headers)
    return messages.encode_envelope(msg)


def test_malformed_messages_are_set_aside_at_once_and_their_callers_told(
        proj: Any, worker_for: Any) -> None:
    queue = proj.app.conf.task_default_queue
    broker = proj.app.producer_broker()
    bad = []
    for _ in range(5):  # many of them, ahead of the good ones
        for header, value in BAD_HEADERS:
            task_id = str(uuid.uuid4())
            broker.publish(queue, raw(proj, "proj.add", task_id, **{header: value}))
            bad.append((task_id, header))
    list_as_task = str(uuid.uuid4())
    broker.publish(queue, raw(proj, "proj.add", list_as_task, task=["proj.add"]))
    body_id = str(uuid.uuid4())
    envelope = json.loads(raw(proj, "proj.add", body_id))
    envelope["body"] = "not base64 json"
    broker.publish(queue, json.dumps(envelope))
    good = [proj.add.delay(i, i) for i in range(20)]
    with worker_for(proj):
        assert [r.get(timeout=30) for r in good] == [2 * i for i in range(20)]
        for task_id, header in bad:
            with pytest.raises(InvalidTaskError) as info:
                proj.app.AsyncResult(task_id).get(timeout=30)
            assert repr(header) in str(info.value)  # the field is named
        for task_id in (list_as_task, body_id):
            with pytest.raises(InvalidTaskError):
                proj.app.AsyncResult(task_id).get(timeout=30)
    dead = {d.payload for d in broker.dead_letters(limit=1000)}
    assert all(any(task_id in p for p in dead) for task_id, _ in bad)


@pytest.fixture
def worker_for(project: Any) -> Any:
    from celeriac.contrib.testing import WorkerProcess

    return lambda proj: WorkerProcess("proj", cwd=project, args=["-c", "1"])
