"""A Celery worker and a celeriac worker on the same queue at once.

10,000 ``interop.record`` tasks, half sent by a Celery client and half by a celeriac
client, interleaved in chunks. Every result arrives, every task id is recorded exactly
once (``record`` counts an id it has seen before in ``interop.dups``), and both workers
took part.
"""

from __future__ import annotations

from typing import Any

import pytest
from interop_support import wait_until

pytestmark = pytest.mark.redis

N = 10_000
CHUNK = 500


# 10,000 tasks: a minute alone, several beside the rest of the suite (the wait is for
# completion, never a speed check)
@pytest.mark.timeout(600)
def test_mixed_fleet_runs_each_task_once(start_worker: Any, interop_apps: Any,
                                         broker_db: Any, scratch_db: Any) -> None:
    from celery.result import ResultSet

    start_worker("celery", "celery-fleet", "-P", "prefork", "-c", "2")
    start_worker("celeriac", "celeriac-fleet", "-P", "prefork", "-c", "2")
    shared = interop_apps.shared
    by_celery, by_celeriac = [], []
    for start in range(0, N, 2 * CHUNK):
        by_celery += [interop_apps.celery.record.delay(i)
                      for i in range(start, start + CHUNK)]
        by_celeriac += [interop_apps.celeriac.record.delay(i)
                        for i in range(start + CHUNK, start + 2 * CHUNK)]

    wait_until(lambda: scratch_db.scard(shared.IDS) >= N, 480, f"{N} tasks to run")
    # each client reads its own results back
    got = ResultSet(by_celery, app=interop_apps.celery.app).get(timeout=30)
    got += [r.get(timeout=30) for r in by_celeriac]
    assert sorted(got) == list(range(N))

    assert scratch_db.scard(shared.IDS) == N
    assert scratch_db.get(shared.DUPS) is None, "some task ran twice"
    ids = {r.id for r in by_celery + by_celeriac}
    assert {m.decode() for m in scratch_db.smembers(shared.IDS)} == ids
    per_worker = {k.decode().split("@")[0]: int(v)
                  for k, v in scratch_db.hgetall(shared.BY_WORKER).items()}
    assert set(per_worker) == {"celery-fleet", "celeriac-fleet"}
    assert sum(per_worker.values()) == N
    assert broker_db.llen("celery") == 0
