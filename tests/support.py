"""Helpers shared by the integration and fault tests (importable as ``support``)."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

# How long a private redis-server may take to answer: only reached when it is broken.
REDIS_START_TIMEOUT = 20.0


def require(what: str, available: bool) -> None:
    """Skip the test when ``what`` is missing, or fail it when CI demands every service
    (CELERIAC_REQUIRE_SERVICES=1)."""
    if available:
        return
    if os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1":
        import pytest

        pytest.fail(f"{what} (CELERIAC_REQUIRE_SERVICES=1)")
    import pytest

    pytest.skip(what)


def answers(port: int, hello: bytes, expect: bytes) -> bool:
    """Whether the server on loopback ``port`` answers ``hello`` with ``expect``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(hello)
            return sock.recv(16).startswith(expect)
    except OSError:
        return False


def rabbitmq_answers(port: int = 5672) -> bool:
    """Whether RabbitMQ answers the AMQP 0-9-1 greeting on loopback ``port``."""
    return answers(port, b"AMQP\x00\x00\x09\x01", b"\x01\x00\x00")


def postgresql_answers(port: int = 5432) -> bool:
    """Whether PostgreSQL answers an SSLRequest on loopback ``port`` (with N or S)."""
    return (answers(port, b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"N")
            or answers(port, b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"S"))


def mysql_answers(port: int = 3306) -> bool:
    """Whether MySQL or MariaDB greets a client on loopback ``port`` (a handshake packet,
    protocol version 10 after the 4-byte header)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(5)[4:5] == b"\x0a"
    except OSError:
        return False


def delete_rabbitmq(*names: str) -> None:
    """The shared RabbitMQ's queues and exchanges of these names, if they exist: a
    test's durable queues outlive it."""
    import amqp

    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest",
                           connect_timeout=5)
    try:
        conn.connect()
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                try:  # a refused delete closes its channel: one channel each
                    getattr(conn.channel(), delete)(name)
                except Exception:
                    pass
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except Exception:
            pass


def load_proj(project: Path) -> Any:
    """Import the test project's ``proj`` module afresh."""
    sys.modules.pop("proj", None)
    sys.path.insert(0, str(project))
    try:
        return importlib.import_module("proj")
    finally:
        sys.path.remove(str(project))


@contextmanager
def project_module(project: Path, name: str, source: str) -> Iterator[Any]:
    """Write ``<name>.py`` (which imports the ``proj`` app) into the project; import it."""
    (project / f"{name}.py").write_text(source)
    proj = load_proj(project)
    sys.path.insert(0, str(project))
    sys.modules.pop(name, None)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(project))
        proj.app.close()
        for module in ("proj", name):
            sys.modules.pop(module, None)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is true; a test asserts on the returned flag."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def beat_through(broker: Any, seconds: float) -> Any:
    """Beat as a live worker does, often, for ``seconds``; all that came back (one
    ``Released``). Other consumers, silent meanwhile, are found dead on the way."""
    from celeriac.brokers import Released

    released = Released()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        released.add(broker.heartbeat())
        time.sleep(0.02)
    return released


def lines(path: Path) -> list[str]:
    """The words a marker file holds (tasks append one per line)."""
    return path.read_text().split() if path.exists() else []


def free_port() -> int:
    """A TCP port on 127.0.0.1 free a moment ago.

    The race with another process is acceptable: a server that loses it exits, and
    ``private_redis_server`` reports that.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis_server(binary: str, workdir: Path, extra: list[str],
                        probe: Callable[[], Any]) -> Iterator[subprocess.Popen[bytes]]:
    """Run a ``redis-server`` of the test's own (never the shared one) until the block ends.

    ``extra`` are its options (later ones win, so ``--appendonly yes`` may be passed);
    ``probe()`` returns a client whose PING says the server is up. Yields the process.
    """
    log = workdir / "redis.log"
    command = [binary, "--daemonize", "no", "--save", "", "--appendonly", "no",
               "--dir", str(workdir), "--logfile", str(log), *extra]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n"
                                   f"{log.read_text() if log.exists() else ''}")
            try:
                if probe().ping():
                    break
            except Exception:  # noqa: BLE001 - not listening yet (or TLS not up yet)
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer:\n"
                                   f"{log.read_text() if log.exists() else ''}")
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
