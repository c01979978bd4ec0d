"""Canvas in one process: the messages a chain, group and chord send, eager runs, and
the chord counters of the in-process result stores."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import Celery, signals
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.canvas import Signature, chain, chord, from_dict, group, signature


@pytest.fixture
def app() -> Iterator[Celery]:
    url = f"memory://{uuid.uuid4().hex}"
    app = Celery("canvas", broker=url, backend=url)

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def tsum(numbers):
        return sum(numbers)

    yield app
    app.close()


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []

    def capture(sender: Any = None, body: Any = None, headers: Any = None, **kw: Any) -> None:
        messages.append({"headers": dict(headers), "body": json.loads(body)})

    signals.before_task_publish.connect(capture)
    yield messages
    signals.before_task_publish.disconnect(capture)


def test_signature_is_a_json_dict(app: Celery) -> None:
    sig = Signature("canvas.add", (1,), {"y": 2}, {"queue": "q"}, app=app)
    assert json.loads(json.dumps(sig)) == {
        "task": "canvas.add", "args": [1], "kwargs": {"y": 2}, "options": {"queue": "q"},
        "subtask_type": None, "immutable": False}
    assert signature(dict(sig)) == sig
    c = Signature("a", app=app) | Signature("b", app=app) | Signature("c", app=app)
    assert isinstance(c, chain) and [t.name for t in c.tasks] == ["a", "b", "c"]
    back = from_dict(json.loads(json.dumps(c)), app=app)
    assert isinstance(back, chain) and [t.name for t in back.tasks] == ["a", "b", "c"]
    g = group(Signature("a", app=app), Signature("b", app=app))
    assert isinstance(g | Signature("c", app=app), chord)
    assert isinstance(from_dict(json.loads(json.dumps(g))), group)


def test_chain_is_one_message_with_the_rest_reversed(app: Celery, sent: list[Any]) -> None:
    add = app.tasks[next(n for n in app.tasks if n.endswith("add"))]
    res = chain(add.s(1, 2), add.s(3), add.si(0, 0))()
    assert len(sent) == 1
    headers, (args, _kwargs, embed) = sent[0]["headers"], sent[0]["body"]
    assert args == [1, 2] and headers["root_id"] == headers["id"] == res.parent.parent.id
    rest = embed["chain"]
    assert [s["args"] for s in rest] == [[0, 0], [3]]
    assert rest[0]["options"]["task_id"] == res.id
    assert rest[1]["options"]["task_id"] == res.parent.id
    assert rest[0]["immutable"] is True


def test_group_and_chord_messages(app: Celery, sent: list[Any]) -> None:
    add = app.tasks[next(n for n in app.tasks if n.endswith("add"))]
    tsum = app.tasks[next(n for n in app.tasks if n.endswith("tsum"))]
    gres = group(add.s(i, i) for i in range(3))()
    assert [m["headers"]["group"] for m in sent] == [gres.id] * 3
    assert [m["headers"]["group_index"] for m in sent] == [0, 1, 2]
    assert all(m["body"][2]["chord"] is None for m in sent)
    sent.clear()
    cres = chord([add.s(1, 1), add.s(2, 2)])(tsum.s())
    gid = cres.parent.id
    assert [m["headers"]["group"] for m in sent] == [gid, gid]
    body = sent[0]["body"][2]["chord"]
    assert body["task"] == tsum.name and body["options"]["task_id"] == cres.id
    assert body["options"]["group_id"] == gid


def test_a_group_followed_by_a_group_becomes_a_chord_with_a_group_body(
        app: Celery, sent: list[Any]) -> None:
    add = app.tasks[next(n for n in app.tasks if n.endswith("add"))]
    tsum = app.tasks[next(n for n in app.tasks if n.endswith("tsum"))]
    g1 = group(add.s(i, i) for i in range(3))
    g2 = group(tsum.s(), tsum.s())
    (step,) = chain(g1, g2, tsum.s())._prepared()
    # built from the end, as Celery does: chord(g1, chord(g2, tsum))
    assert isinstance(step, chord) and isinstance(step.body, chord)
    assert step.body.body is not None and step.body.body.name == tsum.name
    sent.clear()
    res = (g1 | g2).delay()
    assert len(sent) == 3  # the first group; the second is the chord body
    body = sent[0]["body"][2]["chord"]
    assert body["subtask_type"] == "group"
    # the caller's GroupResult names the ids the body's members will run under
    assert [t["options"]["task_id"] for t in body["kwargs"]["tasks"]] == \
        [r.id for r in res.results]


def test_signature_helpers(app: Celery) -> None:
    add = app.tasks[next(n for n in app.tasks if n.endswith("add"))]
    sig = add.s(1, y=2).set(queue="q")
    other = sig.replace(args=(5,), options={"priority": 3})
    assert other.args == [5] and other.kwargs == {"y": 2} and other.options == {"priority": 3}
    assert sig.args == [1] and sig.options == {"queue": "q"}  # the original is untouched
    handler = Signature("canvas.handler", app=app)
    assert sig.on_error(handler) is sig and sig.options["link_error"] == [handler]
    spread = group(add.s(i, i) for i in range(5)).skew(start=1, stop=2, step=0.5)
    assert [t.options["countdown"] for t in spread.tasks] == [1, 1.5, 2, 2, 2]


def test_eager_canvas() -> None:
    app = Celery("eager", broker="memory://", backend="memory://")
    app.conf.task_always_eager = True

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def tsum(numbers):
        return sum(numbers)

    assert (add.s(1, 1) | add.s(2)).delay().get() == 4
    assert group(add.s(i, i) for i in range(4))().get() == [0, 2, 4, 6]
    assert chord(add.s(i, i) for i in range(4))(tsum.s()).get() == 12
    app.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_chord_counter_is_atomic_and_counts_once(kind: str, tmp_path: Path) -> None:
    backend: Any
    if kind == "memory":
        backend = MemoryBackend(f"memory://{uuid.uuid4().hex}")
    else:
        backend = SQLiteBackend(f"sqlite:///{tmp_path / 'r.db'}")
    backend.set_chord_size("g", 50)
    assert backend.chord_part_return("g", 0, "t0", "SUCCESS", 0) is None
    assert backend.chord_part_return("g", 0, "t0", "SUCCESS", 0) is None  # redelivered
    winners: list[Any] = []

    def part(i: int) -> None:
        got = backend.chord_part_return("g", i, f"t{i}", "SUCCESS", i * 10)
        if got is not None:
            winners.append(got)

    threads = [threading.Thread(target=part, args=(i,)) for i in range(49, 0, -1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert [p.result for p in winners[0]] == [i * 10 for i in range(50)]
    assert [p.task_id for p in winners[0]] == [f"t{i}" for i in range(50)]
    backend.close()


def test_freeze_gives_the_ids_that_are_sent(app: Celery, sent: list[Any]) -> None:
    add = app.tasks[next(n for n in app.tasks if n.endswith("add"))]
    tsum = app.tasks[next(n for n in app.tasks if n.endswith("tsum"))]
    c = add.s(1, 1) | add.s(2)
    frozen = c.freeze()
    assert c.apply_async().id == frozen.id
    g = group(add.s(i, i) | add.s(1) for i in range(2))
    gfrozen = g.freeze()
    gres = g.apply_async()
    assert [r.id for r in gres.results] == [r.id for r in gfrozen.results]
    # the members' last steps carry the group: they are what the group's result is
    rest = [m["body"][2]["chain"][0] for m in sent[-2:]]
    assert [s["options"]["group_id"] for s in rest] == [gres.id, gres.id]
    assert all("group" not in m["headers"] or m["headers"]["group"] is None
               for m in sent[-2:])
    body_chain = chord([add.s(1, 1)], tsum.s() | add.s(1))
    assert body_chain.freeze().id == body_chain.apply_async().id
