"""``rediss://`` (TLS) and ``redis+socket://`` (unix socket) URLs, end to end.

Each test starts a private ``redis-server`` (never the shared one on port 6379): a TLS
listener with a throw-away CA made by ``openssl``, or a unix socket with no TCP port.
A real worker started through the CLI then runs tasks with broker and result backend
both on that URL, and the test process gets the results (and failures, by type) back.

Missing ``redis-server``/``openssl``/redis-py skip the tests, unless
CELERIAC_REQUIRE_SERVICES=1 (CI) turns that into a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, load_proj, private_redis_server, require

from celeriac.contrib.testing import WorkerProcess
from celeriac.utils.redis import RedisConnector

TEMPLATE = Path(__file__).parent / "proj_template.py"

pytestmark = pytest.mark.redis


def _need(name: str, available: bool) -> None:
    require(f"{name} is not available on this machine", available)


@pytest.fixture
def redis_py() -> Any:
    redis: Any
    try:
        import redis
    except ImportError:
        redis = None
    _need("redis-py (pip install 'celeriac[redis]')", redis is not None)
    return redis


@pytest.fixture
def redis_server_binary(redis_py: Any) -> str:
    path = shutil.which("redis-server")
    _need("redis-server", path is not None)
    assert path is not None
    return path


@pytest.fixture
def openssl_binary() -> str:
    path = shutil.which("openssl")
    _need("the openssl command", path is not None)
    assert path is not None
    return path


# -- TLS --------------------------------------------------------------------------------

# Our own config, so that the system openssl.cnf cannot add or clash with extensions.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
"""


@dataclass
class TLSServer:
    port: int
    ca: Path

    def url(self, cert_reqs: str = "required", ca: bool = True) -> str:
        url = f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs={cert_reqs}"
        return url + (f"&ssl_ca_certs={self.ca}" if ca else "")


def _make_certificates(openssl: str, directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signed for 127.0.0.1/localhost."""
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-config", str(cnf), "-extensions", "ca",
         "-subj", "/CN=celeriac throw-away test CA", "-days", "2",
         "-keyout", str(ca_key), "-out", str(ca_crt)],
        [openssl, "req", "-new", *ec, "-config", str(cnf), "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(csr)],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-set_serial", "2", "-days", "2", "-extfile", str(cnf), "-extensions", "server",
         "-out", str(crt)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stderr}")
    return ca_crt, crt, key


@pytest.fixture
def tls_server(tmp_path: Path, redis_server_binary: str, openssl_binary: str,
               redis_py: Any) -> Iterator[TLSServer]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, crt, key = _make_certificates(openssl_binary, certs)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    port = free_port()
    extra = ["--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
             "--tls-cert-file", str(crt), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]

    def probe() -> Any:
        return redis_py.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca),
                              ssl_cert_reqs="required", socket_timeout=2)

    with private_redis_server(redis_server_binary, workdir, extra, probe):
        yield TLSServer(port, ca)


# -- unix socket ------------------------------------------------------------------------

@pytest.fixture
def socket_path(redis_server_binary: str, redis_py: Any) -> Iterator[Path]:
    # A short directory of its own: a unix socket path must stay under ~107 bytes, which
    # a deep pytest tmp_path with a long test name can exceed.
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-sock-"))
    path = workdir / "redis.sock"
    extra = ["--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"]
    try:
        with private_redis_server(redis_server_binary, workdir, extra,
                           lambda: redis_py.Redis(unix_socket_path=str(path), socket_timeout=2)):
            yield path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the project -------------------------------------------------------------------------

@contextmanager
def _proj(directory: Path, url: str) -> Iterator[Any]:
    """tests/conftest.py's ``project`` + ``proj``, but on ``url``; yields the module."""
    directory.mkdir()
    source = TEMPLATE.read_text().replace("BROKER_URL_HERE", url)
    # A private server, so the queue name need not be unique; kept distinct anyway.
    (directory / "proj.py").write_text(source.replace("QUEUE_HERE", "q-tls-socket"))
    module = load_proj(directory)
    try:
        yield module
    finally:
        module.app.close()
        sys.modules.pop("proj", None)


def _round_trip(proj: Any) -> str:
    """A value and two failures through the worker; returns the successful task's id."""
    result = proj.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    assert result.state == "SUCCESS"

    failed = proj.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=20)
    assert failed.state == "FAILURE" and "ValueError: boom" in failed.traceback

    custom = proj.fail_custom.delay("mine")
    with pytest.raises(proj.CustomError, match="mine"):
        custom.get(timeout=20)
    return result.id


# -- tests: TLS ---------------------------------------------------------------------------

@pytest.mark.parametrize("cert_reqs", ["required", "CERT_REQUIRED"])
def test_rediss_client_accepts_both_cert_reqs_spellings(tls_server: TLSServer,
                                                        cert_reqs: str) -> None:
    connector = RedisConnector(tls_server.url(cert_reqs), None, "the TLS test")
    try:
        client = connector.client()
        assert client.ping()
        client.set("celeriac-tls-probe", b"1")
        assert client.get("celeriac-tls-probe") == b"1"
        # The pub/sub connection of the result backend is built apart from the pool.
        conn = connector.new_connection()
        conn.connect()
        conn.disconnect()
    finally:
        connector.close()


def test_rediss_verifies_the_certificate(tls_server: TLSServer, redis_py: Any) -> None:
    # Without our CA the throw-away certificate is untrusted: proof that "required"
    # really verifies rather than silently falling back to no checking.
    untrusting = RedisConnector(tls_server.url("CERT_REQUIRED", ca=False), None, "the TLS test")
    try:
        with pytest.raises(redis_py.ConnectionError, match="(?i)certificate"):
            untrusting.client().ping()
    finally:
        untrusting.close()
    # And Celery's CERT_NONE turns checking off, as in kombu.
    lax = RedisConnector(tls_server.url("CERT_NONE", ca=False), None, "the TLS test")
    try:
        assert lax.client().ping()
    finally:
        lax.close()


@pytest.mark.parametrize("cert_reqs", ["required", "CERT_REQUIRED"])
def test_rediss_worker_round_trip(tls_server: TLSServer, tmp_path: Path,
                                  cert_reqs: str) -> None:
    project = tmp_path / "project"
    with _proj(project, tls_server.url(cert_reqs)) as proj:
        # prefork: the pool child opens its own TLS connections after the fork.
        with WorkerProcess("proj", cwd=project, args=["-c", "1"]):
            _round_trip(proj)


# -- tests: unix socket -----------------------------------------------------------------

def test_socket_url_default_db_is_0(socket_path: Path, redis_py: Any) -> None:
    connector = RedisConnector(f"redis+socket://{socket_path}", None, "the socket test")
    try:
        connector.client().set("celeriac-socket-probe", b"0")
    finally:
        connector.close()
    direct = redis_py.Redis(unix_socket_path=str(socket_path), db=0)
    try:
        assert direct.get("celeriac-socket-probe") == b"0"
    finally:
        direct.close()


def test_socket_worker_round_trip_in_virtual_host_3(socket_path: Path, tmp_path: Path,
                                                    redis_py: Any) -> None:
    project = tmp_path / "project"
    with _proj(project, f"redis+socket://{socket_path}?virtual_host=3") as proj:
        with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
            task_id = _round_trip(proj)

    # virtual_host=3 must mean db 3, for the worker that wrote the result as well.
    key = f"celery-task-meta-{task_id}"
    db3 = redis_py.Redis(unix_socket_path=str(socket_path), db=3)
    db0 = redis_py.Redis(unix_socket_path=str(socket_path), db=0)
    try:
        assert db3.exists(key) == 1
        assert db0.exists(key) == 0
    finally:
        db3.close()
        db0.close()
