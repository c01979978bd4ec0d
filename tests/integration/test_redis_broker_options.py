"""The Redis broker's connection settings, against private redis-servers and a real worker.

``broker_use_ssl``: TLS options for the broker (a ``redis://`` URL is then connected with
TLS, as kombu does); ``broker_url`` as a fail-over list with ``broker_failover_strategy``:
connections go to the first server that answers, and move on when it goes away.
Each test starts its own ``redis-server`` processes (never the shared one's data).
"""

from __future__ import annotations

import itertools
import socket
import ssl
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, load_proj, private_redis_server, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import ImproperlyConfigured
from celeriac.utils.redis import RedisConnector
from integration.test_redis_tls_and_socket import (  # noqa: F401 - fixtures
    TLSServer,
    openssl_binary,
    redis_py,
    redis_server_binary,
    tls_server,
)

TEMPLATE = Path(__file__).parent / "proj_template.py"

pytestmark = pytest.mark.redis


def closed_port() -> int:
    """A port nobody listens on (connections are refused at once)."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


@contextmanager
def project_with(directory: Path, backend: str, extra: str) -> Iterator[Any]:
    """A project whose ``proj`` app stores results at ``backend``; ``extra`` is Python
    run after the app is made (``app.conf...``), in the worker and here alike."""
    directory.mkdir()
    source = TEMPLATE.read_text().replace("BROKER_URL_HERE", backend)
    source = source.replace("QUEUE_HERE", "q-broker-options")
    (directory / "proj.py").write_text(source + "\n" + extra + "\n")
    module = load_proj(directory)
    try:
        yield module
    finally:
        module.app.close()
        sys.modules.pop("proj", None)


# -- broker_use_ssl ---------------------------------------------------------------------


def test_broker_use_ssl_makes_a_redis_url_a_tls_connection(tls_server: TLSServer,
                                                          redis_py: Any) -> None:
    plain_url = f"redis://127.0.0.1:{tls_server.port}/0"
    trusting = RedisConnector(plain_url, {"ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                                  "ssl_ca_certs": str(tls_server.ca)}},
                              "the broker_use_ssl test")
    try:
        assert trusting.client().ping()
    finally:
        trusting.close()
    # True: TLS with the certificate checked against the system's CAs, which do not
    # know the throw-away CA; CERT_NONE by name turns checking off, as in kombu.
    untrusting = RedisConnector(plain_url, {"ssl": True}, "the broker_use_ssl test")
    try:
        with pytest.raises(redis_py.ConnectionError, match="(?i)certificate"):
            untrusting.client().ping()
    finally:
        untrusting.close()
    lax = RedisConnector(plain_url, {"ssl": {"ssl_cert_reqs": "CERT_NONE"}}, "the test")
    try:
        assert lax.client().ping()
    finally:
        lax.close()


def test_a_rediss_url_s_own_tls_options_win_over_broker_use_ssl(
        tls_server: TLSServer) -> None:
    # The URL trusts the CA; the setting would not.
    connector = RedisConnector(tls_server.url("required"),
                               {"ssl": {"ssl_cert_reqs": "required",
                                        "ssl_ca_certs": "/nonexistent/ca.pem"}},
                               "the broker_use_ssl test")
    try:
        assert connector.client().ping()
    finally:
        connector.close()


def test_broker_use_ssl_refuses_a_unix_socket_url() -> None:
    with pytest.raises(ImproperlyConfigured, match="unix socket"):
        RedisConnector("redis+socket:///tmp/redis.sock", {"ssl": True}, "the test")


def test_broker_use_ssl_worker_round_trip(tls_server: TLSServer, tmp_path: Path) -> None:
    # Broker on a plain redis:// URL made TLS by broker_use_ssl; results on rediss://.
    extra = (f"app.conf.broker_url = 'redis://127.0.0.1:{tls_server.port}/0'\n"
             "import ssl\n"
             "app.conf.broker_use_ssl = {'ssl_cert_reqs': ssl.CERT_REQUIRED, "
             f"'ssl_ca_certs': {str(tls_server.ca)!r}}}\n")
    with project_with(tmp_path / "project", tls_server.url(), extra) as proj:
        assert proj.app._broker_options()["ssl"]["ssl_ca_certs"] == str(tls_server.ca)
        # prefork: the pool child opens its own TLS connections after the fork.
        with WorkerProcess("proj", cwd=tmp_path / "project", args=["-c", "1"]):
            assert proj.add.delay(2, 3).get(timeout=30) == 5
            with pytest.raises(proj.CustomError, match="mine"):
                proj.fail_custom.delay("mine").get(timeout=30)


# -- fail-over lists -----------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path, redis_server_binary: str, redis_py: Any) -> Iterator[Any]:
    """``start(name)``: a private redis-server; returns ``(url, process)``."""
    with ExitStack() as stack:
        def start(name: str) -> tuple[str, Any]:
            port = free_port()
            workdir = tmp_path / f"redis-{name}"
            workdir.mkdir()
            url = f"redis://127.0.0.1:{port}/0"
            proc = stack.enter_context(private_redis_server(
                redis_server_binary, workdir, ["--port", str(port), "--bind", "127.0.0.1"],
                lambda: redis_py.Redis.from_url(url, socket_timeout=2)))
            return url, proc

        yield start


def test_a_failover_list_connects_to_the_first_server_that_answers(servers: Any,
                                                                   redis_py: Any) -> None:
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    live, _ = servers("live")
    connector = RedisConnector(f"{dead};{live}", {}, "the fail-over test")
    try:
        connector.client().set("celeriac-failover", b"here")
        assert connector.current_url == live
        # The worker's own connection (outside the pool) goes there too.
        assert connector.line().call(("GET", "celeriac-failover")) == [b"here"]
    finally:
        connector.close()
    direct = redis_py.Redis.from_url(live)
    try:
        assert direct.get("celeriac-failover") == b"here"
    finally:
        direct.close()


def test_broker_failover_strategy_picks_the_next_server(servers: Any) -> None:
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    second, _ = servers("second")
    third, _ = servers("third")
    urls = [dead, second, third]
    asked: list[list[str]] = []

    def last_first(given: list[str]) -> Iterator[str]:
        asked.append(list(given))
        return itertools.cycle(reversed(given))

    def connected(strategy: Any) -> str:
        connector = RedisConnector(urls, {"failover_strategy": strategy}, "the test")
        try:
            assert connector.client().ping()
            return connector.current_url
        finally:
            connector.close()

    assert connected(None) == second          # round-robin, kombu's default
    assert connected("round-robin") == second
    assert connected(last_first) == third     # a callable given the URLs
    assert asked == [urls]
    assert connected("shuffle") in (second, third)
    with pytest.raises(ImproperlyConfigured, match="broker_failover_strategy"):
        RedisConnector(urls, {"failover_strategy": "fastest"}, "the test")


def test_failover_lists_must_differ_only_in_the_server() -> None:
    with pytest.raises(ImproperlyConfigured, match="all be redis:// or all rediss://"):
        RedisConnector("redis://a:6379/0;rediss://b:6379/0", {}, "the test")
    with pytest.raises(ImproperlyConfigured, match="other query options"):
        RedisConnector("redis://a:6379/0;redis://b:6379/0?socket_timeout=1", {}, "the test")
    with pytest.raises(ImproperlyConfigured, match="unix sockets"):
        RedisConnector("redis+socket:///tmp/a.sock;redis://b:6379/0", {}, "the test")


def test_a_worker_fails_over_when_its_broker_goes_away(servers: Any, redis_server: str,
                                                       tmp_path: Path) -> None:
    first, first_proc = servers("first")
    second, _ = servers("second")
    extra = (f"app.conf.broker_url = [{first!r}, {second!r}]\n"
             "app.conf.broker_failover_strategy = 'round-robin'\n"
             "app.conf.broker_connection_timeout = 2\n")
    with project_with(tmp_path / "project", f"{redis_server}/13", extra) as proj:
        with WorkerProcess("proj", cwd=tmp_path / "project",
                           args=["-P", "threads", "-c", "2"]) as worker:
            assert proj.add.delay(1, 2).get(timeout=30) == 3
            assert proj.app.producer_broker()._redis.current_url == first
            first_proc.terminate()
            first_proc.wait(10)
            # Producer and worker both move on to the second server.
            results = [proj.add.delay(i, i) for i in range(5)]
            assert [r.get(timeout=60) for r in results] == [0, 2, 4, 6, 8]
            assert proj.app.producer_broker()._redis.current_url == second
            assert wait_until(lambda: worker.proc is not None and worker.proc.poll() is None)


def test_a_worker_starts_on_the_second_server_when_the_first_is_down(
        servers: Any, redis_server: str, tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    live, _ = servers("live")
    extra = f"app.conf.broker_url = '{dead};{live}'\n"
    with project_with(tmp_path / "project", f"{redis_server}/13", extra) as proj:
        with WorkerProcess("proj", cwd=tmp_path / "project", args=["-c", "1"]):
            assert proj.add.delay(20, 22).get(timeout=30) == 42
