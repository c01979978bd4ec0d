"""ETA and countdown tasks across the two kinds of worker.

A celeriac producer puts eta tasks on the queue list with their ``eta`` header, as
Celery does, so a Celery worker holds them until due. With
``broker_transport_options={'delayed_delivery': 'broker'}`` it keeps them in the sorted
set ``celeriac.delayed`` instead, which only celeriac workers promote. A celeriac worker
that takes an eta message off the queue (from either producer) parks it in the delayed
set rather than in memory.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from interop_support import wait_until

pytestmark = pytest.mark.redis

T = 30


@pytest.fixture
def broker_mode_client(interop_apps: Any) -> Any:
    """A celeriac client with delayed_delivery='broker', for celeriac-only fleets."""
    from celeriac import Celery

    shared = interop_apps.shared
    app = Celery("interop_broker_mode", broker=shared.BROKER_URL,
                 backend=shared.RESULT_BACKEND, set_as_current=False)
    app.conf.broker_transport_options = {"delayed_delivery": "broker"}
    yield app
    app.close()


def ran_once(scratch_db: Any, shared: Any, task_id: str) -> bool:
    return (scratch_db.smembers(shared.IDS) == {task_id.encode()}
            and scratch_db.get(shared.DUPS) is None)


def test_countdown_from_a_default_celeriac_client_runs_on_a_celery_worker(start_worker: Any, interop_apps: Any,
                                                  broker_db: Any, scratch_db: Any) -> None:
    start_worker("celery", "celery-eta", "-P", "solo")
    c = interop_apps.celeriac
    assert "delayed_delivery" not in c.app.conf.broker_transport_options  # the default
    r = c.record.apply_async((7,), countdown=1)
    who = c.whoami.apply_async(("eta",), countdown=1)
    assert broker_db.zcard("celeriac.delayed") == 0
    assert r.get(timeout=T) == 7
    info = who.get(timeout=T)
    assert info["ran_at"] >= datetime.fromisoformat(info["eta"]).timestamp()
    assert ran_once(scratch_db, interop_apps.shared, r.id)


def test_broker_mode_waits_for_a_celeriac_worker(start_worker: Any, interop_apps: Any,
                                                 broker_mode_client: Any, broker_db: Any,
                                                 scratch_db: Any) -> None:
    start_worker("celery", "celery-eta", "-P", "solo")
    r = broker_mode_client.send_task("interop.record", (1,), countdown=0.2)
    assert broker_db.zcard("celeriac.delayed") == 1
    assert broker_db.llen("celery") == 0
    # Well after it fell due the Celery worker has still not seen it: a task sent
    # later went through, the eta one still waits in the delayed set.
    [(_, due)] = broker_db.zrange("celeriac.delayed", 0, 0, withscores=True)
    time.sleep(max(0.0, due + 0.5 - time.time()))
    assert interop_apps.celery.add.delay(1, 1).get(timeout=T) == 2
    assert broker_db.zcard("celeriac.delayed") == 1
    assert r.state == "PENDING"
    # a celeriac worker promotes it, and it runs once
    start_worker("celeriac", "celeriac-eta", "-P", "solo")
    assert r.get(timeout=T) == 1
    assert broker_db.zcard("celeriac.delayed") == 0
    assert ran_once(scratch_db, interop_apps.shared, r.id)


def test_celery_eta_parked_by_celeriac_worker(start_worker: Any, interop_apps: Any,
                                             broker_db: Any, scratch_db: Any) -> None:
    start_worker("celeriac", "celeriac-eta", "-P", "prefork", "-c", "2")
    c = interop_apps.celery
    r = c.record.apply_async((3,), countdown=3)
    # taken off the queue and parked in the broker, not held in a worker's memory
    wait_until(lambda: broker_db.zcard("celeriac.delayed") == 1, T, "the task to be parked")
    assert broker_db.llen("celery") == 0
    assert r.get(timeout=T) == 3
    assert ran_once(scratch_db, interop_apps.shared, r.id)
    assert broker_db.zcard("celeriac.delayed") == 0


def test_celery_worker_hands_eta_tasks_over_to_celeriac(start_worker: Any,
                                                       interop_apps: Any, broker_db: Any,
                                                       scratch_db: Any) -> None:
    """The migration step: a Celery worker leaves, the eta task it held is not lost."""
    celery_worker = start_worker("celery", "celery-leaving", "-P", "solo")
    r = interop_apps.celery.record.apply_async((5,), countdown=4)
    # Celery holds an eta task in memory, recorded in its `unacked` hash
    wait_until(lambda: broker_db.hlen("unacked") == 1, T, "the Celery worker to take it")
    assert celery_worker.stop() == 0  # warm shutdown gives it back to the queue
    assert broker_db.llen("celery") == 1 and r.state == "PENDING"
    start_worker("celeriac", "celeriac-staying", "-P", "solo")
    assert r.get(timeout=T) == 5
    assert ran_once(scratch_db, interop_apps.shared, r.id)
