"""Shared fixtures: services skip locally when absent and fail in CI.

Set CELERIAC_REQUIRE_SERVICES=1 (CI does) to turn a missing Redis into a failure.

The suite can run in parallel (``pytest -n 4 --dist loadgroup``), on one machine's
shared Redis, RabbitMQ, PostgreSQL, MariaDB and memcached. The tests of one module run on
one xdist worker, one after another (``pytest_collection_modifyitems`` below), so a
module may share a fixture-scoped worker or a db it flushes among its own tests. Across
modules, a test must respect these rules to run beside the others:

- Names of its own: queues (``project`` gives ``q-<uuid>``), control and event
  exchanges, Redis keys, database schemas or tables, memcached keys, worker node names
  (``-n <uuid>@%h``), files under ``tmp_path``: never a fixed name another module uses.
- Count only its own: filter ``inspect``/``ping`` replies, events and queue listings
  by its node names, exchange or queue; other tests' workers share the server.
- Flush nothing shared: ``flushdb`` only a Redis db no other module uses (list the db
  in ``SHARED_GROUPS`` if several modules must use it), never ``FLUSHALL``, memcached
  ``flush_all``, a dropped shared table, or a purge of a queue it does not own.
- Ports from ``support.free_port``; a server it stops or restarts is a private one
  (``support.private_redis_server``, tests/rabbit_node.py, tests/pg_node.py).
- Timeouts sized for a loaded machine (several workers start at once on 2 cores):
  wait with ``support.wait_until`` and generous limits, never assert speed.
- What must share a server-wide thing (the interop tests: Redis dbs 7-9, 11 and 12, the
  ``celery`` queue on Redis and RabbitMQ, flushed per test) is one group in
  ``SHARED_GROUPS``: its modules run on one xdist worker.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support.py as ``support``
from support import (  # noqa: E402
    answers,
    delete_rabbitmq,
    free_port,
    load_proj,
    mysql_answers,
    postgresql_answers,
    private_redis_server,
    rabbitmq_answers,
    require,
)

REQUIRE_SERVICES = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"
TESTS = Path(__file__).parent
# Folders whose modules share a server-wide thing, so they run on one xdist worker: the
# interop apps have fixed Redis dbs (7-9, 11, 12) and Celery's ``celery`` queue, which their
# fixtures flush and empty before each test.
SHARED_GROUPS = {TESTS / "interop": "interop"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test joins its module's xdist group (or its folder's shared one), so that
    ``--dist loadgroup`` never runs two tests of one module at once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = next((name for folder, name in SHARED_GROUPS.items()
                      if item.path.is_relative_to(folder)), None)
        item.add_marker(pytest.mark.xdist_group(group or item.nodeid.split("::", 1)[0]))
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _redis_answers() -> bool:
    return answers(REDIS_PORT, b"PING\r\n", b"+PONG")


def need_service(name: str, available: bool) -> None:
    require(f"{name} is not reachable on its standard loopback port", available)


@pytest.fixture(scope="session")
def redis_server() -> str:
    pytest.importorskip("redis") if not REQUIRE_SERVICES else None
    need_service("Redis", _redis_answers())
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
# The machine's PostgreSQL and MariaDB (database ``test``); each test has its own queue
# names, so tests sharing the tables leave each other alone.
POSTGRESQL_BROKER_URL = "sqla+postgresql+psycopg://postgres@127.0.0.1:5432/test"
MYSQL_BROKER_URL = "sqla+mysql+pymysql://root@127.0.0.1:3306/test"
DEFAULT_BROKERS = ("sqlite", "redis")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test taking ``broker_url`` runs on SQLite and Redis, and on RabbitMQ too in
    modules that say ``BROKERS_ALSO = ("amqp",)``; ``CELERIAC_TEST_BROKERS=sqlite,amqp``
    picks the brokers for every test instead."""
    if "broker_url" not in metafunc.fixturenames or any(
            "broker_url" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return
    chosen = os.environ.get("CELERIAC_TEST_BROKERS")
    if chosen:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
    else:
        names = [*DEFAULT_BROKERS, *getattr(metafunc.module, "BROKERS_ALSO", ())]
    metafunc.parametrize("broker_url", names, indirect=True)


@pytest.fixture
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh broker for each test: SQLite, Redis (results on the same store), or
    RabbitMQ (results in Redis)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"
    if request.param == "amqp":
        pytest.importorskip("amqp") if not REQUIRE_SERVICES else None
        need_service("RabbitMQ", rabbitmq_answers())
        return RABBITMQ_URL
    if request.param == "postgresql":
        pytest.importorskip("psycopg") if not REQUIRE_SERVICES else None
        need_service("PostgreSQL", postgresql_answers())
        return POSTGRESQL_BROKER_URL
    if request.param == "mysql":
        pytest.importorskip("pymysql") if not REQUIRE_SERVICES else None
        need_service("MariaDB", mysql_answers())
        return MYSQL_BROKER_URL
    base = request.getfixturevalue("redis_server")
    # Not flushed: each test has its own queue names (see ``project``), so runs that
    # share this database on one machine leave each other alone.
    return f"{base}/13"


def backend_for(broker_url: str) -> str:
    """Where the project keeps results: on the broker's own store, or (RabbitMQ, SQL
    databases) in Redis."""
    if broker_url.startswith(("amqp", "sqla+postgresql", "sqla+mysql")):
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/13"
    return broker_url


@pytest.fixture
def project(tmp_path: Path, broker_url: str) -> Iterator[Path]:
    """A throw-away project with a ``proj`` app module that uses ``broker_url``."""
    source = (Path(__file__).parent / "integration" / "proj_template.py").read_text()
    source = source.replace('backend="BROKER_URL_HERE"', f'backend="{backend_for(broker_url)}"')
    source = source.replace("BROKER_URL_HERE", broker_url)
    queue = f"q-{unique()}"
    (tmp_path / "proj.py").write_text(source.replace("QUEUE_HERE", queue))
    yield tmp_path
    if broker_url.startswith("amqp"):
        delete_rabbitmq(queue, f"{queue}.dead")


def unique() -> str:
    return uuid.uuid4().hex[:8]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


@pytest.fixture
def proj(project: Path) -> Iterator[Any]:
    """The project's ``proj`` module, imported in the test process (the client side)."""
    module = load_proj(project)
    yield module
    module.app.close()
    sys.modules.pop("proj", None)


@pytest.fixture
def configure(project: Path) -> Iterator[Any]:
    """``configure(source="", **settings)``: append source and settings to the project's
    app module, then import it as the client (closed after the test)."""
    loaded: list[Any] = []

    def apply(source: str = "", **settings: Any) -> Any:
        with open(project / "proj.py", "a") as fh:
            fh.write(source)
            for name, value in settings.items():
                fh.write(f"\napp.conf.{name} = {value!r}\n")
        loaded.append(load_proj(project))
        return loaded[-1]

    yield apply
    for module in loaded:
        module.app.close()


# An append-only file synced on every write, as a production Redis that must not lose
# queued work keeps: what the server acknowledged survives its kill -9.
DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]


@pytest.fixture
def private_redis(redis_server: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a redis-server of the test's own: for tests that kill its clients'
    connections (the shared one's clients are other tests' workers and monitors)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    workdir = tmp_path / "redis-data"
    workdir.mkdir()
    with private_redis_server(binary, workdir, ["--port", str(port), "--bind", "127.0.0.1"],
                              lambda: redis.Redis.from_url(url, socket_timeout=1)):
        yield url


@pytest.fixture
def durable_redis(redis_server: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private redis-server: ``url``, its process ``proc``, and ``restart()``, a
    context manager that starts it again on the same port and files."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH")
    port = free_port()
    workdir = tmp_path / "redis-data"
    workdir.mkdir()
    url = f"redis://127.0.0.1:{port}/0"

    def probe() -> Any:
        return redis.Redis.from_url(url, socket_timeout=1)

    options = ["--port", str(port), "--bind", "127.0.0.1", *DURABLE]
    with private_redis_server(binary, workdir, options, probe) as proc:
        yield {"url": url, "proc": proc, "restart": lambda: private_redis_server(
            binary, workdir, options, probe)}
