"""Beat: entries, persistent state, restarts, and two real beats behind the leader lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from celeriac import Celery
from celeriac.beat import Beat, MemoryLock, PersistentScheduler, Scheduler, SQLiteLock
from celeriac.beat.lock import lock_for_url
from celeriac.schedules import crontab, schedule
from support import wait_until

UTC = timezone.utc


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def memory_app(**settings: Any) -> tuple[Celery, list[tuple[str, Any, Any, dict[str, Any]]]]:
    app = Celery("beattest", broker="memory://", set_as_current=False, **settings)
    sent: list[tuple[str, Any, Any, dict[str, Any]]] = []
    app.send_task = lambda name, args=None, kwargs=None, **opts: (  # type: ignore[method-assign]
        sent.append((name, args, kwargs, opts)))
    return app, sent


def scheduler_at(cls: type[Scheduler], app: Celery, clock: Clock, **kw: Any) -> Scheduler:
    sched = cls(app, **kw)
    sched.now = clock  # type: ignore[method-assign]
    return sched


# -- entries -----------------------------------------------------------------------------
def test_entries_from_settings_old_names_and_add_periodic_task(tmp_path: Path) -> None:
    app, sent = memory_app(CELERYBEAT_SCHEDULE={
        "every-5": {"task": "t.five", "schedule": 5.0, "args": (1,),
                    "options": {"queue": "q1", "priority": 3}},
        "cron": {"task": "t.cron", "schedule": crontab(minute="*/15")},
    })

    @app.task(name="t.hello")
    def hello(who: str) -> str:
        return who

    @app.on_after_configure.connect
    def setup_periodic(sender: Any, **kwargs: Any) -> None:
        sender.add_periodic_task(timedelta(seconds=10), hello.s("world"), name="hello",
                                 expires=30)

    service = Beat(app, schedule_filename=str(tmp_path / "s"), lock=False)
    sched = service.setup()
    assert set(sched.entries) == {"every-5", "cron", "hello"}
    assert sched.entries["hello"].options == {"expires": 30}
    assert sched.entries["hello"].args == ["world"]
    assert isinstance(sched.entries["every-5"].schedule, schedule)
    for entry in sched.entries.values():
        entry.last_run_at = datetime(2000, 1, 1, tzinfo=UTC)
    sched.tick()
    assert sorted(s[0] for s in sent) == ["t.cron", "t.five", "t.hello"]
    five = next(s for s in sent if s[0] == "t.five")
    assert five[1] == [1] and five[3] == {"queue": "q1", "priority": 3}


def test_state_file_restart_neither_repeats_nor_drops(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    app, sent = memory_app(beat_schedule={"e": {"task": "t.e",
                                                "schedule": schedule(60, nowfun=clock)}})
    state = str(tmp_path / "beat-state")
    first = scheduler_at(PersistentScheduler, app, clock, schedule_filename=state)
    first.setup()
    assert first.tick() == 60 and not sent  # a new entry counts as run at start
    clock.now += timedelta(seconds=61)
    first.tick()
    assert len(sent) == 1
    saved = json.loads(Path(state + ".json").read_text())
    assert saved["entries"]["e"]["total_run_count"] == 1

    # Restarted 30 s later: not due again (no repeat).
    clock.now += timedelta(seconds=30)
    second = scheduler_at(PersistentScheduler, app, clock, schedule_filename=state)
    second.setup()
    second.tick()
    assert len(sent) == 1
    # Down for ten intervals: runs once at once (no silent drop, no burst).
    clock.now += timedelta(minutes=10)
    third = scheduler_at(PersistentScheduler, app, clock, schedule_filename=state)
    third.setup()
    third.tick()
    third.tick()
    assert len(sent) == 2
    assert not list(tmp_path.glob(".celeriac-beat-*"))  # temporary files renamed away


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_leader_lock_contract(kind: str, tmp_path: Path) -> None:
    lock = MemoryLock(f"t-{os.getpid()}-{time.time()}") if kind == "memory" \
        else SQLiteLock(str(tmp_path / "lock.db"))
    assert lock.acquire("a", 0.3)
    assert not lock.acquire("b", 0.3)
    assert lock.renew("a", 0.3)
    assert not lock.renew("b", 0.3)
    lock.save_state("a", {"e": {"last_run_at": "x"}})
    lock.save_state("b", {"e": {"last_run_at": "y"}})  # not the holder: ignored
    assert lock.load_state() == {"e": {"last_run_at": "x"}}
    time.sleep(0.35)
    assert not lock.renew("a", 0.3)
    assert lock.acquire("b", 0.3)
    lock.release("a")
    assert not lock.acquire("a", 0.3)
    lock.release("b")
    assert lock.acquire("a", 0.3)
    lock.close()


def test_redis_leader_lock(redis_server: str) -> None:
    lock = lock_for_url(f"{redis_server}/13", f"celeriac-beat-test-{os.getpid()}-{time.time()}")
    try:
        assert lock.acquire("a", 1)
        assert not lock.acquire("b", 1)
        assert lock.renew("a", 1) and not lock.renew("b", 1)
        lock.save_state("a", {"e": 1})
        assert lock.load_state() == {"e": 1}
        lock.release("b")
        assert not lock.acquire("b", 1)
        lock.release("a")
        assert lock.acquire("b", 1)
        lock.release("b")
    finally:
        lock.close()


def test_two_beats_in_process_one_leader(tmp_path: Path) -> None:
    app, sent = memory_app(beat_schedule={"e": {"task": "t.e", "schedule": 0.1}})
    lock = MemoryLock(f"inproc-{time.time()}")
    a = Beat(app, scheduler="memory", lock=lock, lock_ttl=0.6, owner="a")
    b = Beat(app, scheduler="memory", lock=lock, lock_ttl=0.6, owner="b")
    a.setup()
    b.setup()
    a.turn()
    b.turn()
    assert a.is_leader and not b.is_leader
    a.close()  # releases the lock
    b.turn()
    assert b.is_leader


# -- real processes ----------------------------------------------------------------------
BEAT_PROJ = '''
import os, time
from celeriac import Celery, signals

app = Celery("beatproj", broker={broker!r}, backend={broker!r})
app.conf.task_default_queue = {queue!r}
app.conf.beat_schedule = {{"tick": {{"task": "beatproj.tick", "schedule": 1.0}}}}
RUNS = {runs!r}


@signals.before_task_publish.connect
def record(sender=None, headers=None, **kwargs):
    if sender == "beatproj.tick":
        with open(RUNS, "a") as fh:
            fh.write(f"{{time.time():.3f}} {{os.getpid()}}\\n")
'''


def read_runs(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(float(t), int(p)) for t, p in rows]


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis"])
def test_two_beat_processes_failover(broker_kind: str, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    if broker_kind == "redis":
        broker = request.getfixturevalue("redis_server") + "/13"
    else:
        broker = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    runs = tmp_path / "runs.txt"
    queue = f"beat-{os.getpid()}-{int(time.time() * 1000)}"
    (tmp_path / "beatproj.py").write_text(BEAT_PROJ.format(broker=broker, queue=queue,
                                                           runs=str(runs)))
    ttl = 3.0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name in ("a", "b"):
            log = open(tmp_path / f"beat-{name}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", "beatproj", "beat", "-l", "INFO",
                 "-s", str(tmp_path / f"state-{name}"), "--lock-ttl", str(ttl)],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        assert wait_until(lambda: len(read_runs(runs)) >= 4), _logs(tmp_path)
        before = read_runs(runs)
        leaders = {pid for _, pid in before}
        assert len(leaders) == 1, before  # one leader, however many beats
        leader = leaders.pop()
        by_pid = {p.pid: p for p in procs}
        os.killpg(leader, signal.SIGKILL)
        by_pid[leader].wait()
        killed_at = time.time()
        assert wait_until(lambda: any(p != leader for _, p in read_runs(runs)[len(before):])
                          and len(read_runs(runs)) >= len(before) + 4), _logs(tmp_path)
        after = read_runs(runs)
        times = [t for t, _ in after]
        # No tick sent twice: consecutive runs of an every-second entry are a tick apart.
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) > 0.5, gaps
        survivors = {p for _, p in after[len(before):]}
        assert leader not in survivors or all(t <= killed_at for t, p in after if p == leader)
        takeover = min(t for t, p in after if p != leader) - max(t for t, p in before)
        print(f"fail-over: {takeover:.2f}s with lock ttl {ttl}s")
        assert takeover < 3 * ttl  # bound: ttl + ttl/3 after the last renewal
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for log in logs:
            log.close()


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in folder.glob("beat-*.log"))


def test_worker_with_embedded_beat_runs_the_entry(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    broker = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    (tmp_path / "beatproj.py").write_text(BEAT_PROJ.format(
        broker=broker, queue="embedded", runs=str(runs)) + '''

@app.task(name="beatproj.tick")
def tick():
    with open(RUNS + ".done", "a") as fh:
        fh.write("ran\\n")
''')
    from celeriac.contrib.testing import WorkerProcess

    with WorkerProcess("beatproj", cwd=tmp_path,
                       args=["-B", "-P", "threads", "-s", str(tmp_path / "state")]):
        assert wait_until(lambda: Path(str(runs) + ".done").exists()
                          and len(Path(str(runs) + ".done").read_text().split()) >= 2)
    assert (tmp_path / "state.json").exists()
    # The worker's warm shutdown stopped beat, which let the leader lock go.
    lock = SQLiteLock(str(tmp_path / "broker.sqlite3"), "celeriac-beat.beatproj.embedded")
    assert lock.acquire("next", 5)
    lock.close()


def test_sqlite_scheduler_picks_up_changes_while_running(tmp_path: Path) -> None:
    from celeriac.beat.store import (
        ScheduleStore,
        SQLiteScheduler,
        schedule_from_json,
        schedule_to_json,
    )

    clock = Clock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    app, sent = memory_app(beat_schedule={"seed": {"task": "t.seed", "schedule": 60}})
    path = str(tmp_path / "entries.sqlite3")
    sched = scheduler_at(SQLiteScheduler, app, clock, schedule_filename=path)
    sched.setup()
    assert set(sched.entries) == {"seed"}  # settings seed the store
    assert sched.max_interval == 5.0

    other = ScheduleStore(path)  # another process, e.g. an admin page
    other.set("nightly", "t.nightly", crontab(minute=0, hour="3", day_of_week="mon-fri"),
              args=[1], options={"queue": "slow"})
    other.set("seed", "t.seed", 60, enabled=False)
    sched.tick()
    assert set(sched.entries) == {"nightly"}
    assert sched.entries["nightly"].options == {"queue": "slow"}
    assert sched.entries["nightly"].schedule == crontab(minute=0, hour=3,
                                                        day_of_week="mon-fri")
    for value in (crontab("*/5", "1-3"), schedule(30, relative=True)):
        assert schedule_from_json(schedule_to_json(value)) == value
    other.close()
    sched.close()


def test_restarted_beat_process_neither_repeats_nor_bursts(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    broker = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    (tmp_path / "beatproj.py").write_text(
        BEAT_PROJ.format(broker=broker, queue="restart", runs=str(runs))
        .replace('"schedule": 1.0', '"schedule": 2.0'))
    command = [sys.executable, "-m", "celeriac", "-A", "beatproj", "beat", "-l", "INFO",
               "-s", str(tmp_path / "state"), "--lock-ttl", "3"]

    def run_beat(until: Callable[[], bool]) -> None:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            assert wait_until(until)
        finally:
            proc.send_signal(signal.SIGTERM)  # releases the lock, saves the state
            assert proc.wait(10) == 0

    run_beat(lambda: len(read_runs(runs)) >= 1)
    first = read_runs(runs)
    run_beat(lambda: len(read_runs(runs)) > len(first))  # restarted at once
    second = read_runs(runs)
    assert second[len(first)][0] - first[-1][0] > 1.5  # not repeated on restart
    time.sleep(5)  # down for more than two intervals
    run_beat(lambda: len(read_runs(runs)) > len(second))
    third = read_runs(runs)[len(second):]
    assert len(third) == 1  # the missed runs are made up once, not in a burst
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["entries"]["tick"]["total_run_count"] == len(read_runs(runs))
