"""Redis Sentinel URLs (kombu's ``sentinel://h1:26379;sentinel://h2:26379``) and the
clients built from them, without a server: nothing here connects."""

from __future__ import annotations

import warnings

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from celeriac.utils.redis import (
    DEFAULT_SENTINEL_PORT,
    RedisConnector,
    SentinelURL,
    is_sentinel_url,
    parse_sentinel_url,
)
from celeriac.utils.urls import mask_password

THREE = "sentinel://h1:26379;sentinel://h2:26380;sentinel://h3"


def test_a_list_names_the_sentinels_in_order_with_the_default_port() -> None:
    parsed = parse_sentinel_url(THREE)
    assert parsed == SentinelURL((("h1", 26379), ("h2", 26380), ("h3", 26379)))
    assert DEFAULT_SENTINEL_PORT == 26379


def test_a_python_list_and_spaces_around_the_separator_are_the_same_list() -> None:
    assert parse_sentinel_url(["sentinel://h1:26379", "sentinel://h2:26380"]) == \
        parse_sentinel_url("sentinel://h1:26379 ; sentinel://h2:26380")


def test_database_and_password_are_the_masters_and_come_from_the_url() -> None:
    parsed = parse_sentinel_url("sentinel://:s%40cret@h1:26379/2;sentinel://h2:26379")
    assert (parsed.db, parsed.username, parsed.password) == (2, None, "s@cret")
    parsed = parse_sentinel_url("sentinel://ann:pw@h1/5")
    assert (parsed.db, parsed.username, parsed.password) == (5, "ann", "pw")
    assert parse_sentinel_url("sentinel://h1").db == 0


def test_credentials_repeated_alike_on_every_url_are_fine() -> None:
    url = "sentinel://:pw@h1:26379/1;sentinel://:pw@h2:26379/1"
    assert parse_sentinel_url(url) == SentinelURL((("h1", 26379), ("h2", 26379)), 1, None,
                                                  "pw")


@pytest.mark.parametrize("url, words", [
    ("sentinel://h1/1;sentinel://h2/2", "different dbs"),
    ("sentinel://:a@h1;sentinel://:b@h2", "different passwords"),
    ("sentinel://h1;redis://h2:6379/0", "not a sentinel:// URL"),
    ("sentinel://h1:26379?socket_timeout=1", "no query"),
    ("sentinel://h1:26379/zero", "database number"),
    ("sentinel://h1:notaport", "invalid port"),
])
def test_malformed_lists_are_refused_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=words):
        parse_sentinel_url(url)


def test_the_error_about_a_list_never_shows_a_password() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        parse_sentinel_url("sentinel://:topsecret@h1/1;sentinel://:topsecret@h2/2")
    assert "topsecret" not in str(caught.value)
    assert "topsecret" not in mask_password("sentinel://:topsecret@h1;sentinel://:topsecret@h2")


def test_only_sentinel_urls_are_sentinel_urls() -> None:
    assert is_sentinel_url(THREE)
    assert is_sentinel_url(["SENTINEL://h1"])
    assert not is_sentinel_url("redis://h1:6379/0;redis://h2:6379/0")
    assert not is_sentinel_url("")


# -- the clients built from them -----------------------------------------------------------
redis = pytest.importorskip("redis")


def _pool(url: str, options: dict[str, object]) -> object:
    return RedisConnector(url, options, "a test").client().connection_pool


def test_the_pool_asks_the_sentinels_for_the_named_master() -> None:
    from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

    pool = _pool("sentinel://:pw@h1:26379/3;sentinel://h2:26380",
                 {"master_name": "mymaster", "min_other_sentinels": 1,
                  "socket_timeout": 2.0})
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert issubclass(pool.connection_class, SentinelManagedConnection)
    assert not issubclass(pool.connection_class, redis.SSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, "pw", 2.0)
    manager = pool.sentinel_manager
    assert manager.min_other_sentinels == 1
    assert [(s.connection_pool.connection_kwargs["host"],
             s.connection_pool.connection_kwargs["port"]) for s in manager.sentinels] == \
        [("h1", 26379), ("h2", 26380)]
    # The master's password is not the sentinels'; they get the socket options only.
    assert manager.sentinel_kwargs == {"socket_timeout": 2.0}


def test_sentinel_kwargs_are_for_the_sentinels_only() -> None:
    pool = _pool(THREE, {"master_name": "m", "sentinel_kwargs": {"password": "sentry"}})
    assert pool.sentinel_manager.sentinel_kwargs == {"password": "sentry"}
    for client in pool.sentinel_manager.sentinels:
        assert client.connection_pool.connection_kwargs["password"] == "sentry"
    assert pool.connection_kwargs.get("password") is None


def test_a_password_option_reaches_the_master_unless_the_url_gives_one() -> None:
    assert _pool("sentinel://h1", {"master_name": "m", "password": "opt"}) \
        .connection_kwargs["password"] == "opt"
    assert _pool("sentinel://:url@h1", {"master_name": "m", "password": "opt"}) \
        .connection_kwargs["password"] == "url"


def test_ssl_makes_the_master_connection_tls() -> None:
    from redis.sentinel import SentinelManagedSSLConnection

    pool = _pool(THREE, {"master_name": "m",
                         "ssl": {"ssl_cert_reqs": "CERT_REQUIRED", "ca_certs": "/ca.pem"}})
    assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


def test_the_connections_outside_the_pool_also_follow_the_sentinels() -> None:
    from redis.sentinel import SentinelManagedConnection

    connector = RedisConnector(THREE, {"master_name": "m"}, "a test")
    assert isinstance(connector.new_connection(), SentinelManagedConnection)


@pytest.mark.parametrize("options, words", [
    ({}, "broker_transport_options has no 'master_name'"),
    ({"master_name": ""}, "no 'master_name'"),
    ({"master_name": "m", "sentinel_kwargs": "password"}, "sentinel_kwargs'] must be a dict"),
    ({"master_name": "m", "min_other_sentinels": "x"}, "min_other_sentinels'] must be"),
])
def test_bad_sentinel_options_are_refused_at_once(options: dict[str, object],
                                                 words: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=words):
        RedisConnector(THREE, options, "the Redis broker")


# -- through the app's settings ------------------------------------------------------------
def test_the_broker_needs_master_name_in_broker_transport_options() -> None:
    app = Celery("s", broker=THREE)
    with pytest.raises(ImproperlyConfigured, match="broker_transport_options"):
        app.connect_broker()
    app.conf.broker_transport_options = {"master_name": "mymaster"}
    broker = app.connect_broker()
    try:
        assert type(broker).__name__ == "RedisBroker"
        pool = broker._p().client.connection_pool
        assert pool.service_name == "mymaster"
        # kombu's fanout channels carry the master's database number
        assert broker.fanout_channel("celeryev") == "/0.celeryev"
    finally:
        broker.close()


def test_a_list_of_sentinels_is_no_fail_over_list_to_the_app() -> None:
    app = Celery("s", broker=["sentinel://h1/4", "sentinel://h2/4"])
    app.conf.broker_transport_options = {"master_name": "m"}
    broker = app.connect_broker()
    try:
        pool = broker._p().client.connection_pool
        assert len(pool.sentinel_manager.sentinels) == 2
        assert broker.fanout_channel("celeryev") == "/4.celeryev"
    finally:
        broker.close()


def test_broker_use_ssl_applies_to_a_sentinel_broker() -> None:
    from redis.sentinel import SentinelManagedSSLConnection

    app = Celery("s", broker=THREE)
    app.conf.broker_transport_options = {"master_name": "m"}
    app.conf.broker_use_ssl = {"ssl_cert_reqs": "none"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        broker = app.connect_broker()
    try:
        assert issubclass(broker._p().client.connection_pool.connection_class,
                          SentinelManagedSSLConnection)
    finally:
        broker.close()


def test_the_result_backend_reads_result_backend_transport_options() -> None:
    app = Celery("s", broker="memory://", backend=THREE)
    with pytest.raises(ImproperlyConfigured, match="result_backend_transport_options"):
        app.backend  # noqa: B018 - built on first use
    app = Celery("s", broker="memory://", backend="sentinel://:pw@h1:26379/6")
    app.conf.result_backend_transport_options = {"master_name": "results",
                                                 "global_keyprefix": "p:"}
    try:
        backend = app.backend
        pool = backend._redis.client().connection_pool
        assert (pool.service_name, pool.connection_kwargs["db"],
                pool.connection_kwargs["password"]) == ("results", 6, "pw")
        assert backend.key_for("x") == b"p:celery-task-meta-x"
    finally:
        app.close()


def test_the_old_uppercase_name_of_the_backend_options_works_too() -> None:
    app = Celery("s", broker="memory://", backend=THREE)
    app.config_from_object({"CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS": {"master_name": "up"}})
    try:
        assert app.backend._redis.client().connection_pool.service_name == "up"
    finally:
        app.close()


def test_redis_backend_use_ssl_applies_to_a_sentinel_backend() -> None:
    from redis.sentinel import SentinelManagedSSLConnection

    app = Celery("s", broker="memory://", backend=THREE)
    app.conf.result_backend_transport_options = {"master_name": "m"}
    app.conf.redis_backend_use_ssl = {"ssl_cert_reqs": "required"}
    try:
        pool = app.backend._redis.client().connection_pool
        assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
    finally:
        app.close()


def test_the_beat_lock_lives_on_the_sentinels_master_too() -> None:
    from celeriac.beat.lock import RedisLock, lock_for_url

    lock = lock_for_url(THREE, "beat-test", {"master_name": "m"})
    try:
        assert isinstance(lock, RedisLock)
    finally:
        lock.close()



@pytest.mark.parametrize("reply, raised", [
    ("NOREPLICAS Not enough good replicas to write.", "ConnectionError"),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", "ResponseError"),
])
def test_a_master_without_replicas_sends_the_connection_back_to_the_sentinels(
        monkeypatch: pytest.MonkeyPatch, reply: str, raised: str) -> None:
    from redis.exceptions import ResponseError
    from redis.sentinel import SentinelManagedConnection

    def answer(self: object, *args: object, **kwargs: object) -> object:
        raise ResponseError(reply)

    monkeypatch.setattr(SentinelManagedConnection, "read_response", answer)
    conn = _pool(THREE, {"master_name": "m"}).make_connection()
    dropped: list[bool] = []
    monkeypatch.setattr(conn, "disconnect", lambda *a, **k: dropped.append(True))
    with pytest.raises(Exception) as caught:
        conn.read_response()
    assert type(caught.value).__name__ == raised
    # only a master that cannot write is left, to be found again through the sentinels
    assert dropped == ([True] if raised == "ConnectionError" else [])
