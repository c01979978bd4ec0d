"""Chains, groups and chords across the two implementations, each way round.

Celery client -> celeriac worker, and celeriac client -> Celery worker: the chain rides
in ``embed.chain``, the chord body in ``embed.chord`` and the chord's counter in
Celery's ``celery-taskset-meta-<gid>.*`` keys, so either side can run the other's canvas.
"""

from __future__ import annotations

from typing import Any

import pytest

from interop_support import worker

pytestmark = pytest.mark.redis

T = 20
DIRECTIONS = ["celery-client-to-celeriac-worker", "celeriac-client-to-celery-worker"]


@pytest.fixture(scope="module", params=DIRECTIONS)
def client(request: pytest.FixtureRequest, interop_apps: Any, broker_db: Any,
           scratch_db: Any) -> Any:
    broker_db.flushdb()
    scratch_db.flushdb()
    if request.param.startswith("celery-client"):
        import celery as canvas

        module, kind = interop_apps.celery, "celeriac"
    else:
        import celeriac as canvas  # type: ignore[no-redef]

        module, kind = interop_apps.celeriac, "celery"
    with worker(kind, f"{kind}-canvas", ["-P", "prefork", "-c", "2", "-Q", "celery"]):
        yield module, canvas


@pytest.fixture(autouse=True)
def _clean(clean: None) -> None:
    pass


def test_chain(client: Any) -> None:
    c, canvas = client
    res = canvas.chain(c.add.s(1, 2), c.add.s(3), c.echo.s("tail"))()
    assert res.get(timeout=T) == [[6, "tail"], {}]
    assert res.parent.get(timeout=T) == 6
    assert (c.add.s(2, 2) | c.add.si(1, 1)).delay().get(timeout=T) == 2


def test_group(client: Any) -> None:
    c, canvas = client
    res = canvas.group(c.add.s(i, i) for i in range(5))()
    assert res.get(timeout=T) == [0, 2, 4, 6, 8]


def test_chord(client: Any) -> None:
    c, canvas = client
    res = canvas.chord([c.add.s(i, i) for i in range(4)])(c.echo.s())
    assert res.get(timeout=T) == [[[0, 2, 4, 6]], {}]
