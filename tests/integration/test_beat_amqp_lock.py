"""The beat leader lock on RabbitMQ: the lease, its end when the holder's connection
ends (close, kill -9, silence), the shared state, fork, and two real beat processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import require, wait_until

from celeriac.beat.amqp_lock import LOCK_PREFIX, STATE_PREFIX, AMQPLock, heartbeat_for
from celeriac.beat.lock import lock_for_url

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}//"


def _rabbit_answers() -> bool:
    try:
        import amqp
    except ImportError:
        return False
    try:
        conn = amqp.Connection(host=f"{RABBIT_HOST}:{RABBIT_PORT}", userid="guest",
                               password="guest", connect_timeout=2)
        conn.connect()
        conn.close()
        return True
    except Exception:  # noqa: BLE001 - anything but a working login means "absent"
        return False


@pytest.fixture(scope="module")
def rabbitmq() -> str:
    require(f"RabbitMQ (guest/guest) is not reachable on {RABBIT_HOST}:{RABBIT_PORT} "
            "or py-amqp is not installed (pip install celeriac[amqp])", _rabbit_answers())
    return URL


def delete_queues(*names: str) -> None:
    """Delete queues the test made, each on a channel of its own (a refusal closes it)."""
    import amqp

    conn = amqp.Connection(host=f"{RABBIT_HOST}:{RABBIT_PORT}", userid="guest",
                           password="guest")
    conn.connect()
    try:
        for name in names:
            ch = conn.channel()
            try:
                ch.queue_delete(name)
                ch.close()
            except Exception:  # noqa: BLE001 - still exclusive to a dying connection
                pass
    finally:
        conn.close()


@pytest.fixture
def lock_name(rabbitmq: str) -> Iterator[str]:
    name = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(LOCK_PREFIX + name, STATE_PREFIX + name)


def _amqp_installed() -> bool:
    try:
        import amqp  # noqa: F401
    except ImportError:
        return False
    return True


def test_amqp_schemes_get_the_amqp_lock() -> None:
    require("py-amqp is not installed (pip install celeriac[amqp])", _amqp_installed())
    for url in ("amqp://h//", "pyamqp://u:p@h:5672/v", "amqps://h//"):
        lock = lock_for_url(url, "x")
        assert isinstance(lock, AMQPLock)
        assert lock.lock_queue == "celeriac.beat.lock.x"
        lock.close()  # never connected: nothing to do
    # Two heartbeats cover the lease; three stay near 1.5 ttl.
    assert heartbeat_for(15) == 8 and heartbeat_for(3) == 2 and heartbeat_for(0.5) == 1


def test_one_holder_renew_release_and_owners(lock_name: str) -> None:
    a, b = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert a.acquire("a", 3)
        assert a.acquire("a", 3)  # held: a renewal
        assert not b.acquire("b", 3)
        assert not b.acquire("b", 3)  # the refused channel is replaced, not reused
        assert not a.acquire("b", 3)  # another owner sharing a's connection
        assert a.renew("a", 3)
        assert not a.renew("b", 3) and not b.renew("b", 3)
        b.release("b")  # not the holder: no effect
        assert not b.acquire("b", 3)
        a.release("a")
        assert not a.renew("a", 3)
        assert b.acquire("b", 3)
        assert not a.acquire("a", 3)
        b.release("b")
        assert a.acquire("a", 3)
    finally:
        a.close()
        b.close()


def test_closed_holder_hands_over_and_its_renew_says_lost(lock_name: str) -> None:
    a, b = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert a.acquire("a", 3)
        assert not b.acquire("b", 3)
        a.close()  # the connection ends: RabbitMQ deletes its exclusive queue
        assert b.acquire("b", 3)
        assert not a.renew("a", 3)
        assert not a.acquire("a", 3)  # a new connection, refused like any stand-by
    finally:
        a.close()
        b.close()


def test_lost_socket_loses_the_lease_and_cannot_save_over_the_successor(
        lock_name: str) -> None:
    a, b = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert a.acquire("a", 3)
        a.save_state("a", {"tick": {"total_run_count": 1}})
        # The network goes under a's feet (as a broken link would): a does not know yet.
        a._conn.transport.sock.shutdown(socket.SHUT_RDWR)
        assert wait_until(lambda: b.acquire("b", 3), timeout=10)
        b.save_state("b", {"tick": {"total_run_count": 2}})
        with pytest.raises(ConnectionError):
            a.save_state("a", {"tick": {"total_run_count": 99}})
        assert not a.renew("a", 3)
        assert b.load_state() == {"tick": {"total_run_count": 2}}
        assert b.renew("b", 3)
    finally:
        a.close()
        b.close()


HOLDER = '''
import sys, time
from celeriac.beat.amqp_lock import AMQPLock
lock = AMQPLock(sys.argv[1], sys.argv[2])
assert lock.acquire("holder", float(sys.argv[3]))
lock.save_state("holder", {"from": "holder"})
print("held", flush=True)
time.sleep(600)
'''


def test_kill9_of_the_holder_ends_its_lease_at_once(lock_name: str) -> None:
    ttl = 30.0  # a long lease: only the closed socket can explain a quick takeover
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, URL, lock_name, str(ttl)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    other = AMQPLock(URL, lock_name)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held", holder.stdout.read()
        assert not other.acquire("other", ttl)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert wait_until(lambda: other.acquire("other", ttl), timeout=ttl / 2)
        assert other.load_state() == {"from": "holder"}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        other.close()


def test_a_silent_holder_loses_the_lock_after_its_ttl_not_before(lock_name: str) -> None:
    ttl = 2.0  # heartbeat 1 s: RabbitMQ drops the connection after 2-3 s of silence
    a, b = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert a.acquire("a", ttl)
        last_word = time.monotonic()
        assert not b.acquire("b", ttl)
        assert wait_until(lambda: b.acquire("b", ttl), timeout=10 * ttl)
        silent_for = time.monotonic() - last_word
        print(f"a silent holder lost a {ttl}s lease after {silent_for:.2f}s")
        # Never before the lease (the holder would still trust it), and about 1.5 ttl
        # after (three heartbeats) plus the polling here.
        assert silent_for >= ttl
        assert silent_for < 3 * ttl + 1
        assert not a.renew("a", ttl)
    finally:
        a.close()
        b.close()


def test_a_renewing_holder_keeps_the_lock(lock_name: str) -> None:
    ttl = 2.0
    a, b = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert a.acquire("a", ttl)
        deadline = time.monotonic() + 3 * ttl
        while time.monotonic() < deadline:  # as beat does: renew every ttl / 3
            assert a.renew("a", ttl)
            assert not b.acquire("b", ttl)
            time.sleep(ttl / 3)
    finally:
        a.close()
        b.close()


def test_state_round_trip(lock_name: str) -> None:
    a, reader = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert reader.load_state() is None
        a.save_state("a", {"tick": {"total_run_count": 1}})  # not held: ignored
        assert reader.load_state() is None
        assert a.acquire("a", 3)
        state = {"tick": {"last_run_at": "2026-01-01T12:00:00+00:00", "total_run_count": 3},
                 "cron": {"last_run_at": None, "total_run_count": 0}}
        a.save_state("a", {"tick": {"total_run_count": 2}})
        a.save_state("a", state)  # the latest replaces the one before
        a.save_state("b", {"tick": {"total_run_count": 99}})  # not the holder: ignored
        assert reader.load_state() == state
        assert reader.load_state() == state  # reading leaves it in place
        assert a.load_state() == state
        a.close()  # the state outlives the lease
        assert reader.load_state() == state
    finally:
        a.close()
        reader.close()


def test_a_forked_child_leaves_the_parents_lease_alone(lock_name: str) -> None:
    lock, other = AMQPLock(URL, lock_name), AMQPLock(URL, lock_name)
    try:
        assert lock.acquire("parent", 3)
        pid = os.fork()
        if pid == 0:  # the child: what a prefork pool process could do with it
            code = 1
            try:
                held_here = lock.renew("parent", 3)
                taken = lock.acquire("child", 3)
                lock.close()
                code = 0 if not held_here and not taken else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.renew("parent", 3)
        assert not other.acquire("other", 3)
    finally:
        lock.close()
        other.close()


# -- two real beat processes -------------------------------------------------------------
BEAT_PROJ = '''
import os, time
from celeriac import Celery, signals

app = Celery("beatproj", broker={broker!r})
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


def beat_logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in folder.glob("beat-*.log"))


def test_two_beat_processes_on_rabbitmq_one_sends_and_the_other_takes_over(
        rabbitmq: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    queue = f"beat-amqp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lock_name = f"celeriac-beat.beatproj.{queue}"  # service.default_lock_name's
    (tmp_path / "beatproj.py").write_text(BEAT_PROJ.format(broker=rabbitmq, queue=queue,
                                                           runs=str(runs)))
    ttl = 3.0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []
    try:
        for name in ("a", "b"):
            log = open(tmp_path / f"beat-{name}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", "beatproj", "beat", "-l", "INFO",
                 "-s", str(tmp_path / f"state-{name}"), "--lock-ttl", str(ttl)],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        assert wait_until(lambda: len(read_runs(runs)) >= 4), beat_logs(tmp_path)
        before = read_runs(runs)
        leaders = {pid for _, pid in before}
        assert len(leaders) == 1, before  # one sends, however many beats run
        leader = leaders.pop()
        by_pid = {p.pid: p for p in procs}
        os.killpg(leader, signal.SIGKILL)
        by_pid[leader].wait()
        killed_at = time.time()
        assert wait_until(lambda: any(p != leader for _, p in read_runs(runs)[len(before):])
                          and len(read_runs(runs)) >= len(before) + 4), beat_logs(tmp_path)
        survivor = next(p for p in procs if p.pid != leader)
        survivor.send_signal(signal.SIGTERM)  # lets the lock go, as a stopped beat does
        assert survivor.wait(20) == 0, beat_logs(tmp_path)
        after = read_runs(runs)
        times = [t for t, _ in after]
        # No tick sent twice: runs of an every-second entry are a tick apart.
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert min(gaps) > 0.5, gaps
        assert all(t <= killed_at for t, p in after if p == leader)
        takeover = min(t for t, p in after if p != leader) - max(t for t, p in before)
        print(f"fail-over on RabbitMQ: {takeover:.2f}s with lock ttl {ttl}s")
        assert takeover < 3 * ttl  # kill -9 closes the socket: the stand-by's next try
        # Nothing skipped or counted afresh: the stand-by, whose own state file never saw
        # a run, went on from the count the leader kept in RabbitMQ.
        reader = AMQPLock(rabbitmq, lock_name)
        try:
            shared = reader.load_state()
        finally:
            reader.close()
        assert shared is not None, beat_logs(tmp_path)
        assert shared["tick"]["total_run_count"] == len(after), (shared, after)
        # And it let the lock go on SIGTERM.
        probe = AMQPLock(rabbitmq, lock_name)
        try:
            assert probe.acquire("the-test", 5)
        finally:
            probe.close()
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
        delete_queues(queue, LOCK_PREFIX + lock_name, STATE_PREFIX + lock_name)
