"""What each honoured setting changes, set the way a user sets it (``app.conf.x = ...``).

One test (or a few) per setting read by the result backends, beat and the app's
configuration, plus the cheap ones elsewhere that can be seen from the public API.
``test_settings_coverage.py`` requires every honoured setting to be named in a test
outside ``test_config.py``; most of them are named here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import Celery, states
from celeriac.backends import Backend, BackendOptions, connect
from celeriac.backends import base as backend_base
from celeriac.backends.memory import MemoryBackend
from celeriac.exceptions import ImproperlyConfigured, QueueNotFound
from celeriac.task import Context

# A private TLS redis-server with a throw-away CA (skips without redis-server/openssl).
from integration.test_redis_tls_and_socket import (  # noqa: E402,F401
    openssl_binary,
    redis_py,
    redis_server_binary,
    tls_server,
)


@pytest.fixture
def app() -> Iterator[Celery]:
    name = uuid.uuid4().hex
    app = Celery("effects", broker=f"memory://{name}", backend=f"memory://{name}",
                 set_as_current=False)
    yield app
    app.close()


def backend_for(app: Celery, url: str | None = None) -> Backend:
    """The result backend built from every one of the app's backend settings."""
    return connect(url or app.result_backend_url, BackendOptions.from_conf(app.conf))


def _request(**fields: Any) -> Context:
    defaults: dict[str, Any] = dict(task="effects.add", args=[2, 3], kwargs={"z": 1},
                                    hostname="w1@host", retries=2,
                                    delivery_info={"routing_key": "q1"})
    return Context(**{**defaults, **fields})


# -- result_extended ----------------------------------------------------------------------


def test_result_extended_stores_the_request_with_the_result(app: Celery) -> None:
    app.conf.result_extended = True
    app.backend.store_result("t-ext", 5, states.SUCCESS, request=_request())
    meta = app.backend.get_task_meta("t-ext")
    assert {k: meta[k] for k in ("name", "args", "kwargs", "worker", "retries", "queue")} == {
        "name": "effects.add", "args": [2, 3], "kwargs": {"z": 1}, "worker": "w1@host",
        "retries": 2, "queue": "q1"}


def test_without_result_extended_only_the_result_is_stored(app: Celery) -> None:
    app.backend.store_result("t-plain", 5, states.SUCCESS, request=_request())
    meta = app.backend.get_task_meta("t-plain")
    assert not {"name", "args", "kwargs", "worker", "queue"} & set(meta)


def test_result_extended_through_a_running_consumer(app: Celery) -> None:
    from celeriac.worker.consumer import Consumer, EventLoopThread
    from celeriac.worker.heartbeat import Heartbeat

    app.conf.result_extended = True

    @app.task(name="effects.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    stop = threading.Event()
    consumer = Consumer(app, ["celery"], "unit@effects", prefetch=4, async_limit=10,
                        stop=stop, heartbeat=Heartbeat(60, app), loop=EventLoopThread(),
                        fetch_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        result = mul.delay(6, 7)
        assert result.get(timeout=10) == 42
        meta = app.backend.get_task_meta(result.id)
    finally:
        stop.set()
        thread.join(5)
    assert (meta["name"], meta["args"], meta["kwargs"], meta["worker"], meta["queue"]) == (
        "effects.mul", [6, 7], {}, "unit@effects", "celery")


# -- result_expires, result_failure_expires, result_chord_expires --------------------------


@pytest.mark.parametrize("value", [0.05, timedelta(milliseconds=50)])
def test_result_expires_forgets_results(app: Celery, value: Any) -> None:
    app.conf.result_expires = value
    app.backend.store_result("t-exp", 1, states.SUCCESS)
    assert app.backend.get_task_meta("t-exp")["status"] == states.SUCCESS
    time.sleep(0.1)
    assert app.backend.get_task_meta("t-exp")["status"] == states.PENDING


@pytest.mark.parametrize("value", [None, 0])
def test_result_expires_none_or_0_keeps_results_for_ever(tmp_path: Path, value: Any) -> None:
    app = Celery("effects", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    app.conf.result_expires = value
    app.backend.store_result("t-keep", 1, states.SUCCESS)
    assert _sqlite_deadline(tmp_path / "b.db", "t-keep") is None


def _sqlite_deadline(path: Path, task_id: str) -> float | None:
    with sqlite3.connect(path) as conn:
        (deadline,) = conn.execute(
            "SELECT expires FROM celeriac_results WHERE task_id = ?", (task_id,)).fetchone()
    return deadline


def test_result_failure_expires_applies_to_failures_only(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    app = Celery("effects", broker=f"sqlite:///{path}", set_as_current=False)
    app.conf.result_expires = 1000
    app.conf.result_failure_expires = 10
    backend = backend_for(app)
    backend.store_result("t-ok", 1, states.SUCCESS)
    backend.mark_as_failure("t-bad", ValueError("x"))
    now = time.time()
    assert 990 < _sqlite_deadline(path, "t-ok") - now <= 1000  # type: ignore[operator]
    assert 0 < _sqlite_deadline(path, "t-bad") - now <= 10  # type: ignore[operator]


def test_result_chord_expires_sets_the_chord_counters_lifetime(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    app = Celery("effects", broker=f"sqlite:///{path}", set_as_current=False)
    app.conf.result_expires = 1000
    app.conf.result_chord_expires = 20
    backend_for(app).set_chord_size("g-1", 2)
    with sqlite3.connect(path) as conn:
        (deadline,) = conn.execute(
            "SELECT expires FROM celeriac_chords WHERE group_id = 'g-1'").fetchone()
    assert 10 < deadline - time.time() <= 20


def test_chord_counters_follow_result_expires_by_default(app: Celery) -> None:
    app.conf.result_expires = 123
    assert BackendOptions.from_conf(app.conf).chord_ttl == 123


# -- result_compression ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gzip", "bzip2"])
def test_result_compression_compresses_stored_results(app: Celery, method: str) -> None:
    app.conf.result_compression = method
    backend = backend_for(app)
    backend.store_result("t-z", {"big": "x" * 1000}, states.SUCCESS)
    raw = backend._get("t-z")
    assert raw is not None and raw.startswith(backend_base.COMPRESSED_MAGIC)
    assert len(raw) < 500
    assert backend.get_task_meta("t-z")["result"] == {"big": "x" * 1000}
    # A client without the setting reads it too, as Celery's does.
    plain = MemoryBackend(app.result_backend_url)
    assert plain.get_task_meta("t-z")["result"] == {"big": "x" * 1000}


def test_compressed_results_are_celerys_layout(app: Celery) -> None:
    from celery.backends.base import decompress_payload
    from kombu.serialization import loads

    app.conf.result_compression = "gzip"
    backend = backend_for(app)
    backend.store_result("t-celery", [1, 2], states.SUCCESS)
    data = decompress_payload(backend._get("t-celery"))
    assert loads(data, "application/json", "utf-8")["result"] == [1, 2]


# -- result_backend_always_retry and its limits; override_backends ------------------------


class FlakyBackend(MemoryBackend):
    """Fails its first ``failures`` reads and writes with a connection error."""

    failures = 0

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        self._trip()
        super()._set(task_id, data, expires, ready)

    def _get(self, task_id: str) -> bytes | None:
        self._trip()
        return super()._get(task_id)

    def _trip(self) -> None:
        if type(self).failures > 0:
            type(self).failures -= 1
            raise ConnectionError("store went away")


@pytest.fixture
def flaky(app: Celery, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The app's backend is a ``FlakyBackend`` (through override_backends); returns the
    list of back-off sleeps taken."""
    app.conf.override_backends = {"flaky": f"{__name__}:FlakyBackend"}
    app.conf.result_backend = f"flaky://{uuid.uuid4().hex}"
    sleeps: list[float] = []
    monkeypatch.setattr(backend_base.time, "sleep", sleeps.append)
    monkeypatch.setattr(FlakyBackend, "failures", 0)
    return sleeps


def test_result_backend_always_retry_retries_reads_and_writes(
        app: Celery, flaky: list[float]) -> None:
    app.conf.result_backend_always_retry = True
    app.conf.result_backend_max_retries = 5
    app.conf.result_backend_base_sleep_between_retries_ms = 100
    app.conf.result_backend_max_sleep_between_retries_ms = 250
    backend = backend_for(app)
    assert isinstance(backend, FlakyBackend)
    FlakyBackend.failures = 4
    backend.store_result("t-r", 1, states.SUCCESS)
    FlakyBackend.failures = 3
    assert backend.get_task_meta("t-r")["status"] == states.SUCCESS
    assert len(flaky) == 7
    assert all(0 <= pause <= 0.25 for pause in flaky)  # jittered, capped at the maximum


def test_result_backend_max_retries_bounds_the_retries(app: Celery, flaky: list[float]) -> None:
    app.conf.result_backend_always_retry = True
    app.conf.result_backend_max_retries = 2
    backend = backend_for(app)
    FlakyBackend.failures = 3
    with pytest.raises(ConnectionError):
        backend.get_task_meta("t-r")
    assert len(flaky) == 2


def test_without_always_retry_a_read_fails_at_once(app: Celery, flaky: list[float]) -> None:
    backend = backend_for(app)
    FlakyBackend.failures = 1
    with pytest.raises(ConnectionError):
        backend.get_task_meta("t-r")
    assert flaky == []


def test_override_backends_by_class_and_celerys_db_alias(app: Celery) -> None:
    app.conf.override_backends = {"db": FlakyBackend}
    backend = backend_for(app, "db+postgresql://somewhere/results")
    assert isinstance(backend, FlakyBackend) and backend.url == "postgresql://somewhere/results"


def test_override_backends_refuses_what_is_not_a_backend(app: Celery) -> None:
    app.conf.override_backends = {"x": "celeriac.states:SUCCESS"}
    with pytest.raises(ImproperlyConfigured, match="override_backends"):
        backend_for(app, "x://")


def test_the_app_gives_its_backend_every_backend_setting(app: Celery) -> None:
    app.conf.result_compression = "gzip"
    app.conf.result_failure_expires = 5
    app.conf.result_backend_always_retry = True
    app.conf.override_backends = {"x": "celeriac.backends.memory:MemoryBackend"}
    assert app.backend.options == BackendOptions.from_conf(app.conf)


# -- the Redis result backend's own settings ---------------------------------------------


def test_redis_settings_reach_the_client(app: Celery, redis_server: str) -> None:
    name = f"celeriac-effects-{uuid.uuid4().hex[:8]}"
    app.conf.result_backend = f"{redis_server}/13"
    app.conf.update(redis_socket_timeout=7.5, redis_socket_connect_timeout=2.5,
                    redis_max_connections=3, redis_retry_on_timeout=True,
                    redis_socket_keepalive=True, redis_backend_health_check_interval=30,
                    redis_client_name=name, redis_username="default", redis_password=None)
    backend: Any = backend_for(app)
    try:
        kwargs = backend._redis.pool_kwargs
        assert {k: kwargs.get(k) for k in (
            "socket_timeout", "socket_connect_timeout", "max_connections", "retry_on_timeout",
            "socket_keepalive", "health_check_interval", "client_name", "username")} == {
            "socket_timeout": 7.5, "socket_connect_timeout": 2.5, "max_connections": 3,
            "retry_on_timeout": True, "socket_keepalive": True, "health_check_interval": 30,
            "client_name": name, "username": "default"}
        assert "password" not in kwargs  # None: not given
        task_id = f"effects-{uuid.uuid4().hex}"
        backend.store_result(task_id, 1, states.SUCCESS)
        client = backend._redis.client()
        assert client.client_getname() in (name, name.encode())
        client.delete(backend.key_for(task_id))
    finally:
        backend.close()


def test_result_backend_transport_options_win_over_redis_settings(
        app: Celery, redis_server: str) -> None:
    prefix = f"effects-{uuid.uuid4().hex[:8]}:"
    app.conf.result_backend = f"{redis_server}/13"
    app.conf.redis_socket_timeout = 7.5
    app.conf.result_backend_transport_options = {"socket_timeout": 9.0,
                                                 "global_keyprefix": prefix}
    backend: Any = backend_for(app)
    try:
        assert backend._redis.pool_kwargs["socket_timeout"] == 9.0
        backend.store_result("t-prefix", 1, states.SUCCESS)
        client = backend._redis.client()
        assert client.exists(f"{prefix}celery-task-meta-t-prefix")
        client.delete(f"{prefix}celery-task-meta-t-prefix")
    finally:
        backend.close()


def test_redis_backend_use_ssl_gives_the_tls_options(app: Celery, tls_server: Any) -> None:
    import ssl

    app.conf.result_backend = f"rediss://127.0.0.1:{tls_server.port}/0"
    app.conf.redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                      "ssl_ca_certs": str(tls_server.ca)}
    backend = backend_for(app)
    try:
        backend.store_result("t-tls", 1, states.SUCCESS)
        assert backend.get_task_meta("t-tls")["result"] == 1
    finally:
        backend.close()
    # Without the CA the server's throw-away certificate is refused: the options count.
    app.conf.redis_backend_use_ssl = {"ssl_cert_reqs": "CERT_REQUIRED"}
    untrusting = backend_for(app)
    try:
        with pytest.raises(Exception, match="(?i)certificate"):
            untrusting.get_task_meta("t-tls")
    finally:
        untrusting.close()


def test_redis_backend_use_ssl_needs_a_rediss_url(app: Celery) -> None:
    app.conf.result_backend = "redis://127.0.0.1:6379/13"
    app.conf.redis_backend_use_ssl = {"ssl_cert_reqs": "required"}
    with pytest.raises(ImproperlyConfigured, match="rediss://"):
        backend_for(app)


# -- beat ----------------------------------------------------------------------------------


def test_beat_scheduler_picks_the_scheduler_class(app: Celery) -> None:
    from celeriac.beat.scheduler import PersistentScheduler, Scheduler
    from celeriac.beat.service import scheduler_class
    from celeriac.beat.store import SQLiteScheduler

    assert scheduler_class(app) is PersistentScheduler
    for name, cls in [("celery.beat:Scheduler", Scheduler), ("sqlite", SQLiteScheduler),
                      ("celeriac.beat.scheduler:Scheduler", Scheduler)]:
        app.conf.beat_scheduler = name
        assert scheduler_class(app) is cls
    app.conf.beat_scheduler = "celeriac.states:SUCCESS"
    with pytest.raises(ImproperlyConfigured):
        scheduler_class(app)


def test_beat_schedule_filename_is_where_last_runs_are_kept(
        app: Celery, tmp_path: Path) -> None:
    from celeriac.beat.scheduler import PersistentScheduler

    app.conf.beat_schedule_filename = str(tmp_path / "state")
    app.conf.beat_schedule = {"tick": {"task": "effects.tick", "schedule": 0.01}}
    scheduler = PersistentScheduler(app)
    assert scheduler.filename == str(tmp_path / "state.json")
    scheduler.setup()
    time.sleep(0.02)
    scheduler.tick()
    assert "tick" in (tmp_path / "state.json").read_text()


def test_beat_max_loop_interval_bounds_the_sleep(app: Celery) -> None:
    from celeriac.beat.scheduler import DEFAULT_MAX_INTERVAL, Scheduler

    assert Scheduler(app).tick() == DEFAULT_MAX_INTERVAL
    app.conf.beat_max_loop_interval = 7
    scheduler = Scheduler(app)
    scheduler.setup()
    assert scheduler.tick() == 7


# -- broker URLs ---------------------------------------------------------------------------


def test_broker_read_url_and_broker_write_url_split_consuming_from_sending(
        app: Celery) -> None:
    app.conf.broker_read_url = "memory://reading"
    app.conf.broker_write_url = "memory://writing"
    consumer, producer = app.connect_broker(), app.producer_broker()
    try:
        assert (consumer.url, producer.url) == ("memory://reading", "memory://writing")
    finally:
        consumer.close()


# -- calling -------------------------------------------------------------------------------


def test_task_eager_propagates(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task(name="effects.boom")
    def boom() -> None:
        raise KeyError("boom")

    assert boom.delay().state == states.FAILURE
    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        boom.delay()


def test_task_store_eager_result(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task(name="effects.one")
    def one() -> int:
        return 1

    first = one.delay()
    assert app.backend.get_task_meta(first.id)["status"] == states.PENDING
    app.conf.task_store_eager_result = True
    second = one.delay()
    assert app.backend.get_task_meta(second.id)["result"] == 1


def test_task_store_errors_even_if_ignored(app: Celery) -> None:
    app.conf.update(task_always_eager=True, task_store_eager_result=True,
                    task_ignore_result=True, task_store_errors_even_if_ignored=True)

    @app.task(name="effects.maybe")
    def maybe(fail: bool) -> int:
        if fail:
            raise ValueError("no")
        return 1

    ok, bad = maybe.delay(False), maybe.delay(True)
    assert app.backend.get_task_meta(ok.id)["status"] == states.PENDING
    assert app.backend.get_task_meta(bad.id)["status"] == states.FAILURE


def test_task_create_missing_queues_off_refuses_unknown_queues(app: Celery) -> None:
    app.conf.task_create_missing_queues = False
    with pytest.raises(QueueNotFound):
        app.send_task("effects.any", queue="nowhere")


def test_task_default_priority_and_task_compression_reach_the_message(app: Celery) -> None:
    from celeriac import signals

    app.conf.task_default_priority = 7
    app.conf.task_compression = "gzip"
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.before_task_publish.connect(record, weak=False)
    try:
        app.send_task("effects.any")
    finally:
        signals.before_task_publish.disconnect(record)
    assert seen[0]["properties"]["priority"] == 7
    assert seen[0]["headers"]["compression"] == "application/x-gzip"


# -- worker defaults read from the settings ------------------------------------------------


def test_worker_settings_size_the_worker(app: Celery) -> None:
    from celeriac.worker.main import Worker

    app.conf.update(worker_concurrency=3, worker_pool="threads", worker_prefetch_multiplier=2,
                    worker_max_tasks_per_child=50, worker_async_concurrency=7)
    worker = Worker(app, banner=False)
    assert (worker.concurrency, worker.pool_name, worker.prefetch, worker.max_tasks_per_child,
            worker.async_limit) == (3, "threads", 2, 50, 7)


def test_task_time_limit_and_task_soft_time_limit_are_the_defaults(app: Celery) -> None:
    from celeriac.worker.timelimits import limits_for

    app.conf.task_time_limit = 30
    app.conf.task_soft_time_limit = 20

    @app.task(name="effects.limited")
    def limited() -> None: ...

    @app.task(name="effects.own", time_limit=5, soft_time_limit=4)
    def own() -> None: ...

    assert limits_for(limited, None, app.conf) == (30.0, 20.0)
    assert limits_for(own, None, app.conf) == (5.0, 4.0)
    assert limits_for(limited, [9, 8], app.conf) == (9.0, 8.0)


def test_worker_revoke_expires_is_how_long_revocations_last(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    broker = app.producer_broker()
    monkeypatch.setattr(broker, "revoke", lambda *args: calls.append(args))
    app.conf.worker_revoke_expires = 60
    app.control.revoke("t-1")
    assert calls == [(["t-1"], None, 60.0)]
