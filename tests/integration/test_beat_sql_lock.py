"""The beat leader lock on a PostgreSQL or MySQL/MariaDB broker: one leader at a time,
a lease that runs out when not renewed, the leader's state kept for its successor."""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
from support import mysql_answers, postgresql_answers, require, wait_until

from celeriac.beat.lock import lock_for_url
from celeriac.beat.sql_lock import SQLLock

URLS = {"postgresql": "sqla+postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "mysql": "sqla+mysql+pymysql://root@127.0.0.1:3306/test"}


@pytest.fixture(params=["postgresql", "mysql"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    kind = request.param
    require(f"{kind} is not reachable on its standard loopback port",
            postgresql_answers() if kind == "postgresql" else mysql_answers())
    yield URLS[kind]


def test_one_leader_lease_expiry_and_state(url: str) -> None:
    name = f"beat-{uuid.uuid4().hex[:8]}"
    first = lock_for_url(url, name, {})
    second = lock_for_url(url, name, {})
    assert isinstance(first, SQLLock)
    try:
        assert first.acquire("a", 30)
        assert not second.acquire("b", 30)  # held
        assert first.acquire("a", 30)  # held by the caller: kept
        assert first.renew("a", 0.5) and not second.renew("b", 30)
        first.save_state("a", {"every-minute": 1234.5})
        second.save_state("b", {"every-minute": 0})  # not the holder: ignored
        # the leader stops renewing: its lease runs out on the database's clock
        assert wait_until(lambda: second.acquire("b", 30), timeout=10)
        assert not first.renew("a", 30)  # lost
        assert second.load_state() == {"every-minute": 1234.5}
        second.release("b")
        assert first.acquire("a", 30)  # free again at once
    finally:
        first.release("a")
        first.close()
        second.close()


def test_two_beats_racing_for_a_new_lock_get_one_leader(url: str) -> None:
    name = f"beat-{uuid.uuid4().hex[:8]}"
    locks: list[Any] = [lock_for_url(url, name, {}) for _ in range(2)]
    try:
        taken = [lock.acquire(f"owner-{i}", 30) for i, lock in enumerate(locks)]
        assert taken == [True, False]
    finally:
        for i, lock in enumerate(locks):
            lock.release(f"owner-{i}")
            lock.close()
