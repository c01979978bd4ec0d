"""``amqps://`` end to end: a celeriac worker and client on RabbitMQ over TLS.

Two private RabbitMQ nodes (tests/rabbit_node.py; the shared node on 5672 is never
touched) serve TLS with a throw-away CA made with ``openssl`` at test time:

- ``open``: verifies a client certificate when one is sent, but needs none;
- ``strict``: refuses a client without a certificate (``fail_if_no_peer_cert``).

RabbitMQ's ``ssl_options`` apply to every TLS listener of a node, so the two policies
need two nodes; they boot side by side. Results go back over rpc://, so they travel over
TLS too.
"""

from __future__ import annotations

import importlib.util
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ on sys.path
from rabbit_node import RabbitNode, free_ports, require_rabbit, running_nodes  # noqa: E402
from support import require  # noqa: E402

import celeriac  # noqa: E402
from celeriac.contrib.testing import WorkerProcess  # noqa: E402

T = 20
# The workers run the celeriac under test: the editable install's may be another clone's
SOURCE_ROOT = str(Path(celeriac.__file__).resolve().parents[1])
# A worker that cannot connect must say so within this (not retry for minutes)
FAIL_FAST = 15.0


# -- certificates ------------------------------------------------------------------------
@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA that signed nothing the nodes present


def _openssl(workdir: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} exited {done.returncode}:\n"
                           f"{done.stderr}")


def _make_ca(workdir: Path, name: str) -> None:
    _openssl(workdir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=celeriac test {name}", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _make_leaf(workdir: Path, name: str, cn: str, extensions: str) -> None:
    _openssl(workdir, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
    (workdir / f"{name}.ext").write_text(extensions)
    _openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
             "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-sha256",
             "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def make_certs(workdir: Path) -> Certs:
    """A CA, a server certificate for localhost and 127.0.0.1 and a client certificate,
    both signed by it, and a second, unrelated CA. Keys stay in ``workdir``."""
    _make_ca(workdir, "ca")
    _make_ca(workdir, "rogue")
    _make_leaf(workdir, "server", "localhost",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
               "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _make_leaf(workdir, "client", "celeriac-client",
               "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    return Certs(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key",
                 workdir / "client.pem", workdir / "client.key", workdir / "rogue.pem")


# -- the nodes -----------------------------------------------------------------------------
@dataclass
class TLSNode:
    node: RabbitNode
    tls_port: int

    def url(self, host: str = "localhost") -> str:
        return f"amqps://guest:guest@{host}:{self.tls_port}//"

    def tls_connections(self) -> list[str]:
        """``ssl`` of each client connection (``true`` for one over TLS)."""
        done = self.node.ctl("list_connections", "-q", "--no-table-headers", "ssl")
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def tls_conf(port: int, certs: Certs, require_client_cert: bool) -> list[str]:
    return [
        f"listeners.ssl.default = 127.0.0.1:{port}",
        f"ssl_options.cacertfile = {certs.ca}",
        f"ssl_options.certfile = {certs.server_cert}",
        f"ssl_options.keyfile = {certs.server_key}",
        "ssl_options.verify = verify_peer",
        f"ssl_options.fail_if_no_peer_cert = {str(require_client_cert).lower()}",
    ]


@dataclass
class Nodes:
    certs: Certs
    open: TLSNode
    strict: TLSNode


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    server, ctl = require_rabbit()
    require("openssl is not installed: these tests make their certificates with it",
            shutil.which("openssl") is not None)
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    open_port, strict_port = free_ports(2)
    tls_ports = [open_port, strict_port]
    open_node = RabbitNode(tmp_path_factory.mktemp("rabbit-tls-open"), server, ctl,
                           tls_conf(open_port, certs, False), prefix="celeriac-tls-",
                           ports=tls_ports)
    strict_node = RabbitNode(tmp_path_factory.mktemp("rabbit-tls-strict"), server, ctl,
                             tls_conf(strict_port, certs, True), prefix="celeriac-tls-",
                             ports=tls_ports + [open_node.port, open_node.dist_port])
    with running_nodes([open_node, strict_node]):
        for node, port in ((open_node, open_port), (strict_node, strict_port)):
            assert node.listening(port), f"no TLS listener on {port}:\n{node.server_output()}"
        yield Nodes(certs, TLSNode(open_node, open_port), TLSNode(strict_node, strict_port))


# -- the project ---------------------------------------------------------------------------
PROJECT = '''
import ssl

from celeriac import Celery

app = Celery("tlsproj", broker={broker!r}, backend="rpc://")
app.conf.task_default_queue = {queue!r}
app.conf.broker_dead_letter_queue = {queue!r} + ".dead"
app.conf.broker_use_ssl = {use_ssl}


@app.task
def add(x, y):
    return x + y
'''


@dataclass
class Project:
    dir: Path
    client: Any

    def worker(self, **kwargs: Any) -> WorkerProcess:
        return WorkerProcess("tlsproj", cwd=self.dir, args=["-P", "solo"],
                             env={"PYTHONPATH": SOURCE_ROOT}, **kwargs)


@pytest.fixture
def make_project(tmp_path: Path) -> Iterator[Any]:
    clients: list[Any] = []

    def make(broker: str, use_ssl: str) -> Project:
        """``use_ssl``: the source of ``broker_use_ssl`` (it may name ``ssl.*``)."""
        queue = f"amqp-tls-{uuid.uuid4().hex[:8]}"
        folder = tmp_path / queue
        folder.mkdir()
        (folder / "tlsproj.py").write_text(PROJECT.format(broker=broker, queue=queue,
                                                          use_ssl=use_ssl))
        spec = importlib.util.spec_from_file_location(f"tlsproj_{queue}",
                                                      folder / "tlsproj.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        clients.append(module.app)
        return Project(folder, module.app)

    yield make
    for client in clients:
        client.close()


def start_fails(project: Project) -> tuple[str, float]:
    """The output of a worker expected not to start, and how long it took to give up."""
    worker = project.worker(ready_timeout=FAIL_FAST + 10)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="worker exited") as info:
            worker.start()
    finally:
        worker.kill()
    return str(info.value), time.monotonic() - started


def ssl_dict(**options: Any) -> str:
    """``broker_use_ssl`` source text: ``cert_reqs`` stays the name ``ssl.CERT_*``."""
    items = [f"{key!r}: {value}" if key == "cert_reqs"
             else f"{key!r}: {str(value) if isinstance(value, Path) else value!r}"
             for key, value in options.items()]
    return "{" + ", ".join(items) + "}"


# -- (a) a task over TLS, the server verified against the test CA ---------------------------
def test_task_runs_over_tls_with_ca_certs(nodes: Nodes, make_project: Any) -> None:
    project = make_project(nodes.open.url(), ssl_dict(
        ca_certs=nodes.certs.ca, cert_reqs="ssl.CERT_REQUIRED"))
    with project.worker():
        assert project.client.send_task("tlsproj.add", args=[2, 3]).get(timeout=T) == 5
        # every connection the worker and the client hold is a TLS one
        seen = nodes.open.tls_connections()
        assert seen and set(seen) == {"true"}, seen


# -- (b) a client certificate, where the node demands one -----------------------------------
def test_client_certificate_is_accepted_where_required(nodes: Nodes,
                                                        make_project: Any) -> None:
    project = make_project(nodes.strict.url(), ssl_dict(
        ca_certs=nodes.certs.ca, certfile=nodes.certs.client_cert,
        keyfile=nodes.certs.client_key, cert_reqs="ssl.CERT_REQUIRED"))
    with project.worker():
        assert project.client.send_task("tlsproj.add", args=[4, 5]).get(timeout=T) == 9
        assert set(nodes.strict.tls_connections()) == {"true"}


def test_no_client_certificate_where_one_is_required_fails_at_start(
        nodes: Nodes, make_project: Any) -> None:
    project = make_project(nodes.strict.url(), ssl_dict(
        ca_certs=nodes.certs.ca, cert_reqs="ssl.CERT_REQUIRED"))
    output, took = start_fails(project)
    assert "Cannot start" in output and "broker" in output, output
    assert "certificate" in output.lower(), output
    assert took < FAIL_FAST, f"the worker took {took:.1f}s to give up:\n{output}"


# -- (c) a server the client does not trust --------------------------------------------------
def test_untrusted_server_certificate_is_refused(nodes: Nodes, make_project: Any) -> None:
    project = make_project(nodes.open.url(), ssl_dict(
        ca_certs=nodes.certs.rogue_ca, cert_reqs="ssl.CERT_REQUIRED"))
    output, took = start_fails(project)
    assert "Cannot start" in output, output
    assert "certificate verify failed" in output, output
    assert took < FAIL_FAST, f"the worker took {took:.1f}s to give up:\n{output}"
    with pytest.raises(Exception, match="certificate verify failed"):
        project.client.send_task("tlsproj.add", args=[1, 1], retry=False)


def test_amqps_alone_verifies_against_the_system_cas(nodes: Nodes,
                                                     make_project: Any) -> None:
    # no broker_use_ssl: TLS with default verification, so the test CA is not trusted
    project = make_project(nodes.open.url(), "False")
    output, took = start_fails(project)
    assert "certificate verify failed" in output, output
    assert took < FAIL_FAST, f"the worker took {took:.1f}s to give up:\n{output}"
    with pytest.raises(Exception, match="certificate verify failed"):
        project.client.send_task("tlsproj.add", args=[1, 1], retry=False)


def test_server_hostname_none_checks_the_url_host(nodes: Nodes, make_project: Any) -> None:
    # kombu's spelling for "check the host name": the URL's host (localhost, in the SAN)
    project = make_project(nodes.open.url(), ssl_dict(
        ca_certs=nodes.certs.ca, cert_reqs="ssl.CERT_REQUIRED", server_hostname=None))
    with project.worker():
        assert project.client.send_task("tlsproj.add", args=[6, 7]).get(timeout=T) == 13


def test_ssl_options_as_py_amqp_takes_them() -> None:
    """What celeriac hands py-amqp as ``ssl=`` for each ``broker_use_ssl`` form."""
    from celeriac.exceptions import ImproperlyConfigured
    from celeriac.utils.amqp import parse_url, ssl_context

    tls = parse_url("amqps://broker.example//")
    assert ssl_context(None, tls) is True
    given = {"ca_certs": "/ca.pem", "cert_reqs": ssl.CERT_REQUIRED}
    assert ssl_context(given, tls) == given
    # py-amqp reads an empty dict as "no TLS": amqps:// would talk plain AMQP to 5671
    assert ssl_context({}, tls) is True
    assert ssl_context({"server_hostname": None}, tls) == {
        "server_hostname": "broker.example"}
    # py-amqp 5 drops an SSLContext silently (its defaults instead): refused, not ignored
    with pytest.raises(ImproperlyConfigured, match="SSLContext"):
        ssl_context(ssl.create_default_context(), tls)


def test_tls_failures_stop_the_worker_at_once() -> None:
    """A certificate error is not retried at start-up as an outage would be."""
    from celeriac.worker.main import classify

    untrusted = ConnectionError("cannot connect to RabbitMQ (x: [SSL: "
                                "CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                "self-signed certificate in certificate chain)")
    reason, transient, hint = classify(untrusted, "broker", "broker_url")
    assert (reason, transient) == ("TLS certificate verification failed", False)
    assert "broker_use_ssl" in hint
    no_client_cert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 "
                                     "alert certificate required")
    reason, transient, hint = classify(no_client_cert, "broker", "broker_url")
    assert not transient and "client certificate" in hint
    # an outage is still retried
    assert classify(ConnectionRefusedError(111, "Connection refused"), "broker",
                    "broker_url")[1] is True
