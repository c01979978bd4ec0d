"""Autoscaling without processes: reading --autoscale, the autoscaler's decisions, and
the size API of pools that were made but not started."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.autoscale import (
    AUTOSCALE_KEEPALIVE,
    Autoscaler,
    autoscaler_class,
    keepalive_from_env,
    parse_autoscale,
)
from celeriac.worker.main import Worker
from celeriac.worker.pools import PreforkPool, ThreadedPool, create_pool


# -- --autoscale ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("10,3", (10, 3)),
    ("3,10", (10, 3)),  # the larger is the maximum, as Celery's command line reads it
    ("10", (10, 0)),
    (" 4 , 1 ", (4, 1)),
    ("1,1", (1, 1)),
    ((10, 3), (10, 3)),
    ([2, 5], (5, 2)),
    (None, None),
    ("", None),
])
def test_parse_autoscale(value: Any, expected: Any) -> None:
    assert parse_autoscale(value) == expected


@pytest.mark.parametrize("value", ["a,b", "1,2,3", "-1,2", "0", "0,0", "10,", "1.5"])
def test_parse_autoscale_refuses(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="autoscale"):
        parse_autoscale(value)


@pytest.mark.parametrize("value", ["10,3", "3,10", "10", "4,4"])
def test_parse_autoscale_agrees_with_celery(value: str) -> None:
    worker_cli = pytest.importorskip("celery.bin.worker")
    assert parse_autoscale(value) == worker_cli.Autoscale().convert(value, None, None)


def test_keepalive_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOSCALE_KEEPALIVE", raising=False)
    assert keepalive_from_env() == AUTOSCALE_KEEPALIVE == 30.0
    assert Autoscaler(4, 1).keepalive == 30.0
    monkeypatch.setenv("AUTOSCALE_KEEPALIVE", "0.5")
    assert Autoscaler(4, 1).keepalive == 0.5
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("AUTOSCALE_KEEPALIVE", bad)
        with pytest.raises(ImproperlyConfigured, match="AUTOSCALE_KEEPALIVE"):
            keepalive_from_env()


# -- decisions ----------------------------------------------------------------------------------
def test_grows_by_what_waits_when_no_slot_is_idle() -> None:
    scaler = Autoscaler(10, 1, keepalive=30)
    assert scaler.decide(0.0, size=1, idle=0, waiting=3) == 3
    assert scaler.qty == 4
    assert scaler.decide(1.0, size=4, idle=0, waiting=100) == 6  # up to the maximum
    assert scaler.decide(2.0, size=10, idle=0, waiting=100) == 0


def test_does_not_grow_while_a_slot_is_idle() -> None:
    # What waits while a slot stays idle is nothing a slot can take yet (an eta).
    scaler = Autoscaler(10, 1, keepalive=30)
    assert scaler.decide(0.0, size=2, idle=1, waiting=50) == 0
    assert scaler.decide(1.0, size=2, idle=0, waiting=0) == 0


def test_shrinks_to_what_is_needed_only_after_keepalive() -> None:
    scaler = Autoscaler(10, 2, keepalive=30)
    assert scaler.decide(0.0, size=8, idle=0, waiting=0) == 0  # needed every slot
    assert scaler.decide(10.0, size=8, idle=5, waiting=0) == 0
    assert scaler.decide(29.0, size=8, idle=5, waiting=0) == 0
    assert scaler.decide(30.0, size=8, idle=5, waiting=0) == -5  # 3 busy remain
    assert scaler.decide(31.0, size=3, idle=3, waiting=0) == -1  # down to min 2


def test_a_busy_moment_restarts_the_keepalive() -> None:
    scaler = Autoscaler(4, 1, keepalive=30)
    scaler.decide(0.0, size=4, idle=0, waiting=0)
    scaler.decide(20.0, size=4, idle=0, waiting=0)
    assert scaler.decide(40.0, size=4, idle=4, waiting=0) == 0
    assert scaler.decide(50.0, size=4, idle=4, waiting=0) == -3


def test_min_zero_keeps_one_slot() -> None:
    scaler = Autoscaler(4, 0, keepalive=1)
    assert scaler.floor == 1
    scaler.decide(0.0, size=2, idle=0, waiting=0)
    assert scaler.decide(5.0, size=2, idle=2, waiting=0) == -1
    assert scaler.info(1) == {"max": 4, "min": 0, "current": 1, "qty": 0}


def test_a_size_out_of_new_bounds_moves_at_once() -> None:
    scaler = Autoscaler(10, 1, keepalive=30)
    scaler.decide(0.0, size=8, idle=0, waiting=0)
    assert scaler.update(max=4) == (4, 1)
    assert scaler.decide(1.0, size=8, idle=0, waiting=9) == -4
    assert scaler.update(min=3) == (4, 3)
    assert scaler.decide(2.0, size=1, idle=1, waiting=0) == 2


@pytest.mark.parametrize("bounds", [(0, 0), (3, 4), (3, -1)])
def test_update_refuses_bounds_out_of_order(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="autoscale bounds"):
        Autoscaler(4, 1).update(*bounds)


# -- worker_autoscaler ----------------------------------------------------------------------------
class SlowToShrink(Autoscaler):
    def decide(self, now: float, size: int, idle: int, waiting: int) -> int:
        return max(0, super().decide(now, size, idle, waiting))


@pytest.mark.parametrize("setting", [None, "", "celery.worker.autoscale:Autoscaler",
                                     "celeriac.worker.autoscale:Autoscaler"])
def test_worker_autoscaler_default(setting: Any) -> None:
    assert autoscaler_class(setting) is Autoscaler


def test_worker_autoscaler_subclass_by_path_or_class() -> None:
    assert autoscaler_class(f"{__name__}:SlowToShrink") is SlowToShrink
    assert autoscaler_class(SlowToShrink) is SlowToShrink


def test_worker_autoscaler_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        autoscaler_class("no_such_module_here:Scaler")
    with pytest.raises(ImproperlyConfigured, match="not a subclass"):
        autoscaler_class("collections:OrderedDict")
    pytest.importorskip("celery.worker.autoscale")
    with pytest.raises(ImproperlyConfigured, match="Celery's autoscaler classes"):
        autoscaler_class("celery.worker.autoscale:WorkerComponent")


# -- the worker and its pool, not started ---------------------------------------------------------
@pytest.fixture
def app() -> Any:
    app = Celery("autoscale_unit", broker="memory://", backend="cache+memory://")
    yield app
    app.close()


def test_worker_starts_at_min_and_says_so(app: Any) -> None:
    worker = Worker(app, pool="prefork", concurrency=8, autoscale="10,3")
    assert worker.autoscale == (10, 3) and worker.concurrency == 3
    assert "concurrency:  3..10 (autoscale)" in worker.render_banner()
    assert isinstance(worker.autoscaler, Autoscaler)
    pool = create_pool(worker)
    assert isinstance(pool, PreforkPool)
    assert pool.size == 3 and pool.capacity >= 10
    assert pool.autoscaler_info() == {"max": 10, "min": 3, "current": 3, "qty": 0}
    assert Worker(app, pool="threads", autoscale="5").concurrency == 1
    plain = Worker(app, pool="threads", concurrency=2)
    assert plain.autoscaler is None and "concurrency:  2 (threads)" in plain.render_banner()


def test_worker_autoscaler_setting_is_used(app: Any) -> None:
    app.conf.worker_autoscaler = f"{__name__}:SlowToShrink"
    assert type(Worker(app, pool="threads", autoscale="4,1").autoscaler) is SlowToShrink
    app.conf.worker_autoscaler = "collections:OrderedDict"
    with pytest.raises(ImproperlyConfigured, match="worker_autoscaler"):
        Worker(app, pool="threads", autoscale="4,1")
    Worker(app, pool="threads")  # only read with --autoscale, as in Celery


@pytest.mark.parametrize("pool", ["solo", "asyncio"])
def test_autoscale_needs_a_resizable_pool(app: Any, pool: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="--autoscale needs"):
        Worker(app, pool=pool, autoscale="4,1")


def test_grow_shrink_and_bounds_change_the_target(app: Any) -> None:
    pool = create_pool(Worker(app, pool="threads", concurrency=2))
    assert isinstance(pool, ThreadedPool) and pool.size == 2
    pool.grow(3)
    assert pool.size == 5
    pool.shrink(2)
    assert pool.size == 3
    pool.shrink(10)  # never below one slot
    assert pool.size == 1
    with pytest.raises(ValueError, match="below one slot"):
        pool.shrink()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive whole number"):
            pool.grow(bad)
    with pytest.raises(ValueError, match="at most"):
        pool.grow(pool.capacity)
    assert pool.autoscaler_info() is None
    assert pool.autoscale(6, 3) == (6, 3)  # switched on at run time
    assert pool.size == 3
    assert pool.autoscaler_info() == {"max": 6, "min": 3, "current": 3, "qty": 0}
    assert pool.autoscale(2, 0) == (2, 0) and pool.size == 2
    pool.grow(2)  # past the maximum: the maximum follows, as Celery's pool_grow
    assert pool.autoscaler_info()["max"] == 4 and pool.size == 4
    pool.shrink(3)
    assert pool.size == 1 and pool.autoscaler_info()["min"] == 0
    pool.autoscale(4, 3)
    assert pool.size == 3
    pool.shrink(1)  # below the minimum: the minimum follows
    assert pool.autoscaler_info()["min"] == 2
    with pytest.raises(ValueError, match="autoscale bounds"):
        pool.autoscale(2, 3)
    with pytest.raises(ValueError, match="at most"):
        pool.autoscale(pool.capacity + 1, 1)
    with pytest.raises(ValueError, match="whole number"):
        pool.autoscale("ten", 1)


def test_autoscale_bounds_left_out_stay_as_they_were(app: Any) -> None:
    # Celery's ``autoscale`` command may carry one bound only, or numbers as text.
    pool = create_pool(Worker(app, pool="threads", concurrency=3))
    assert pool.autoscale(None) == (3, 0)  # the size as maximum when it was off
    assert pool.autoscale("8", None) == (8, 0)
    assert pool.autoscale(None, 2) == (8, 2)
    assert pool.size == 3


@pytest.mark.parametrize("name", ["solo", "asyncio"])
def test_single_consumer_pools_refuse_to_change_size(app: Any, name: str) -> None:
    pool = create_pool(Worker(app, pool=name))
    assert pool.size == 1
    for call in (lambda: pool.grow(), lambda: pool.shrink(), lambda: pool.autoscale(2, 1)):
        with pytest.raises(ValueError, match=f"the {name} pool runs one consumer"):
            call()
    assert pool.autoscaler_info() is None


def test_info_is_shaped_as_celerys_stats(app: Any) -> None:
    app.conf.task_soft_time_limit = 5
    app.conf.task_time_limit = 10
    prefork = create_pool(Worker(app, pool="prefork", concurrency=2, max_tasks_per_child=7))
    info = prefork.info()
    assert info["implementation"] == "celeriac.worker.pools:PreforkPool"
    assert info["max-concurrency"] == 2 and info["processes"] == []  # none forked
    assert info["max-tasks-per-child"] == 7 and info["put-guarded-by-semaphore"] is False
    assert info["timeouts"] == [5, 10] and info["writes"]["total"] == 0
    info = create_pool(Worker(app, pool="prefork", concurrency=2)).info()
    assert info["max-tasks-per-child"] == "N/A"
    threads = create_pool(Worker(app, pool="threads", concurrency=3)).info()
    assert threads == {"implementation": "celeriac.worker.pools:ThreadedPool",
                       "max-concurrency": 3, "threads": 0}
    solo = create_pool(Worker(app, pool="solo")).info()
    assert solo["implementation"] == "celeriac.worker.pools:SoloPool"
    assert solo["max-concurrency"] == 1 and len(solo["processes"]) == 1
    asyncio_info = create_pool(Worker(app, pool="asyncio", concurrency=50)).info()
    assert asyncio_info["max-concurrency"] == 50
