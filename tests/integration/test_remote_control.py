"""Remote control and inspect against real worker processes, on SQLite and Redis.

Each test has its own control exchange (``control_exchange``), so workers of other
tests sharing the Redis database never answer its requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from celeriac.brokers import Notice
from celeriac.contrib.testing import WorkerProcess

# Also run on RabbitMQ (tests/conftest.py).
BROKERS_ALSO = ("amqp", "postgresql")


def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def ctl(configure: Any) -> Any:
    """The project's app with a control exchange of its own."""
    return configure(control_exchange=f"ctl-{unique()}")


def cli(project: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", *args],
                          cwd=project, capture_output=True, text=True, timeout=timeout)


def test_status_and_ping_from_the_command_line(ctl: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "1", "-n", "alpha@%h"]):
        done = cli(project, "status")
        assert done.returncode == 0, done.stderr
        assert "alpha@" in done.stdout and "1 node online." in done.stdout
        done = cli(project, "inspect", "ping", "--json")
        assert done.returncode == 0, done.stderr
        (node, answer), = json.loads(done.stdout).items()
        assert node.startswith("alpha@") and answer == {"ok": "pong"}
    # Nobody left: said on stderr, with Celery's exit code for "unavailable".
    done = cli(project, "inspect", "ping", "-t", "0.5")
    assert done.returncode == 69
    assert "No nodes replied within time constraint" in done.stderr


def test_an_unknown_command_is_a_usage_error(ctl: Any, project: Path) -> None:
    done = cli(project, "inspect", "no_such_thing")
    assert done.returncode == 2
    assert "Command no_such_thing not recognized" in done.stderr
    assert "active" in done.stderr  # the ones that exist are listed


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_active_shows_what_the_pool_runs(ctl: Any, project: Path, tmp_path: Path,
                                         pool: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "2"]) as worker:
        held = ctl.block.delay(str(markers), "one")
        also = ctl.block.delay(str(markers), "two")
        assert wait_until(lambda: (markers / "started").exists()
                          and len((markers / "started").read_text().split()) == 2)
        active = ctl.app.control.inspect(timeout=5, limit=1).active()
        assert active is not None
        (node, running), = active.items()
        assert sorted((t["id"], t["name"], t["args"][1]) for t in running) == sorted([
            (held.id, "proj.block", "one"), (also.id, "proj.block", "two")])
        if pool == "prefork":  # run by a child, and said so
            assert running[0]["worker_pid"] != worker.pid
        assert running[0]["acknowledged"] is True
        query = ctl.app.control.inspect(timeout=5, limit=1).query_task(held.id)
        assert query[node][held.id][0] == "active"
        (markers / "go").touch()
        assert (held.get(timeout=20), also.get(timeout=20)) == ("one", "two")
        stats = ctl.app.control.inspect(timeout=5, limit=1).stats()[node]
        assert stats["total"] == {"proj.block": 2}
        assert stats["pool"]["max-concurrency"] == 2
        if pool == "prefork":
            assert len(stats["pool"]["processes"]) == 2
        assert ctl.app.control.inspect(timeout=5, limit=1).active() == {node: []}


def test_rate_limit_set_remotely_reaches_the_pool_processes(ctl: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "2"]):
        replies = ctl.app.control.rate_limit("proj.add", "2/m", reply=True, timeout=5, limit=1)
        assert [list(r.values())[0] for r in replies] == [
            {"ok": "new rate limit set successfully"}]
        results = [ctl.add.delay(i, i) for i in range(3)]
        # The first runs; the others wait their turn, held by the worker, not lost.
        assert results[0].get(timeout=20) == 0

        def held() -> list[Any]:
            scheduled = ctl.app.control.inspect(timeout=5, limit=1).scheduled() or {}
            return [s for node in scheduled.values() for s in node]

        assert wait_until(lambda: len(held()) >= 1)
        assert {s["request"]["name"] for s in held()} == {"proj.add"}
        bad = ctl.app.control.rate_limit("proj.nope", "1/s", reply=True, timeout=5, limit=1)
        assert "unknown task" in list(bad[0].values())[0]["error"]
        # Lifted: what was held takes its turn again, at once.
        ctl.app.control.rate_limit("proj.add", None, reply=True, timeout=5, limit=1)
        assert [r.get(timeout=20) for r in results] == [0, 2, 4]


def test_add_and_cancel_consumer(ctl: Any, project: Path) -> None:
    extra = f"extra-{unique()}"
    with WorkerProcess("proj", cwd=project, args=["-c", "2"]):
        replies = ctl.app.control.add_consumer(extra, reply=True, timeout=5, limit=1)
        assert list(replies[0].values())[0] == {"ok": f"add consumer {extra}"}
        assert ctl.add.apply_async((1, 2), queue=extra).get(timeout=20) == 3
        queues = ctl.app.control.inspect(timeout=5, limit=1).active_queues()
        assert extra in {q["name"] for node in queues.values() for q in node}
        replies = ctl.app.control.cancel_consumer(extra, reply=True, timeout=5, limit=1)
        assert list(replies[0].values())[0] == {"ok": f"no longer consuming from {extra}"}
        queues = ctl.app.control.inspect(timeout=5, limit=1).active_queues()
        assert extra not in {q["name"] for node in queues.values() for q in node}


def test_destination_picks_the_nodes(ctl: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "1", "-n", "one@x"]), \
            WorkerProcess("proj", cwd=project, args=["-c", "1", "-n", "two@x"]):
        everyone = ctl.app.control.inspect(timeout=5, limit=2).ping()
        assert set(everyone) == {"one@x", "two@x"}
        assert set(ctl.app.control.inspect(destination=["two@x"], timeout=5).ping()) == {
            "two@x"}
        assert ctl.app.control.inspect(destination=["nobody@x"], timeout=0.5).ping() is None
        assert set(ctl.app.control.inspect(pattern="o*", timeout=5, limit=1).ping()) == {"one@x"}


def test_bad_requests_do_not_stop_the_worker(ctl: Any, project: Path) -> None:
    from celeriac.brokers import Fanout, require

    with WorkerProcess("proj", cwd=project, args=["-c", "1"]) as worker:
        fanout = require(ctl.app.producer_broker(), Fanout, "test")
        exchange = f"{ctl.app.conf.control_exchange}.pidbox"
        fanout.broadcast(exchange, [Notice("", "not json"), Notice("", "[1, 2]"),
                                    Notice("", json.dumps({"method": 5})),
                                    Notice("", json.dumps({"method": "ping",
                                                           "arguments": "x"}))])
        unknown = ctl.app.control.broadcast("frobnicate", reply=True, timeout=5, limit=1)
        assert "unknown command 'frobnicate'" in list(unknown[0].values())[0]["error"]
        wrong = ctl.app.control.broadcast("pool_grow", {"n": "many"}, reply=True, timeout=5, limit=1)
        assert "error" in list(wrong[0].values())[0]
        assert list(ctl.app.control.ping(timeout=5, limit=1)[0].values()) == [{"ok": "pong"}]
        assert ctl.add.delay(2, 2).get(timeout=20) == 4
        assert "malformed remote-control message" in worker.output


def test_shutdown_stops_the_worker_warm(ctl: Any, project: Path, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    worker = WorkerProcess("proj", cwd=project, args=["-c", "1"]).start()
    try:
        running = ctl.block.delay(str(markers), "last")
        assert wait_until(lambda: (markers / "started").exists())
        replies = ctl.app.control.shutdown(reply=True, timeout=5, limit=1)
        assert list(replies[0].values()) == [{"ok": "shutting down"}]
        (markers / "go").touch()
        assert worker.proc.wait(30) == 0
        assert running.get(timeout=10) == "last"  # it finished before the worker left
    finally:
        worker.kill()


def test_remote_control_can_be_turned_off(configure: Any, project: Path) -> None:
    app = configure(control_exchange=f"ctl-{unique()}", worker_enable_remote_control=False)
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        assert app.add.delay(1, 1).get(timeout=20) == 2
        assert app.app.control.inspect(timeout=0.5).ping() is None


def test_registered_and_conf(ctl: Any, project: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
        registered = ctl.app.control.inspect(timeout=5, limit=1).registered("rate_limit")
        (names,) = registered.values()
        assert "proj.add" in names and not any(n.startswith("celery.") for n in names)
        conf = ctl.app.control.inspect(timeout=5, limit=1).conf()
        (settings,) = conf.values()
        assert settings["control_exchange"] == ctl.app.conf.control_exchange
        done = cli(Path(project), "inspect", "registered")
        assert "* proj.add" in done.stdout and done.returncode == 0
        done = cli(Path(project), "control", "rate_limit", "proj.add", "10/m")
        assert "new rate limit set successfully" in done.stdout, done.stderr


def test_reserved_shows_what_a_child_prefetched(configure: Any, project: Path,
                                                tmp_path: Path) -> None:
    app = configure(control_exchange=f"ctl-{unique()}", worker_prefetch_release_after=0)
    markers = tmp_path / "markers"
    markers.mkdir()
    # Queued before the worker starts, so that its first fetch takes all four.
    running = app.block.delay(str(markers), "first")
    behind = [app.add.delay(i, i) for i in range(3)]
    with WorkerProcess("proj", cwd=project, args=["-c", "1", "--prefetch-multiplier", "4"]):
        assert wait_until(lambda: (markers / "started").exists())

        def reserved() -> list[str]:
            found = app.app.control.inspect(timeout=5, limit=1).reserved() or {}
            return [t["id"] for node in found.values() for t in node]

        # Fetched by the child with the next batch, not started, and shown as such.
        assert wait_until(lambda: sorted(reserved()) == sorted(r.id for r in behind))
        (node, answer), = app.app.control.inspect(timeout=5, limit=1).query_task(behind[0].id).items()
        assert answer[behind[0].id][0] == "reserved"
        (markers / "go").touch()
        assert running.get(timeout=20) == "first"
        assert [r.get(timeout=20) for r in behind] == [0, 2, 4]
        assert wait_until(lambda: reserved() == [])


def test_task_events_switched_on_and_off_remotely(ctl: Any, project: Path) -> None:
    app = ctl.app
    with WorkerProcess("proj", cwd=project, args=["-c", "2", "-n", "ev@x"]):
        with app.connection() as conn:
            seen: list[dict[str, Any]] = []
            receiver = app.events.Receiver(conn, handlers={"*": seen.append})
            events = receiver.itercapture(timeout=10, wakeup=True)
            # wakeup: the heartbeat command makes the worker announce itself at once
            assert next(e for e in events if e["type"] == "worker-heartbeat")["hostname"] \
                == "ev@x"
            replies = app.control.enable_events(reply=True, timeout=5, limit=1)
            assert list(replies[0].values()) == [{"ok": "task events enabled"}]
            result = ctl.add.delay(3, 4)
            assert result.get(timeout=20) == 7
            done = next(e for e in events if e["type"] == "task-succeeded")
            assert (done["uuid"], done["result"]) == (result.id, "7")
            replies = app.control.disable_events(reply=True, timeout=5, limit=1)
            assert list(replies[0].values()) == [{"ok": "task events disabled"}]
            quiet = ctl.add.delay(1, 1)
            assert quiet.get(timeout=20) == 2
            app.control.heartbeat()
            later = [e for e in receiver.itercapture(limit=2, timeout=10, wakeup=False)
                     if e["type"].startswith("worker-")][:1]
            assert later  # the worker still speaks, but says nothing of its tasks
            assert quiet.id not in {e.get("uuid") for e in seen}
