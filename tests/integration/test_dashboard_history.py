"""The dashboard's history with a real worker on Redis (db 10): the Ingestor turns the
worker's events on (it was started without -E), tasks land in the store with their
states, stay there across a reopen, and tasks that ended while nobody listened are
completed from the result backend. On SQLite and on PostgreSQL (tables of its own)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import postgresql_answers, require, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.dashboard.ingest import Ingestor
from celeriac.dashboard.store import HistoryStore

REDIS_URL = "redis://127.0.0.1:6379/10"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Path]:
    """A project on Redis db 10 with exchanges, queue and node names of its own."""
    path = tmp_path_factory.mktemp("dashboard-history")
    tag = uuid.uuid4().hex[:8]
    source = (Path(__file__).parent / "proj_template.py").read_text()
    source = source.replace("BROKER_URL_HERE", REDIS_URL).replace("QUEUE_HERE", f"q-{tag}")
    source += (f"\napp.conf.event_exchange = 'ev-{tag}'\n"
               f"app.conf.control_exchange = 'ctl-{tag}'\n")
    (path / "proj.py").write_text(source)
    yield path


@pytest.fixture(scope="module")
def node(project: Path) -> Iterator[str]:
    """One worker for the module, started without -E."""
    name = f"hist-{uuid.uuid4().hex[:8]}@localhost"
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "4", "-n", name]):
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite3'}"
        return
    pytest.importorskip("psycopg")
    pytest.importorskip("sqlalchemy")
    require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield f"{PG_URL}?table_prefix={prefix}"
    import sqlalchemy

    engine = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as conn:
        for table in ("tasks", "task_events", "workers", "queue_depths", "meta"):
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {prefix}{table}"))
    engine.dispose()


def state_of(store: HistoryStore, task_id: str) -> str | None:
    row = store.task(task_id)
    return None if row is None else row["state"]


def test_tasks_appear_with_their_states_and_survive_a_reopen(
        proj: Any, node: str, store_url: str) -> None:
    store = HistoryStore.open(store_url)
    ingestor = Ingestor(proj.app, store, flush_every=0.05)
    try:
        ingestor.start()
        live = ingestor.subscribe()
        # the worker was started without -E: the ingest's enable_events turns them on;
        # until it arrived a task may run unseen, so tasks are sent until one is seen
        first: list[Any] = []

        def seen() -> bool:
            first.append(proj.add.delay(1, 1))
            first[-1].get(timeout=TIMEOUT)
            return state_of(store, first[-1].id) == "SUCCESS" or wait_until(
                lambda: state_of(store, first[-1].id) == "SUCCESS", 2.0)

        assert wait_until(seen, TIMEOUT)
        ok = proj.add.delay(2, 2)
        bad = proj.fail.delay("boom")
        assert ok.get(timeout=TIMEOUT) == 4
        with pytest.raises(ValueError):
            bad.get(timeout=TIMEOUT)
        assert wait_until(lambda: state_of(store, ok.id) == "SUCCESS"
                          and state_of(store, bad.id) == "FAILURE", TIMEOUT)
        row = store.task(ok.id)
        assert row is not None
        assert row["name"] == "proj.add" and row["args"] == "(2, 2)" and row["result"] == "4"
        assert row["worker"] == node and row["runtime"] is not None
        assert {e["type"] for e in row["events"]} >= {"task-received", "task-started",
                                                      "task-succeeded"}
        failed = store.task(bad.id)
        assert failed is not None and failed["exception"] == "ValueError('boom')"
        assert "ValueError: boom" in (failed["traceback"] or "")
        assert wait_until(lambda: any(w["hostname"] == node and w["alive"]
                                      for w in store.workers()), TIMEOUT)
        assert "proj.add" in store.task_types()
        # the live feed told of them
        updates: list[dict] = []
        assert wait_until(lambda: updates.extend(live.get(0.2)) or any(
            u["kind"] == "task" and u["task"]["uuid"] == ok.id for u in updates), TIMEOUT)
        assert ingestor.stats["events_total"] >= 6 and ingestor.stats["events_skipped"] == 0
    finally:
        ingestor.stop()
        store.close()
    with HistoryStore.open(store_url) as reopened:
        assert state_of(reopened, ok.id) == "SUCCESS"
        assert state_of(reopened, bad.id) == "FAILURE"
        rows, _ = reopened.tasks(name="proj.add", state="SUCCESS")
        assert ok.id in {r["uuid"] for r in rows}
        # the task first seen may have been told by the result backend (backfill), whose
        # results carry no name without result_extended: found by id, not by name
        assert state_of(reopened, first[-1].id) == "SUCCESS"


def test_backfill_completes_what_ended_while_nobody_listened(
        proj: Any, node: str, store_url: str, tmp_path: Path) -> None:
    store = HistoryStore.open(store_url)
    ingestor = Ingestor(proj.app, store, flush_every=0.05)
    marker = tmp_path / "markers"
    marker.mkdir()
    try:
        ingestor.start()
        # events on from the previous test or from this ingestor's broadcast
        assert wait_until(lambda: proj.add.delay(0, 0).get(timeout=TIMEOUT) == 0 and wait_until(
            lambda: store.counts()["total"] > 0, 2.0), TIMEOUT)
        result = proj.block.delay(str(marker), "long")
        assert wait_until(lambda: state_of(store, result.id) == "STARTED", TIMEOUT)
    finally:
        ingestor.stop()  # the dashboard goes down while the task runs
        store.close()
    (marker / "go").touch()
    assert result.get(timeout=TIMEOUT) == "long"
    with HistoryStore.open(store_url) as reopened:
        assert state_of(reopened, result.id) == "STARTED"
        later = Ingestor(proj.app, reopened, enable_events=False)
        assert later.backfill(quiet=0) >= 1
        row = reopened.task(result.id)
        assert row is not None and row["state"] == "SUCCESS" and row["result"] == "'long'"
        assert row["events"][-1]["fields"].get("backfilled") is True
        assert later.backfill(quiet=0) == 0  # nothing unfinished has a result now


_INGEST_ALL = """
import os, random, sys, time
from celeriac.dashboard.store import HistoryStore
url, marks, part, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
events = []
for n in range(count):
    t = 1_000_000.0 + n
    events += [
        {"type": "task-received", "uuid": f"t{n}", "hostname": "w@h", "timestamp": t,
         "local_received": time.time(), "name": "proj.add", "args": f"({n},)"},
        {"type": "task-started", "uuid": f"t{n}", "hostname": "w@h", "timestamp": t + 0.1,
         "local_received": time.time()},
        {"type": "task-succeeded", "uuid": f"t{n}", "hostname": "w@h", "timestamp": t + 0.2,
         "local_received": time.time(), "result": repr(n), "runtime": 0.1}]
random.Random(14).shuffle(events)
# each process hears its half of the stream and a tenth of the other's
events = [e for i, e in enumerate(events) if i % 2 == part or i % 20 == 1 - part]
with HistoryStore.open(url, max_age=None) as store:
    open(os.path.join(marks, f"ready{part}"), "w").close()
    while not os.path.exists(os.path.join(marks, "go")):  # at once, or they may not overlap
        time.sleep(0.01)
    for i in range(0, len(events), 50):
        store.ingest(events[i:i + 50])
"""


def test_two_processes_ingest_one_store(tmp_path: Path, store_url: str) -> None:
    """Two dashboards ingesting into one store, each hearing part of the stream: the
    history one would build from all of it, each event kept once."""
    import subprocess

    HistoryStore.open(store_url).close()  # the schema first, so neither races to make it
    script = tmp_path / "ingest_all.py"
    script.write_text(_INGEST_ALL)
    procs = [subprocess.Popen([sys.executable, str(script), store_url, str(tmp_path),
                               str(part), "2000"], stderr=subprocess.PIPE) for part in (0, 1)]
    assert wait_until(lambda: all((tmp_path / f"ready{part}").exists() for part in (0, 1)),
                      TIMEOUT)
    (tmp_path / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=TIMEOUT * 2)
        assert proc.returncode == 0, err.decode()
    with HistoryStore.open(store_url, max_age=None) as store:
        assert store.counts() == {"by_state": {"SUCCESS": 2000},
                                  "by_name": {"proj.add": {"SUCCESS": 2000}}, "total": 2000}
        assert store.count_events() == 6000
        row = store.task("t7")
        assert row is not None and row["args"] == "(7,)" and row["result"] == "7"
        assert row["started"] == 1_000_007.1
