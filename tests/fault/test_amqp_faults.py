"""RabbitMQ under faults: a worker killed mid-drain, the broker stopped and started, every
connection closed, publishing while the broker is away, and a memory alarm.

Every test here runs on a private RabbitMQ node (tests/rabbit_node.py), started once
for the session on free ports with its own data, logs, plugins, configuration and Erlang
cookie (a private HOME). The machine's shared node (5672) is never addressed: the
management commands name the private node only, and with a cookie of their own they
could not reach the shared one if they tried.

A task run is counted in a file each task appends to (O_APPEND, one short line per
write): ``start`` when a run begins, ``end`` when it ends. A task with no ``end`` is
lost; a task with more than one ``start`` was doubled. Each test prints its figures
(lost, doubled, how long redelivery or recovery took) on a line starting
``AMQP-FAULT``: run with ``-s`` to see them.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from rabbit_node import RabbitNode, require_rabbit, running_nodes
from support import wait_until

from celeriac.exceptions import PublishUnconfirmed

from celeriac.contrib.testing import WorkerProcess


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    server, ctl = require_rabbit()
    node = RabbitNode(tmp_path_factory.mktemp("rabbit"), server, ctl)
    with running_nodes([node]):
        yield node


# -- the app the workers run -------------------------------------------------------------
APP_SOURCE = '''
import os
import time

from celeriac import Celery

app = Celery("faultproj", broker={url!r})
app.conf.task_default_queue = {queue!r}
app.conf.broker_dead_letter_queue = {queue!r} + ".dead"
app.conf.task_acks_late = True
app.conf.broker_transport_options = {transport!r}
RUNS = {runs!r}


def note(kind, i, host, redelivered):
    line = "%s %s %d %s %d %.6f\\n" % (kind, i, os.getpid(), host, redelivered, time.time())
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write: a whole line, whoever else appends
    finally:
        os.close(fd)


@app.task(name="fault.mark", bind=True, ignore_result=True)
def mark(self, i, pause=0.0):
    host = (self.request.hostname or "?").split("@")[0]
    redelivered = int(bool((self.request.delivery_info or {{}}).get("redelivered")))
    note("start", i, host, redelivered)
    if pause:
        time.sleep(pause)
    note("end", i, host, redelivered)
'''


@dataclass
class Run:
    kind: str
    task: int
    pid: int
    host: str
    redelivered: bool
    at: float


@dataclass
class Tally:
    """What the runs file says."""

    runs: list[Run] = field(default_factory=list)

    @property
    def starts(self) -> Counter[int]:
        return Counter(r.task for r in self.runs if r.kind == "start")

    @property
    def ends(self) -> Counter[int]:
        return Counter(r.task for r in self.runs if r.kind == "end")

    def lost(self, expected: Any) -> list[int]:
        ends = self.ends
        return sorted(i for i in expected if ends[i] == 0)

    def doubled(self) -> dict[int, int]:
        return {i: n for i, n in self.starts.items() if n > 1}


def tally(path: Path) -> Tally:
    out = Tally()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue  # never expected: each line is one write
        kind, task, pid, host, redelivered, at = parts
        out.runs.append(Run(kind, int(task), int(pid), host, redelivered == "1", float(at)))
    return out


def ended(path: Path) -> int:
    return len(tally(path).ends)


@dataclass
class Project:
    dir: Path
    runs: Path
    queue: str
    client: Any

    def worker(self, name: str, *args: str) -> WorkerProcess:
        return WorkerProcess("faultproj", cwd=self.dir, args=["-n", f"{name}@%h", *args],
                             ready_timeout=60)

    def send(self, i: int, pause: float = 0.0, **options: Any) -> Any:
        return self.client.send_task("fault.mark", args=[i, pause], **options)

    def send_many(self, count: int, pause: float) -> None:
        with self.client.batch_publish():
            for i in range(count):
                self.send(i, pause)


@pytest.fixture
def make_project(rabbit: RabbitNode, tmp_path: Path) -> Iterator[Any]:
    clients: list[Any] = []

    def make(**transport: Any) -> Project:
        transport.setdefault("confirm_timeout", 10)
        queue = f"amqp-fault-{uuid.uuid4().hex[:8]}"
        runs = tmp_path / "runs"
        (tmp_path / "faultproj.py").write_text(APP_SOURCE.format(
            url=rabbit.url, queue=queue, transport=transport, runs=str(runs)))
        # a client app of the test process's own, configured as the worker's
        spec = importlib.util.spec_from_file_location(f"faultproj_{queue}",
                                                      tmp_path / "faultproj.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        client = module.app
        clients.append(client)
        return Project(tmp_path, runs, queue, client)

    yield make
    for client in clients:
        client.close()


def report(what: str, **figures: Any) -> None:
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nAMQP-FAULT {what}: {text}")


POOLS = {"prefork": ["-P", "prefork", "-c", "2"], "solo": ["-P", "solo"]}
CONCURRENCY = {"prefork": 2, "solo": 1}
PREFETCH = 4  # worker_prefetch_multiplier's default, per consumer


# -- 1. kill -9 a worker mid-drain -----------------------------------------------------------
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_killed_worker_messages_go_to_the_other_worker(make_project: Any,
                                                       pool: str) -> None:
    project = make_project()
    count = 400
    victim = project.worker("victim", *POOLS[pool])
    survivor = project.worker("survivor", *POOLS[pool])
    with victim, survivor:
        # A solo worker runs one task at a time: its tasks last longer, so that the kill,
        # which lands a moment after a run was seen (long on a loaded machine), still
        # finds that run going
        project.send_many(count, 0.02 if pool == "prefork" else 0.06)
        assert wait_until(lambda: len([r for r in tally(project.runs).runs
                                       if r.kind == "end" and r.host == "victim"]) >= 30)
        # the kill must find a task running: wait for a moment when the victim has one
        assert wait_until(lambda: bool(_running_on(tally(project.runs), "victim")))
        killed_at = time.time()
        victim.kill()  # SIGKILL to the worker and its pool processes
        at_kill = tally(project.runs)
        assert len(at_kill.ends) < count  # the kill does fall in the middle
        started_by_victim = {r.task for r in at_kill.runs
                             if r.kind == "start" and r.host == "victim"}
        ended_by_victim = {r.task for r in at_kill.runs
                           if r.kind == "end" and r.host == "victim"}
        assert wait_until(lambda: ended(project.runs) >= count, timeout=60)
        final = tally(project.runs)
        assert survivor.proc is not None and survivor.proc.poll() is None
    running_at_kill = started_by_victim - ended_by_victim
    survivor_starts = [r for r in final.runs if r.kind == "start" and r.host == "survivor"]
    # The killed worker's running tasks, run again by the survivor (whatever the
    # transport does with a redelivered message, these were redelivered).
    rerun = {r.task: r.at for r in survivor_starts if r.task in running_at_kill}
    flagged = [r.at for r in survivor_starts if r.redelivered]
    last_fresh = max(r.at for r in survivor_starts if r.task not in started_by_victim)
    lost = final.lost(range(count))
    doubled = final.doubled()
    report(f"kill -9 {pool}", lost=len(lost), doubled=len(doubled),
           running_at_kill=len(running_at_kill), flagged_redelivered=len(flagged),
           first_redelivered_s=f"{min(flagged) - killed_at:.3f}" if flagged else None,
           running_rerun_s=f"{max(rerun.values()) - killed_at:.3f}" if rerun else None)
    assert lost == []
    assert running_at_kill, "nothing ran on the killed worker at the kill"
    # Only what ran at the kill runs twice: one task per pool process at most.
    assert len(doubled) <= CONCURRENCY[pool], doubled
    assert set(doubled) <= started_by_victim
    # RabbitMQ gave the killed worker's unacked messages to the survivor while it still
    # had the rest of the queue to drain: at once, not after some timeout.
    assert set(rerun) == running_at_kill
    assert max(rerun.values()) < last_fresh
    # none ran a third time, and nothing unknown ran
    assert max(final.starts.values()) <= 2
    assert set(final.starts) == set(range(count))


def _running_on(runs: Any, host: str) -> set[int]:
    started = {r.task for r in runs.runs if r.kind == "start" and r.host == host}
    return started - {r.task for r in runs.runs if r.kind == "end" and r.host == host}


# -- 2 and 3. the broker restarted, or every connection closed, mid-drain --------------------
def _ride_out(project: Project, pool: str, interrupt: Any, what: str,
              rabbit: RabbitNode) -> None:
    count = 3000
    worker = project.worker("rider", *POOLS[pool])
    with worker:
        # the pool's consumers, and the main process's own connections
        assert wait_until(lambda: rabbit.connection_count() > CONCURRENCY[pool])
        # Long enough a drain that the cut falls in its middle even when rabbitmqctl,
        # an Erlang VM of its own, takes seconds to start on a loaded machine.
        project.send_many(count, 0.004 * CONCURRENCY[pool])
        assert wait_until(lambda: ended(project.runs) >= 150, timeout=60)
        before = tally(project.runs)
        pids_before = {r.pid for r in before.runs}
        cut_at = time.time()
        at_cut, back_at = interrupt(lambda: ended(project.runs))
        assert at_cut < count  # it does fall in the middle
        assert wait_until(lambda: ended(project.runs) >= count, timeout=90), \
            f"{ended(project.runs)} of {count} ran"
        final = tally(project.runs)
        assert worker.proc is not None and worker.proc.poll() is None  # never restarted
        output = worker.output
    after = [r for r in final.runs if r.at > back_at]
    # the longest pause in the runs from the cut on: how long the worker stood still
    times = sorted(r.at for r in final.runs if r.at >= cut_at - 1.0)
    stall = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    lost = final.lost(range(count))
    doubled = final.doubled()
    report(what + f" {pool}", lost=len(lost), doubled=len(doubled),
           doubled_ids=doubled, ended_at_cut=at_cut,
           cut_s=f"{back_at - cut_at:.2f}",
           stall_s=f"{stall:.2f}")
    assert lost == []
    assert set(final.starts) == set(range(count))
    # The same processes ran the rest: the pool was not replaced.
    assert {r.pid for r in after} <= pids_before
    assert "reachable again" in output
    # What may run twice: a task running when the connection went (its ack is lost),
    # and, per consumer, the messages it had prefetched and started before it noticed
    # that the connection was gone (RabbitMQ gave them back meanwhile).
    assert len(doubled) <= PREFETCH * CONCURRENCY[pool] + CONCURRENCY[pool], doubled
    # RabbitMQ closes the connections one after another: a message given back by the
    # first may go to a sibling whose connection is closed next, and run there too.
    assert max(final.starts.values()) <= 1 + CONCURRENCY[pool], doubled


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_worker_rides_out_stop_app_start_app(make_project: Any, rabbit: RabbitNode,
                                             pool: str) -> None:
    project = make_project()

    def restart(progress: Any) -> tuple[int, float]:
        rabbit.stop_app()
        try:
            at_cut = progress()
            time.sleep(1.0)
        finally:
            rabbit.start_app()
        return at_cut, time.time()

    _ride_out(project, pool, restart, "stop_app/start_app", rabbit)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_worker_rides_out_closed_connections(make_project: Any, rabbit: RabbitNode,
                                             pool: str) -> None:
    project = make_project()

    def close_all(progress: Any) -> tuple[int, float]:
        rabbit.close_all_connections("test")
        return progress(), time.time()

    _ride_out(project, pool, close_all, "close_all_connections", rabbit)


# -- 4. publishing while the broker is away --------------------------------------------------
PATIENT = {"max_retries": 100, "interval_start": 0.1, "interval_step": 0.1,
           "interval_max": 0.2}


@pytest.mark.parametrize("policy", ["default", "patient"])
def test_publishing_during_an_outage_is_never_a_silent_loss(
        make_project: Any, rabbit: RabbitNode, policy: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="celeriac.retries")
    project = make_project()
    outcomes: dict[int, str] = {}
    ids: dict[str, int] = {}
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            options = {"retry_policy": PATIENT} if policy == "patient" else {}
            task_id = str(uuid.uuid4())
            ids[task_id] = i
            try:
                project.send(i, task_id=task_id, **options)
                outcomes[i] = "ok"
            except Exception as exc:  # noqa: BLE001 - what the caller would see
                outcomes[i] = f"{type(exc).__name__}: {exc}"
            i += 1
            time.sleep(0.01)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        assert wait_until(lambda: len(outcomes) >= 30)
        rabbit.stop_app()
        try:
            time.sleep(2.0)
        finally:
            rabbit.start_app()
        time.sleep(1.0)
    finally:
        stop.set()
        publisher.join(60)
    assert not publisher.is_alive(), "a publish hung"
    # A publish retried after its connection broke under it (rather than after one
    # that could not be made) may have reached RabbitMQ before the break: the retry
    # then queues it a second time.
    uncertain: Counter[int] = Counter()
    for record in caplog.records:
        text = record.getMessage()
        if record.name == "celeriac.retries" and "fault.mark[" in text \
                and "cannot connect to RabbitMQ" not in text:
            uncertain[ids[text.split("fault.mark[", 1)[1].split("]", 1)[0]]] += 1
    ok = sorted(i for i, o in outcomes.items() if o == "ok")
    failed = {i: o for i, o in outcomes.items() if o != "ok"}
    with project.worker("drain", "-P", "solo"):
        assert wait_until(lambda: set(tally(project.runs).ends) >= set(ok), timeout=60)
        time.sleep(1.0)  # anything more that came would be run by now
        final = tally(project.runs)
    ran = final.starts
    report(f"publish during outage ({policy} retry policy)", published=len(outcomes),
           ok=len(ok), raised=len(failed), raised_but_ran=len([i for i in failed if ran[i]]),
           retried_after_a_break=len(uncertain),
           ok_ran_twice=[i for i in ok if ran[i] > 1],
           errors=sorted({o.split(":")[0] for o in failed.values()}))
    # Every publish that returned was run: none lost.
    assert [i for i in ok if ran[i] == 0] == []
    # Exactly once, but for a retry after a break (see above): once per attempt then.
    assert [i for i in ok if ran[i] != 1 and not uncertain[i]] == []
    assert [i for i in ok if ran[i] > 1 + uncertain[i]] == []
    # Every other one told its caller, naming the broker, and ran at most once per try.
    for message in failed.values():
        assert "RabbitMQ" in message, message
    assert [i for i in failed if ran[i] > uncertain[i] + 1] == []
    if policy == "default":
        assert failed, "no publish fell in the outage"
    else:
        assert failed == {}, "a retry policy longer than the outage rides it out"
    assert set(ran) <= set(outcomes)


# -- 5. connection.blocked (a memory alarm) --------------------------------------------------
@contextmanager
def memory_alarm(rabbit: RabbitNode) -> Iterator[None]:
    """RabbitMQ's memory alarm on the private node for the block; cleared after it."""
    rabbit.memory_alarm(True)
    try:
        assert wait_until(rabbit.alarmed, timeout=30)
        yield
    finally:
        rabbit.memory_alarm(False)
    assert wait_until(lambda: not rabbit.alarmed(), timeout=30)


def timed_send(project: Project, i: int, **options: Any) -> tuple[Any, float]:
    """Publish from a thread of its own: (None or the exception raised, seconds);
    fails the test if the publish is still waiting after a minute (a hang)."""
    outcome: list[tuple[Any, float]] = []

    def attempt() -> None:
        started = time.monotonic()
        try:
            project.send(i, **options)
            outcome.append((None, time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - what the caller sees
            outcome.append((exc, time.monotonic() - started))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a publish to a blocked broker hangs"
    return outcome[0]


def test_memory_alarm_blocks_publishing_with_a_clear_error(make_project: Any,
                                                           rabbit: RabbitNode) -> None:
    project = make_project(confirm_timeout=2)
    with project.worker("blocked", "-P", "solo") as worker:
        project.send(0)
        assert wait_until(lambda: ended(project.runs) == 1)
        with memory_alarm(rabbit):
            refused, waited = timed_send(project, 1, retry=False)
            # The worker's own connections publish too (its heartbeat events): RabbitMQ
            # blocks them as well, and the worker says so.
            told = worker.wait_for_output("blocked this connection", timeout=20)
        started = time.monotonic()
        project.send(2)  # publishing works again, on a new connection
        publish_again_s = time.monotonic() - started
        assert wait_until(lambda: 2 in tally(project.runs).ends, timeout=30)
        time.sleep(1.5)  # anything else RabbitMQ let through is run by now
        final = tally(project.runs)
        unblocked = "unblocked this connection" in worker.output
    report("memory alarm", raised_after_s=f"{waited:.1f}",
           refused_publish_ran=final.starts[1], publish_after_clear_s=f"{publish_again_s:.2f}",
           worker_told_block=told, worker_told_unblock=unblocked)
    # Sent, not confirmed: said, and not sent again (it may be queued when the alarm
    # clears)
    assert isinstance(refused, PublishUnconfirmed), refused
    assert "blocked" in str(refused), refused
    assert told, "the worker did not log that RabbitMQ blocked its connection"
    assert final.starts[0] == 1 and final.starts[2] == 1
    # The refusal says RabbitMQ may or may not have the message: at most once, then.
    assert final.starts[1] <= 1


def test_publish_retried_while_blocked_is_queued_at_most_once(make_project: Any,
                                                              rabbit: RabbitNode) -> None:
    project = make_project(confirm_timeout=2)
    with memory_alarm(rabbit):
        refused, waited = timed_send(project, 1)  # task_publish_retry: on, by default
    project.send(2)
    with project.worker("after-block", "-P", "solo"):
        assert wait_until(lambda: 2 in tally(project.runs).ends, timeout=30)
        time.sleep(1.5)
        final = tally(project.runs)
    report("memory alarm, publish retried", raised_after_s=f"{waited:.1f}",
           refused_publish_ran=final.starts[1])
    assert isinstance(refused, PublishUnconfirmed) and "blocked" in str(refused), refused
    assert final.starts[1] <= 1, f"the refused publish ran {final.starts[1]} times"
