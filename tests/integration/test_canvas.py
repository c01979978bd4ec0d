"""Signatures, chains, groups and chords through a real worker, on SQLite and Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.canvas import Signature, chain, chord, group, signature
from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import ChordError
from celeriac.result import AsyncResult, GroupResult, ResultSet

from support import wait_until


def noted(marker: Path) -> list[Any]:
    path = marker / "errback"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def worker(proj: Any, project: Path) -> Iterator[Any]:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "4"]):
        yield proj


def test_signatures(worker: Any) -> None:
    proj = worker
    sig = proj.add.s(2)
    assert isinstance(sig, Signature) and sig.name == proj.add.name
    assert json.loads(json.dumps(sig)) == dict(sig)
    assert sig.delay(3).get(timeout=20) == 5
    assert sig.apply_async((10,)).get(timeout=20) == 12
    assert sig(5) == 7  # called in this process
    full = signature(proj.add.name, args=(1, 2), app=proj.app)
    assert full.delay().get(timeout=20) == 3
    assert signature(dict(full), app=proj.app).delay().get(timeout=20) == 3
    assert proj.add.signature((4, 4), countdown=0).options == {"countdown": 0}
    # partial kwargs, clone, set
    kw = proj.add.s(y=10)
    assert kw.delay(1).get(timeout=20) == 11
    clone = sig.clone(args=(100,))
    assert clone.args == [100, 2] and sig.args == [2]
    assert sig.set(priority=3) is sig and sig.options["priority"] == 3
    # immutable: call arguments are ignored
    im = proj.add.si(1, 1)
    assert im.immutable and im.delay(99).get(timeout=20) == 2
    assert isinstance(proj.add.s(1) | proj.mul.s(2), chain)


def test_chain(worker: Any) -> None:
    proj = worker
    res = chain(proj.add.s(1, 2), proj.add.s(3), proj.mul.s(10))()
    assert res.get(timeout=20) == 60
    assert res.parent.get(timeout=20) == 6
    assert res.parent.parent.get(timeout=20) == 3
    assert res.parent.parent.parent is None
    # parent_id / root_id as Celery sets them
    first = res.parent.parent
    assert proj.app.backend.get_task_meta(res.id)["parent_id"] == res.parent.id
    piped = (proj.add.s(4, 4) | proj.mul.s(2) | proj.add.si(1, 1)).apply_async()
    assert piped.get(timeout=20) == 2 and piped.parent.get(timeout=20) == 16
    # a partial chain
    assert chain(proj.add.s(4) | proj.mul.s(8))(4).get(timeout=20) == 64
    lin = (proj.add.s(1, 1) | proj.mul.s(3) | proj.lineage.s()).delay()
    seen = lin.get(timeout=20)
    assert seen["id"] == lin.id and seen["args"] == [6]
    assert seen["parent_id"] == lin.parent.id
    assert seen["root_id"] == lin.parent.parent.id != first.id


def test_chain_failure_stops_and_calls_errbacks(worker: Any, project: Path) -> None:
    proj = worker
    marker = project / "errbacks"
    marker.mkdir()
    res = chain(proj.add.s(1, 1), proj.fail.si("broken"), proj.add.s(5)).apply_async(
        link_error=proj.note_error.s(str(marker)))
    with pytest.raises(ValueError, match="broken"):
        res.parent.get(timeout=20)
    assert res.parent.parent.get(timeout=20) == 2
    assert wait_until(lambda: noted(marker))
    assert noted(marker) == [[res.parent.id, "ValueError", "broken"]]
    assert res.state == "PENDING"  # the step after the failure never ran


def test_group(worker: Any) -> None:
    proj = worker
    res = group(proj.add.s(i, i) for i in range(10))()
    assert isinstance(res, GroupResult) and len(res) == 10
    assert res.get(timeout=20) == [i + i for i in range(10)]
    assert res.join(timeout=20) == [i + i for i in range(10)]
    assert res.ready() and res.successful() and not res.failed()
    assert res.completed_count() == 10
    meta = proj.app.backend.get_task_meta(res.results[3].id)
    assert meta["group_id"] == res.id
    # partial group
    partial = group(proj.add.s(i) for i in range(5))(10)
    assert partial.get(timeout=20) == [10 + i for i in range(5)]
    # save / restore
    res.save()
    restored = GroupResult.restore(res.id, app=proj.app)
    assert restored is not None and restored.id == res.id
    assert [r.id for r in restored.results] == [r.id for r in res.results]
    assert restored.get(timeout=20) == [i + i for i in range(10)]
    restored.delete()
    assert GroupResult.restore(res.id, app=proj.app) is None
    # a failing member
    mixed = group(proj.add.s(1, 1), proj.fail.s("member"))()
    with pytest.raises(ValueError, match="member"):
        mixed.get(timeout=20)
    assert mixed.failed() and not mixed.successful() and mixed.completed_count() == 1
    assert mixed.get(timeout=20, propagate=False)[0] == 2
    rs = ResultSet([proj.add.delay(1, 2), proj.add.delay(3, 4)])
    assert rs.get(timeout=20) == [3, 7]


def test_chord(worker: Any) -> None:
    proj = worker
    res = chord(proj.add.s(i, i) for i in range(10))(proj.tsum.s())
    assert isinstance(res, AsyncResult)
    assert res.get(timeout=20) == 90
    assert isinstance(res.parent, GroupResult)
    assert res.parent.get(timeout=20) == [i + i for i in range(10)]
    # results arrive in group_index order
    ordered = chord([proj.identity.s(i) for i in range(20)], proj.identity.s())()
    assert ordered.get(timeout=20) == list(range(20))
    # group | task is a chord
    piped = (group(proj.add.s(i, 1) for i in range(3)) | proj.xsum.s()).delay()
    assert piped.get(timeout=20) == 6
    # chord in a chain, then a step after the chord
    chained = (proj.add.s(1, 1) | group(proj.add.s(i) for i in range(3)) | proj.tsum.s()
               | proj.mul.s(10)).delay()
    assert chained.get(timeout=20) == (2 + 3 + 4) * 10


def test_chord_failing_header(worker: Any, project: Path) -> None:
    proj = worker
    header = [proj.add.s(1, 1), proj.fail.s("header down"), proj.add.s(2, 2)]
    marker = project / "errbacks"
    marker.mkdir()
    res = chord(header, proj.tsum.s()).apply_async(link_error=proj.note_error.s(str(marker)))
    with pytest.raises(ChordError) as info:
        res.get(timeout=20)
    failed_id = res.parent.results[1].id
    assert failed_id in str(info.value) and "header down" in str(info.value)
    assert res.state == "FAILURE"
    assert wait_until(lambda: noted(marker))
    [(body_id, kind, message)] = noted(marker)
    assert body_id == res.id and kind == "ChordError" and failed_id in message


def test_chord_with_a_revoked_header_task_fails_its_body(proj: Any, project: Path) -> None:
    # Celery counts a revoked header task in as a failure; a member never counted would
    # leave the chord waiting forever.
    res = chord([proj.add.s(1, 1), proj.add.s(2, 2), proj.add.s(3, 3)], proj.tsum.s())()
    revoked = res.parent.results[1]
    revoked.revoke()
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        with pytest.raises(ChordError) as info:
            res.get(timeout=20)
        assert revoked.id in str(info.value) and "TaskRevokedError" in str(info.value)
        assert revoked.state == "REVOKED"
        assert res.parent.results[0].get(timeout=20) == 2


def test_chord_whose_header_task_dies_with_its_process_fails_its_body(
        proj: Any, project: Path) -> None:
    # Killed at its hard time limit, the header task's pool process cannot count it in;
    # the prefork parent does, from what the child left in shared memory.
    header = [proj.add.s(1, 1), proj.snooze.s(60).set(time_limit=1), proj.add.s(2, 2)]
    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "2"]):
        res = chord(header, proj.tsum.s())()
        with pytest.raises(ChordError) as info:
            res.get(timeout=30)
        killed = res.parent.results[1]
        assert killed.id in str(info.value) and "TimeLimitExceeded" in str(info.value)
        assert killed.state == "FAILURE"
        # the worker carries on with a fresh pool process
        assert proj.add.delay(5, 5).get(timeout=20) == 10


def test_get_inside_a_task(worker: Any) -> None:
    proj = worker
    with pytest.raises(RuntimeError, match="Never call result.get"):
        proj.get_inside.delay(True).get(timeout=20)
    assert proj.get_inside.delay(False).get(timeout=20) == 2


def test_maps_chunks_and_nesting(worker: Any) -> None:
    from celeriac.canvas import chunks, xmap, xstarmap

    proj = worker
    assert xmap(proj.identity.s(), [1, 2, 3]).delay().get(timeout=20) == [1, 2, 3]
    assert xstarmap(proj.add.s(), [(1, 2), (3, 4)]).delay().get(timeout=20) == [3, 7]
    parts = chunks(proj.add.s(), [(i, i) for i in range(10)], 4)()
    assert parts.get(timeout=20) == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    # chain into a group: the group's members get the result
    into = (proj.add.s(1, 1) | group(proj.mul.s(i) for i in range(3))).delay()
    assert isinstance(into, GroupResult) and into.get(timeout=20) == [0, 2, 4]
    # a group of chains
    chains = group(proj.add.s(i, i) | proj.mul.s(10) for i in range(3))()
    assert chains.get(timeout=20) == [0, 20, 40]
    # a chord whose header holds chains, and a chain as the body
    nested = chord([proj.add.s(i, i) | proj.mul.s(2) for i in range(3)],
                   proj.tsum.s() | proj.mul.s(10))()
    assert nested.get(timeout=20) == (0 + 4 + 8) * 10


def test_group_followed_by_group(worker: Any) -> None:
    proj = worker
    # each member of the second group receives the list of the first group's results
    res = (group(proj.add.s(i, i) for i in range(3)) | group(proj.tsum.s(), proj.xsum.s())
           ).delay()
    assert isinstance(res, GroupResult) and res.get(timeout=20) == [6, 6]
    after = chain(group(proj.add.s(i, i) for i in range(3)),
                  group(proj.tsum.s(), proj.xsum.s()), proj.tsum.s()).delay()
    assert after.get(timeout=20) == 12
    # a failing first group fails every member of the second, naming the failed task
    broken = (group(proj.add.s(1, 1), proj.fail.s("first group down"))
              | group(proj.tsum.s(), proj.xsum.s())).delay()
    for member in broken.results:
        with pytest.raises(ChordError, match="first group down"):
            member.get(timeout=20)


def test_replace(worker: Any) -> None:
    proj = worker
    # the replacement runs under the replaced task's id, whatever it is
    assert proj.replace_with.delay("task", 3).get(timeout=20) == 6
    assert proj.replace_with.delay("group", 3).get(timeout=20) == [0, 2, 4]
    assert proj.replace_with.delay("chain", 3).get(timeout=20) == 40
    # and it takes the replaced task's place in a chain, a group and a chord header
    in_chain = (proj.replace_with.s("task", 3) | proj.mul.s(10)).delay()
    assert in_chain.get(timeout=20) == 60
    assert group(proj.replace_with.s("task", 2), proj.add.s(1, 1))().get(timeout=20) == [4, 2]
    in_chord = chord([proj.replace_with.s("task", 1), proj.replace_with.s("group", 2),
                      proj.add.s(2, 2)], proj.identity.s())()
    assert in_chord.get(timeout=20) == [2, [0, 2], 4]


def test_collect_follows_the_tasks_a_task_sent(worker: Any) -> None:
    from celeriac.result import ResultBase

    proj = worker
    result = proj.fan_out.delay(5)
    values = [v for _, v in result.collect(timeout=20)
              if not isinstance(v, (ResultBase, tuple, list))]
    assert sorted(values) == [0, 1, 4, 9, 16]
    # the sender's result names what it sent
    (sent,) = result.children
    assert isinstance(sent, GroupResult) and len(sent.results) == 5
    assert all(len(member.children) == 1 for member in sent.results)


def test_add_to_chord(worker: Any) -> None:
    proj = worker
    res = chord([proj.grow_chord.s(2), proj.add.s(1, 1)], proj.identity.s())()
    # the body waits for the added tasks too, and gets their results last
    assert res.get(timeout=20) == ["grown", 2, 100, 101]
    with pytest.raises(ValueError, match="chord header"):
        proj.grow_chord.delay(1).get(timeout=20)


def test_group_revoke(proj: Any, project: Path) -> None:
    from celeriac.exceptions import TaskRevokedError

    doomed = group(proj.add.s(i, i) for i in range(3))()
    doomed.revoke()
    kept = proj.add.delay(1, 1)
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        assert kept.get(timeout=20) == 2
        values = doomed.get(timeout=20, propagate=False)
        assert all(isinstance(v, TaskRevokedError) for v in values)
        assert doomed.ready() and not doomed.successful() and doomed.completed_count() == 0
