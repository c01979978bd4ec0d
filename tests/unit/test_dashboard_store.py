"""The dashboard's history store: merge rules, queries, bounds, persistence; on SQLite
and on the machine's PostgreSQL (tables of each test's own prefix)."""

from __future__ import annotations

import itertools
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from celeriac.dashboard.store import DEFAULT_FILE, RUNTIME_BUCKETS, HistoryStore

_clock = itertools.count(1)


def ev(type_: str, uuid: str | None = None, at: float | None = None,
       hostname: str = "w1@host", **fields: Any) -> dict[str, Any]:
    """An event as the receiver hands it on (clock taken in, local_received added)."""
    at = time.time() if at is None else at
    event = {"type": type_, "hostname": hostname, "timestamp": at, "clock": next(_clock),
             "local_received": at, "pid": 42, "utcoffset": 0, **fields}
    if uuid is not None:
        event["uuid"] = uuid
    return event


def life(uuid: str, start: float, name: str = "proj.add", runtime: float = 0.5,
         end: str = "task-succeeded", hostname: str = "w1@host", **received: Any) -> list[dict]:
    fields: dict[str, Any] = {"name": name, "args": "(1, 2)", "kwargs": "{}", "retries": 0,
                              "root_id": uuid, "parent_id": None, "eta": None,
                              "expires": None, **received}
    outcome = ({"result": "3", "runtime": runtime} if end == "task-succeeded"
               else {"exception": "ValueError('boom')", "traceback": "Traceback..."})
    return [ev("task-received", uuid, start, hostname, **fields),
            ev("task-started", uuid, start + 0.1, hostname),
            ev(end, uuid, start + 0.1 + runtime, hostname, **outcome)]


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("tasks", "task_events", "workers", "queue_depths", "meta")


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[Callable[..., HistoryStore]]:
    """``make_store(**options)``: a store of the test's own, the same one each call."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    else:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        from support import postgresql_answers, require

        pytest.importorskip("psycopg")
        require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())
        prefix = f"u{uuidlib.uuid4().hex[:8]}_"
        url = f"{PG_URL}?table_prefix={prefix}"
    opened: list[HistoryStore] = []

    def make(**options: Any) -> HistoryStore:
        opened.append(HistoryStore.open(url, **options))
        return opened[-1]

    yield make
    for store in opened:
        store.close()
    if request.param == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_URL.replace("postgresql:", "postgresql+psycopg:"))
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {prefix}{table}"))
        engine.dispose()


@pytest.fixture
def store(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    return make_store()


# -- merge rules ---------------------------------------------------------------------------

def test_a_task_row_folds_its_events(store: HistoryStore) -> None:
    t = time.time()
    changed = store.ingest(life("a", t))
    assert [row["uuid"] for row in changed] == ["a"] and "events" not in changed[0]
    task = store.task("a")
    assert task is not None
    assert task["state"] == "SUCCESS" and task["name"] == "proj.add"
    assert task["args"] == "(1, 2)" and task["kwargs"] == "{}" and task["result"] == "3"
    assert task["received"] == t and task["started"] == t + 0.1
    assert task["succeeded"] == pytest.approx(t + 0.6) and task["runtime"] == 0.5
    assert task["worker"] == "w1@host" and task["timestamp"] == task["succeeded"]
    assert [e["type"] for e in task["events"]] == ["task-received", "task-started",
                                                   "task-succeeded"]
    assert task["events"][0]["fields"]["name"] == "proj.add"
    assert store.task("nope") is None


def test_a_late_event_never_moves_a_task_back(store: HistoryStore) -> None:
    t = time.time()
    received, started, succeeded = life("a", t)
    store.ingest([succeeded])
    store.ingest([started, received])
    task = store.task("a")
    assert task is not None
    assert task["state"] == "SUCCESS" and task["timestamp"] == succeeded["timestamp"]
    # the early events still fill in what they own
    assert task["name"] == "proj.add" and task["args"] == "(1, 2)"
    assert task["received"] == t and task["started"] == t + 0.1
    assert [e["type"] for e in task["events"]] == ["task-received", "task-started",
                                                   "task-succeeded"]


def test_retry_always_applies_and_the_next_run_moves_on(store: HistoryStore) -> None:
    t = time.time()
    store.ingest([ev("task-received", "r", t, name="proj.flaky", retries=0),
                  ev("task-started", "r", t + 1),
                  ev("task-retried", "r", t + 2, exception="IOError()")])
    assert store.task("r")["state"] == "RETRY"  # type: ignore[index]
    store.ingest([ev("task-received", "r", t + 3, retries=1)])
    task = store.task("r")
    assert task is not None and task["state"] == "RECEIVED" and task["retries"] == 1
    store.ingest([ev("task-started", "r", t + 4), ev("task-succeeded", "r", t + 5,
                                                     result="1", runtime=1.0)])
    task = store.task("r")
    assert task is not None and task["state"] == "SUCCESS" and task["retried"] == t + 2
    # a late copy of the first task-received fills nothing already known
    store.ingest([ev("task-received", "r", t, retries=0)])
    assert store.task("r")["retries"] == 1  # type: ignore[index]


def test_sent_by_a_client_then_received(store: HistoryStore) -> None:
    t = time.time()
    store.ingest([ev("task-received", "s", t + 1, name="proj.add"),
                  ev("task-sent", "s", t, hostname="gen1@client", name="proj.add",
                     queue="q", exchange="", routing_key="q")])
    task = store.task("s")
    assert task is not None
    assert task["state"] == "RECEIVED" and task["client"] == "gen1@client"
    assert task["worker"] == "w1@host" and task["sent"] == t and task["routing_key"] == "q"


def test_a_custom_state_and_children(store: HistoryStore) -> None:
    t = time.time()
    store.ingest(life("parent", t) + [
        ev("task-received", "child", t + 1, name="proj.child", parent_id="parent",
           root_id="parent"),
        ev("task-progress", "child", t + 2, progress=50)])
    child = store.task("child")
    assert child is not None and child["state"] == "PROGRESS"
    assert store.task("parent")["children"] == ["child"]  # type: ignore[index]


def test_broken_events_are_skipped_and_counted(store: HistoryStore) -> None:
    t = time.time()
    batch: list[Any] = ["not a dict", {"no": "type"}, {"type": "task-started"},
                        ev("task-succeeded", "x", t, runtime="slow"),
                        {"type": "worker-heartbeat"}, *life("ok", t)]
    tasks, workers, skipped = store.ingest_batch(batch)
    assert skipped == 4 and {row["uuid"] for row in tasks} == {"x", "ok"}
    assert store.task("x")["runtime"] is None  # type: ignore[index]
    assert store.task("ok")["state"] == "SUCCESS"  # type: ignore[index]


def test_the_same_events_twice_are_stored_once(store: HistoryStore) -> None:
    events = life("a", time.time())
    store.ingest(events)
    store.ingest([dict(e) for e in events])
    assert store.count_events() == 3 and store.counts()["total"] == 1


# -- workers ----------------------------------------------------------------------------

def test_workers_beat_go_offline_and_are_forgotten(store: HistoryStore) -> None:
    t = time.time() - 10
    store.ingest([ev("worker-online", None, t, "w1@h", freq=30.0, active=0, processed=0,
                     loadavg=[0.5, 0.4, 0.3], sw_ident="py-celeriac", sw_ver="1.0",
                     sw_sys="Linux"),
                  ev("worker-heartbeat", None, t + 1, "w1@h", freq=30.0, active=1,
                     processed=7, loadavg=[1.0, 0.5, 0.25])])
    [worker] = store.workers()
    assert worker["hostname"] == "w1@h" and worker["alive"] and worker["status"] == "ONLINE"
    assert worker["processed"] == 7 and worker["active"] == 1 and worker["freq"] == 30.0
    assert worker["loadavg"] == [1.0, 0.5, 0.25] and worker["sw_ident"] == "py-celeriac"
    assert worker["pid"] == 42 and worker["last_heartbeat"] == t + 1
    store.ingest([ev("worker-offline", None, t + 2, "w1@h")])
    # a batch of task events sent before the worker went offline revives nothing
    store.ingest(life("late", t + 0.5, hostname="w1@h"))
    [worker] = store.workers()
    assert not worker["alive"] and worker["status"] == "OFFLINE"
    assert store.forget_offline_workers(3600) == []
    assert store.forget_offline_workers(5) == ["w1@h"] and store.workers() == []


def test_a_task_event_is_a_sign_of_life(store: HistoryStore) -> None:
    t = time.time()
    store.ingest([ev("worker-heartbeat", None, t - 600, "w2@h", freq=2.0)])
    assert not store.workers()[0]["alive"]
    store.ingest([ev("task-started", "a", t, "w2@h")])
    assert store.workers()[0]["alive"]


# -- queries ------------------------------------------------------------------------------

@pytest.fixture
def filled(store: HistoryStore) -> HistoryStore:
    t = time.time() - 100
    batch: list[dict] = []
    for i in range(30):
        name = "proj.add" if i % 3 else "proj.mul"
        end = "task-failed" if i % 5 == 0 else "task-succeeded"
        host = f"w{i % 2}@host"
        batch += life(f"{i:04d}-task", t + i, name=name, runtime=0.01 * (i + 1), end=end,
                      hostname=host, kwargs=f"{{'n': {i}}}")
    store.ingest(batch)
    return store


def test_filters_sorts_and_pages(filled: HistoryStore) -> None:
    rows, total = filled.tasks(limit=10)
    assert total == 30 and len(rows) == 10
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    page2, _ = filled.tasks(limit=10, offset=10)
    assert not {r["uuid"] for r in page2} & {r["uuid"] for r in rows}
    rows, total = filled.tasks(state="FAILURE", limit=100)
    assert total == 6 and {r["state"] for r in rows} == {"FAILURE"}
    rows, total = filled.tasks(state=["FAILURE", "SUCCESS"], name="proj.mul")
    assert total == 10 and {r["name"] for r in rows} == {"proj.mul"}
    rows, total = filled.tasks(worker="w1@host", sort_by="runtime")
    assert total == 15 and {r["worker"] for r in rows} == {"w1@host"}
    runtimes = [r["runtime"] for r in rows]
    # the failed ones have no runtime: they come last
    assert runtimes[-3:] == [None] * 3 and runtimes[:-3] == sorted(runtimes[:-3])
    rows, _ = filled.tasks(sort_by="-name", limit=1)
    assert rows[0]["name"] == "proj.mul"
    with pytest.raises(ValueError, match="sort_by"):
        filled.tasks(sort_by="nonsense; DROP TABLE tasks")


def test_time_range_and_search(filled: HistoryStore) -> None:
    first = filled.tasks(sort_by="received", limit=1)[0][0]["received"]
    rows, total = filled.tasks(since=first + 10, until=first + 14.5)
    assert total == 5 and sorted(r["uuid"] for r in rows) == [
        f"{i:04d}-task" for i in range(10, 15)]
    rows, total = filled.tasks(search="0012")
    assert total == 1 and rows[0]["uuid"] == "0012-task"
    rows, total = filled.tasks(search="'n': 7}")
    assert total == 1 and rows[0]["uuid"] == "0007-task"
    assert filled.tasks(search="100%")[1] == 0  # wildcards are plain text
    assert filled.tasks(search="_")[1] == 0


def test_counts_types_throughput_runtimes(filled: HistoryStore) -> None:
    counts = filled.counts()
    assert counts["total"] == 30
    assert counts["by_state"] == {"SUCCESS": 24, "FAILURE": 6}
    assert counts["by_name"]["proj.mul"] == {"FAILURE": 2, "SUCCESS": 8}
    assert filled.task_types() == ["proj.add", "proj.mul"]
    since = time.time() - 200
    buckets = filled.throughput(since, bucket=10.0)
    assert buckets[0]["t"] == since and buckets[1]["t"] == since + 10
    assert sum(b["succeeded"] for b in buckets) == 24
    assert sum(b["failed"] for b in buckets) == 6
    assert sum(b["received"] for b in buckets) == 30
    assert sum(b["retried"] for b in buckets) == 0
    spread = filled.runtimes()
    assert spread["n"] == 24 and spread["buckets"] == RUNTIME_BUCKETS
    assert sum(spread["counts"]) + spread["over"] == 24
    assert spread["p50"] <= spread["p90"] <= spread["p99"] == 0.3
    only_mul = filled.runtimes(name="proj.mul")
    assert only_mul["n"] == 8
    assert filled.runtimes(since=time.time() + 10)["p50"] is None


def test_queue_depths(store: HistoryStore) -> None:
    t = time.time()
    store.record_queue_depths(t - 20, {"a": 3, "b": 0})
    store.record_queue_depths(t - 10, {"a": 5})
    assert store.queue_depth_series(t - 15) == {"a": [(t - 10, 5)]}
    assert store.queue_depth_series(t - 30)["a"] == [(t - 20, 3), (t - 10, 5)]


# -- bounds ---------------------------------------------------------------------------------

def test_prune_keeps_max_tasks_newest(make_store: Callable[..., HistoryStore]) -> None:
    t = time.time()
    with make_store(max_tasks=10) as store:
        store.ingest([e for i in range(25) for e in life(f"t{i:02d}", t + i)])
        assert store.prune() == 15
        rows, total = store.tasks(limit=100, sort_by="timestamp")
        assert total == 10 and rows[0]["uuid"] == "t15"
        assert store.count_events() == 30
        assert store.task("t00") is None
        # a pruned task that sends again comes back as new, from the database
        store.ingest([ev("task-started", "t00", t + 100)])
        assert store.task("t00")["state"] == "STARTED"  # type: ignore[index]


def test_prune_by_age(make_store: Callable[..., HistoryStore]) -> None:
    t = time.time()
    with make_store(max_age=60) as store:
        store.ingest(life("old", t - 3600) + life("new", t))
        store.record_queue_depths(t - 3600, {"q": 1})
        assert store.prune() == 1
        assert store.task("old") is None and store.task("new") is not None
        assert store.queue_depth_series(0) == {}


# -- where it lives --------------------------------------------------------------------------

def test_history_survives_a_reopen(make_store: Callable[..., HistoryStore]) -> None:
    t = time.time()
    with make_store() as store:
        store.ingest(life("a", t)[:2])
    with make_store() as store:
        assert store.task("a")["state"] == "STARTED"  # type: ignore[index]
        # the row comes back from disk for the merge: the task goes on where it was
        store.ingest(life("a", t)[2:])
        task = store.task("a")
        assert task is not None and task["state"] == "SUCCESS" and task["name"] == "proj.add"


def test_two_stores_on_one_file_both_ingest(make_store: Callable[..., HistoryStore]) -> None:
    t = time.time()
    with make_store() as one, make_store() as two:
        received, started, succeeded = life("a", t)
        one.ingest([received])
        two.ingest([started])     # two reads the row one wrote
        one.ingest([succeeded])   # one sees two wrote, and reads again
        for store in (one, two):
            task = store.task("a")
            assert task is not None and task["state"] == "SUCCESS"
            assert task["name"] == "proj.add" and task["started"] == t + 0.1
        two.ingest([succeeded, received])  # the same events again, through the other
        assert one.count_events() == 3


def test_open_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with HistoryStore.open(None) as store:
        assert store.url == f"sqlite:///{tmp_path / DEFAULT_FILE}"
    assert (tmp_path / DEFAULT_FILE).exists()
    with HistoryStore.open("sqlite:///rel.sqlite3") as store:
        assert store.url == f"sqlite:///{tmp_path / 'rel.sqlite3'}"
    with pytest.raises(ValueError, match="SQLite file .* or PostgreSQL"):
        HistoryStore.open("redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="table_prefix"):
        HistoryStore.open("x.sqlite3", table_prefix="bad-name")


# -- the Ingestor, on the in-process memory:// transport -------------------------------------

@pytest.fixture
def memory_app() -> Any:
    from celeriac import Celery

    app = Celery("hist", broker="memory://", backend="memory://")
    yield app
    app.close()


def test_the_ingestor_stores_the_stream_and_tells_subscribers(
        memory_app: Any, store: HistoryStore) -> None:
    from support import wait_until

    from celeriac.dashboard.ingest import Ingestor

    sampled: list[int] = []

    def sampler() -> dict[str, int]:
        sampled.append(1)
        return {"celery": 3}

    heard: list[tuple[str, str | None]] = []  # (type, the changed row's name) per event
    with Ingestor(memory_app, store, flush_every=0.05, queue_sampler=sampler,
                  sample_every=0.1) as ingestor:
        ingestor.add_listener(lambda events, rows: heard.extend(
            (e["type"], rows.get(e.get("uuid"), {}).get("name")) for e in events))
        live = ingestor.subscribe()
        dispatcher = memory_app.events.Dispatcher(hostname="w9@host", buffer_group={"task"})
        dispatcher.send("worker-online", freq=5.0, active=0, processed=0)
        for n in range(5):
            dispatcher.send("task-received", uuid=f"t{n}", name="proj.add", args=f"({n},)")
            dispatcher.send("task-succeeded", uuid=f"t{n}", result=repr(n), runtime=0.01)
        dispatcher.flush()
        assert wait_until(lambda: store.counts()["by_state"].get("SUCCESS") == 5, 30)
        assert wait_until(lambda: ingestor.stats["events_total"] >= 11, 30)
        # a listener hears every stored event once, a succeeded one with its task's name
        assert wait_until(lambda: len(heard) == 11, 30)
        assert heard.count(("task-succeeded", "proj.add")) == 5
        updates: list[dict] = []
        assert wait_until(lambda: updates.extend(live.get(0.1)) or {
            u["task"]["uuid"] for u in updates if u["kind"] == "task"} == {
            f"t{n}" for n in range(5)}, 30)
        # coalesced: the last row of each task, not one update per event
        assert all(u["task"]["state"] == "SUCCESS" for u in updates if u["kind"] == "task")
        assert any(u["kind"] == "worker" and u["worker"]["hostname"] == "w9@host"
                   for u in updates)
        assert wait_until(lambda: any(u["kind"] == "stats" for u in live.get(0.5)), 30)
        assert store.workers()[0]["alive"]
        # a broken event is skipped and counted; ingest goes on
        ingestor.feed(["junk", {"type": "task-started"}, ev("task-started", "t9")])
        assert wait_until(lambda: store.task("t9") is not None, 30)
        assert ingestor.stats["events_skipped"] == 2
        assert wait_until(lambda: store.queue_depth_series(0).get("celery"), 30)
        assert ingestor.stats["last_event_at"] is not None
        live.close()
        dispatcher.close()
    assert sampled


def test_a_slow_subscriber_loses_the_oldest_updates_only() -> None:
    from celeriac.dashboard.ingest import Subscription

    sub = Subscription(maxsize=3)
    for n in range(5):
        sub.put(("task", f"t{n}"), {"kind": "task", "n": n})
    sub.put(("task", "t3"), {"kind": "task", "n": 33})
    assert [u["n"] for u in sub.get(0)] == [2, 4, 33] and sub.dropped == 2
    assert sub.get(0) == []
    sub.close()
    assert sub.get(5) == []  # closed: no wait


def test_backfill_completes_from_the_result_backend(
        memory_app: Any, store: HistoryStore) -> None:
    from celeriac.dashboard.ingest import Ingestor

    t = time.time() - 60
    store.ingest([ev("task-received", "done", t, name="proj.add"),
                  ev("task-started", "broke", t, name="proj.fail"),
                  ev("task-received", "running", t, name="proj.add"),
                  ev("task-started", "just-now", time.time(), name="proj.add")])
    memory_app.backend.store_result("just-now", 1, "SUCCESS")
    memory_app.backend.store_result("done", 4, "SUCCESS")
    memory_app.backend.store_result("broke", ValueError("boom"), "FAILURE",
                                    traceback="Traceback: boom")
    memory_app.backend.store_result("running", None, "STARTED")
    ingestor = Ingestor(memory_app, store, enable_events=False)
    assert ingestor.backfill() == 2
    done, broke = store.task("done"), store.task("broke")
    assert done is not None and done["state"] == "SUCCESS" and done["result"] == "4"
    assert broke is not None and broke["state"] == "FAILURE"
    assert broke["exception"] == "ValueError('boom')" and broke["traceback"] == "Traceback: boom"
    assert store.task("running")["state"] == "RECEIVED"  # type: ignore[index]
    # its end event is on its way: left to tell its own story
    assert store.task("just-now")["state"] == "STARTED"  # type: ignore[index]
    assert ingestor.backfill() == 0 and ingestor.stats["backfilled"] == 2
    assert ingestor.backfill(quiet=0) == 1


def test_offline_workers_are_purged(memory_app: Any, store: HistoryStore) -> None:
    from support import wait_until

    from celeriac.dashboard.ingest import Ingestor

    t = time.time() - 100
    store.ingest([ev("worker-online", None, t, "gone@h", freq=1.0),
                  ev("worker-offline", None, t + 1, "gone@h")])
    with Ingestor(memory_app, store, purge_offline_workers=10, enable_events=False):
        assert wait_until(lambda: store.workers() == [], 30)
