"""Routing, priority and long acks_late tasks, with real workers."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import lines, wait_until  # noqa: E402

from celeriac.contrib.testing import WorkerProcess


def test_task_routes_and_exclude_queues(proj: Any, project: Path) -> None:
    base = proj.app.conf.task_default_queue
    fast, slow = f"{base}-fast", f"{base}-slow"
    (project / "routed.py").write_text(
        "from proj import app\n"
        f"app.conf.task_routes = {{'proj.add': {{'queue': {fast!r}}},"
        f" 'proj.who*': {{'queue': {slow!r}}}}}\n")
    sys.path.insert(0, str(project))
    try:
        import routed  # type: ignore[import-not-found]  # noqa: F401 - applies the routes

        proj.app._router = None  # the routes changed after the first send
        added = proj.add.delay(1, 2)
        who = proj.whoami.delay()
        with WorkerProcess("routed", cwd=project,
                           args=["-P", "threads", "-Q", f"{fast},{slow},{base}", "-X", slow]):
            assert added.get(timeout=20) == 3
            time.sleep(0.5)
            assert not who.ready()  # its queue is excluded with -X
        assert proj.app.connect_broker().size(slow) == 1
        with WorkerProcess("routed", cwd=project, args=["-P", "solo", "-Q", slow]):
            assert who.get(timeout=20)["routing_key"] == slow
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("routed", None)


def test_priority_lower_number_runs_first(proj: Any, project: Path, tmp_path: Path) -> None:
    if proj.app.conf.broker_url.startswith("amqp"):
        pytest.skip("on RabbitMQ a higher number runs first (test_amqp_topology.py)")
    marker = tmp_path / "m"
    marker.mkdir()
    order = tmp_path / "order"
    # queued before any worker runs, so the broker alone decides the order
    for priority in (9, 6, 0, 3):  # on Redis, kombu groups 0-2, 3-5, 6-8 and 9
        proj.record.apply_async((str(order), str(priority)), priority=priority)
    with WorkerProcess("proj", cwd=project, args=["-P", "solo", "--prefetch-multiplier", "1"]):
        assert wait_until(lambda: len(lines(order)) == 4)
    assert lines(order) == ["0", "3", "6", "9"]


def test_long_acks_late_task_is_not_handed_to_another_live_worker(
        proj: Any, project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", "solo", "-n", "one@%h"]), \
            WorkerProcess("proj", cwd=project, args=["-P", "solo", "-n", "two@%h"]):
        late = proj.block_late.delay(str(marker), "long")
        assert wait_until(lambda: lines(marker / "started") == ["long"])
        # longer than worker_lost_timeout (3 s in proj): heartbeats keep it owned
        time.sleep(5)
        (marker / "go").touch()
        assert late.get(timeout=20) == "long"
    assert lines(marker / "started") == ["long"]
