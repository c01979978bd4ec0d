"""Priorities mean the same on both sides of Redis: a lower number is served first."""

from __future__ import annotations

from typing import Any

import pytest
from interop_support import wait_until

pytestmark = pytest.mark.redis

# sent in this order; steps 0, 3, 6, 9: priorities 3 and 5 share step 3, first in first out
SENT = [9, 6, 3, 0, 5]
SERVED = [0, 3, 5, 6, 9]


@pytest.mark.parametrize("client_kind", ["celery", "celeriac"])
def test_lower_priority_number_runs_first(client_kind: str, start_worker: Any,
                                          interop_apps: Any, broker_db: Any,
                                          scratch_db: Any) -> None:
    client = getattr(interop_apps, client_kind)
    for p in SENT:
        client.order.apply_async((f"p{p}",), priority=p, queue="interop.prio")
    assert broker_db.llen("interop.prio\x06\x163") == 2
    worker_kind = "celeriac" if client_kind == "celery" else "celery"
    start_worker(worker_kind, f"{worker_kind}-prio", "-P", "solo", "-Q", "interop.prio")
    order = interop_apps.shared.ORDER
    wait_until(lambda: scratch_db.llen(order) == len(SENT), 20, "every task to run")
    assert [t.decode() for t in scratch_db.lrange(order, 0, -1)] == [f"p{p}" for p in SERVED]
