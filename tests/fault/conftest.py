"""Fixtures of the fault tests: a Redis of the test's own that can be killed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, private_redis_server

# An append-only file synced on every write, as a production Redis that must not lose
# queued work keeps: what the server acknowledged survives its kill -9.
DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]


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
