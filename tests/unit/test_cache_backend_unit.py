"""The memcached result backend's pure logic: URL forms, cache_backend_options, the
30-day TTL rule, the value flags read from memcached (pickled values refused), and
where keys are placed among several servers. No server is needed: pymemcache connects
on first use, and the one test that uses a connection asks a closed port."""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import free_port  # noqa: E402

pytest.importorskip("pymemcache")

from celeriac import Celery  # noqa: E402
from celeriac.backends.base import BackendOptions, is_connection_error  # noqa: E402
from celeriac.backends.cache import (  # noqa: E402
    CacheBackend,
    MemcachedUnreachable,
    _Ring,
    _Serde,
    client_options,
    memcached_expire,
    parse_servers,
    server_spec,
)
from celeriac.backends.memory import MemoryBackend  # noqa: E402
from celeriac.config import IgnoredSettingWarning  # noqa: E402
from celeriac.exceptions import BackendError, ImproperlyConfigured  # noqa: E402

DAY = 24 * 3600


# -- URL forms ------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "kind", "servers"), [
    ("memcached://127.0.0.1:11211/", "memcached", ["127.0.0.1:11211"]),
    ("memcached://h1:11211;h2:11212/", "memcached", ["h1:11211", "h2:11212"]),
    ("memcached://h1:11211;/", "memcached", ["h1:11211"]),  # a trailing ';' is no server
    ("pylibmc://h1/", "pylibmc", ["h1"]),
    ("memcache://h1", "memcache", ["h1"]),
    ("memcached:///var/run/memcached.sock", "memcached", ["/var/run/memcached.sock"]),
    ("memory", "memory", []),
])
def test_celery_url_forms(spec: str, kind: str, servers: list[str]) -> None:
    assert parse_servers(spec) == (kind, servers)


def test_a_query_string_is_refused_with_where_options_go() -> None:
    with pytest.raises(ImproperlyConfigured, match="cache_backend_options"):
        parse_servers("memcached://h1:11211/?timeout=3")


@pytest.mark.parametrize(("server", "spec"), [
    ("h1", ("h1", 11211)),
    ("h1:11300", ("h1", 11300)),
    ("[::1]:11300", ("::1", 11300)),
    ("[::1]", ("::1", 11211)),
    ("unix:/tmp/mc.sock", "/tmp/mc.sock"),
    ("/tmp/mc.sock", "/tmp/mc.sock"),
])
def test_server_addresses(server: str, spec: Any) -> None:
    assert server_spec(server) == spec


def test_a_bad_port_names_the_server() -> None:
    with pytest.raises(ImproperlyConfigured, match="h1:eleven"):
        server_spec("h1:eleven")


def _app(**conf: Any) -> Celery:
    app = Celery("cacheunit", broker="memory://", backend=conf.pop("backend"))
    app.conf.update(conf)
    return app


def test_result_backend_cache_with_the_cache_backend_setting() -> None:
    app = _app(backend="cache", cache_backend="memcached://h1:11211;h2:11211/")
    backend = app.backend
    assert isinstance(backend, CacheBackend)
    assert backend.servers == ["h1:11211", "h2:11211"]


def test_the_url_wins_over_the_cache_backend_setting() -> None:
    app = _app(backend="cache+memcached://h3:11211/", cache_backend="memcached://h1:11211/")
    assert app.backend.servers == ["h3:11211"]


@pytest.mark.parametrize("spec", ["memory", "memory://"])
def test_cache_backend_memory_is_the_in_process_store(spec: str) -> None:
    app = _app(backend="cache", cache_backend=spec)
    assert isinstance(app.backend, MemoryBackend)
    app.backend.mark_as_done("cache-unit-1", 8)
    # the same store as cache+memory://
    assert _app(backend="cache+memory://").backend.get_task_meta("cache-unit-1")["result"] == 8


def test_cache_without_cache_backend_says_what_to_set() -> None:
    with pytest.raises(ImproperlyConfigured, match="cache_backend is not set"):
        _app(backend="cache").backend


def test_an_unknown_cache_kind_lists_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match="memcached://host:port/"):
        _app(backend="cache", cache_backend="couchbase://h1/").backend


def test_no_server_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="names no memcached server"):
        _app(backend="cache+memcached:///").backend


# -- cache_backend_options --------------------------------------------------------------
def test_options_reach_the_client_with_celerys_timeouts_by_default() -> None:
    assert client_options({}) == ({"connect_timeout": 5.0, "timeout": 5.0}, {})
    client, retry = client_options({"timeout": 1.5, "no_delay": True, "key_prefix": b"p:",
                                    "max_pool_size": 4})
    assert client == {"connect_timeout": 5.0, "timeout": 1.5, "no_delay": True,
                      "key_prefix": b"p:", "max_pool_size": 4}
    assert retry == {}


def test_retry_attempts_wraps_the_client_as_celery_does() -> None:
    _, retry = client_options({"retry_attempts": 3, "retry_delay": 0.1})
    assert retry == {"attempts": 3, "retry_delay": 0.1}
    with pytest.warns(IgnoredSettingWarning, match="only with retry_attempts"):
        assert client_options({"retry_delay": 0.1})[1] == {}


def test_pylibmc_behaviors_are_mapped_or_warn() -> None:
    with pytest.warns(IgnoredSettingWarning, match="'ketama'"):
        client, _ = client_options({"behaviors": {"tcp_nodelay": True, "connect_timeout": 250,
                                                  "receive_timeout": 2_000_000,
                                                  "ketama": True}})
    assert client["no_delay"] is True
    assert client["connect_timeout"] == 0.25 and client["timeout"] == 2.0
    keepalive, _ = client_options({"behaviors": {"tcp_keepalive": True}})
    assert type(keepalive["socket_keepalive"]).__name__ == "KeepaliveOpts"


@pytest.mark.parametrize("name", ["binary", "hasher", "dead_timeout", "retry_timeout",
                                  "use_pooling", "default_noreply"])
def test_options_without_effect_here_warn(name: str) -> None:
    with pytest.warns(IgnoredSettingWarning, match=name):
        client_options({name: True})


@pytest.mark.parametrize("name", ["ignore_exc", "serde", "serializer", "deserializer"])
def test_options_that_would_lose_results_or_unpickle_are_refused(name: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"cache_backend_options\\[{name!r}\\]"):
        client_options({name: True})


def test_harmless_values_of_those_pass_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client_options({"ignore_exc": False, "default_noreply": False})


def test_an_unknown_option_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="'tiemout'"):
        client_options({"tiemout": 3})


def test_cache_backend_options_setting_reaches_the_backend() -> None:
    app = _app(backend="cache+memcached://h1/", cache_backend_options={"no_delay": True})
    assert app.backend._client_options["no_delay"] is True
    with pytest.raises(ImproperlyConfigured, match="ignore_exc"):
        _app(backend="cache+memcached://h1/",
             cache_backend_options={"ignore_exc": True}).backend


# -- expiry ---------------------------------------------------------------------------
def test_ttl_none_or_zero_is_never() -> None:
    assert memcached_expire(None) == 0
    assert memcached_expire(0) == 0


def test_a_fraction_rounds_up_so_it_is_not_never() -> None:
    assert memcached_expire(0.2) == 1
    assert memcached_expire(59.5) == 60


def test_thirty_days_is_relative_and_longer_is_an_absolute_time() -> None:
    # memcached reads an expiry over 30 days as a Unix time
    now = 1_800_000_000.0
    assert memcached_expire(30 * DAY, now) == 30 * DAY
    assert memcached_expire(31 * DAY, now) == int(now) + 31 * DAY


# -- values -----------------------------------------------------------------------------
class _Tripwire:
    """Unpickling this appends to ``LOADED``: the test checks it never happens."""

    def __reduce__(self) -> Any:
        return (LOADED.append, ("unpickled!",))


LOADED: list[str] = []


def test_a_pickled_value_is_refused_and_never_unpickled() -> None:
    serde = _Serde()
    read = serde.deserialize(b"celery-task-meta-x", pickle.dumps(_Tripwire()), 1)
    backend = CacheBackend("cache+memcached://h1/")
    with pytest.raises(BackendError, match="pickled value .*never unpickles"):
        backend._value("celery-task-meta-x", read)
    assert LOADED == []


def test_what_celeriac_writes_has_flags_zero_like_celerys_client() -> None:
    serde = _Serde()
    assert serde.serialize(b"k", b'{"status": "SUCCESS"}') == (b'{"status": "SUCCESS"}', 0)
    assert serde.serialize(b"k", "é") == ("é".encode(), 0)
    assert serde.serialize(b"k", 3) == (b"3", 0)


def test_text_and_compressed_values_of_other_clients_read_as_their_bytes() -> None:
    import zlib

    serde = _Serde()
    assert serde.deserialize(b"k", "é".encode(), 16) == "é".encode()  # python-memcached str
    assert serde.deserialize(b"k", zlib.compress(b"x" * 100), 8 | 16) == b"x" * 100


# -- several servers ----------------------------------------------------------------------
def test_keys_land_on_the_server_pymemcaches_hash_client_picks() -> None:
    # Celery 5.7's client for several servers is pymemcache's HashClient: a Celery
    # client given the same list must look where celeriac wrote.
    from pymemcache.client.hash import HashClient

    servers = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11212"]
    ring = _Ring(servers, {}, {})
    theirs = HashClient(servers)
    keys = [f"celery-task-meta-{i}" for i in range(200)]
    assert [ring.node(k) for k in keys] == [theirs.hasher.get_node(k) for k in keys]
    assert len({ring.node(k) for k in keys}) == 3


# -- errors -----------------------------------------------------------------------------
def test_an_unreachable_server_is_a_connection_error_that_names_it() -> None:
    port = free_port()
    backend = CacheBackend(f"cache+memcached://127.0.0.1:{port}/",
                           BackendOptions(store_attempts=2))
    with pytest.raises(MemcachedUnreachable, match=f"memcached 127.0.0.1:{port}") as info:
        backend.get_task_meta("x")
    assert is_connection_error(info.value)  # so stores are retried
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    with pytest.raises(MemcachedUnreachable):
        backend.mark_as_done("x", 1)


def test_without_pymemcache_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac.exceptions import MissingDependency

    monkeypatch.setitem(sys.modules, "pymemcache", None)  # as if not installed
    with pytest.raises(MissingDependency, match=r"celeriac\[memcached\]"):
        CacheBackend("cache+memcached://h1/")
