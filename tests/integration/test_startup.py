"""A worker that cannot use its broker or result backend says so once and exits.

It never prints "ready" first, names which of the two failed with its URL masked and the
reason, and no password it was given appears anywhere in what it prints.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
from support import free_port, private_redis_server, require, wait_until

from celeriac.contrib.testing import WorkerProcess

pytestmark = pytest.mark.redis

PASSWORD = "right-horse-battery-staple"
WRONG = "wrong-horse-9d1e7c"


@pytest.fixture
def protected_redis(redis_server: str, tmp_path: Path) -> Iterator[int]:
    """A redis-server of the test's own that wants ``PASSWORD``; yields its port."""
    import redis

    binary = shutil.which("redis-server")
    require("redis-server is not on PATH", binary is not None)
    assert binary is not None
    port = free_port()
    workdir = tmp_path / "redis-data"
    workdir.mkdir()
    with private_redis_server(
            binary, workdir, ["--port", str(port), "--bind", "127.0.0.1",
                              "--requirepass", PASSWORD],
            lambda: redis.Redis(port=port, password=PASSWORD, socket_timeout=1)):
        yield port


def write_app(folder: Path, broker: str, backend: str, settings: str = "") -> None:
    (folder / "startproj.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('startproj', broker={broker!r}, backend={backend!r})\n"
        "app.conf.task_default_queue = 'startup-q'\n"
        f"{settings}\n"
        "@app.task\n"
        "def add(x, y):\n"
        "    return x + y\n")


def run_worker(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The worker's whole life, for one that is expected to give up by itself."""
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "startproj", "worker", "-c", "1", *args],
        cwd=folder, capture_output=True, text=True, timeout=timeout)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "Cannot start" in line]


@pytest.mark.parametrize("form", ["userinfo", "query", "transport-options"])
def test_wrong_broker_password_exits_with_one_clear_line(tmp_path: Path, protected_redis: int,
                                                         form: str) -> None:
    base = f"127.0.0.1:{protected_redis}/0"
    settings = ""
    if form == "userinfo":
        broker = f"redis://:{WRONG}@{base}"
    elif form == "query":
        broker = f"redis://{base}?password={WRONG}"
    else:
        broker = f"redis://{base}"
        settings = f"app.conf.broker_transport_options = {{'password': {WRONG!r}}}"
    write_app(tmp_path, broker, "disabled://", settings)
    done = run_worker(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "ready" not in output and "[tasks]" not in output  # no banner either
    (line,) = error_lines(output)
    assert f"broker redis://" in line and f"127.0.0.1:{protected_redis}/0" in line
    assert "authentication failed" in line and "password" in line
    assert "retries" not in line  # a wrong password does not heal by waiting
    assert WRONG not in output and PASSWORD not in output


def test_unreachable_result_backend_exits_after_the_retries(tmp_path: Path,
                                                            redis_server: str) -> None:
    closed = free_port()
    write_app(tmp_path, f"{redis_server}/13",
              f"redis://:{WRONG}@127.0.0.1:{closed}/0?password={WRONG}",
              "app.conf.broker_connection_max_retries = 2")
    done = run_worker(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "ready" not in output
    (line,) = error_lines(output)
    assert (f"result backend redis://:**@127.0.0.1:{closed}/0?password=**: connection "
            "refused") in line
    assert "after 2 retries" in line and "broker_connection_max_retries" in line
    assert WRONG not in output


def test_unknown_scheme_exits_and_lists_the_known_ones(tmp_path: Path) -> None:
    write_app(tmp_path, f"nosuch://user:{WRONG}@host/0", "disabled://")
    done = run_worker(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "ready" not in output
    (line,) = error_lines(output)
    assert "broker nosuch://user:**@host/0" in line and "redis" in line and "sqlite" in line
    assert WRONG not in output


def test_right_password_masked_in_banner_and_logs(tmp_path: Path, protected_redis: int) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{protected_redis}/0"
    write_app(tmp_path, f"redis://127.0.0.1:{protected_redis}/0?password={PASSWORD}", url)
    sys.path.insert(0, str(tmp_path))
    try:
        import startproj  # noqa: PLC0415 - the client side, from the project folder

        with WorkerProcess("startproj", cwd=tmp_path, args=["-c", "1"],
                           loglevel="DEBUG") as worker:
            assert startproj.add.delay(2, 3).get(timeout=20) == 5
            output = worker.output
        startproj.app.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("startproj", None)
    assert f"transport:    redis://127.0.0.1:{protected_redis}/0?password=**" in output
    assert f"results:      redis://:**@127.0.0.1:{protected_redis}/0" in output
    assert PASSWORD not in output


def test_waits_for_a_broker_that_starts_later(tmp_path: Path, redis_server: str) -> None:
    """Retry on start-up (the default): the worker becomes ready once the server is up."""
    import redis

    binary = shutil.which("redis-server")
    require("redis-server is not on PATH", binary is not None)
    assert binary is not None
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    write_app(tmp_path, url, url)
    worker = WorkerProcess("startproj", cwd=tmp_path, args=["-c", "1"], ready_timeout=60)
    starter = threading.Thread(target=worker.start)
    starter.start()
    try:
        assert wait_until(lambda: "retrying" in worker.output), worker.output
        assert "ready" not in worker.output
        workdir = tmp_path / "redis-data"
        workdir.mkdir()
        with private_redis_server(binary, workdir, ["--port", str(port), "--bind", "127.0.0.1"],
                                  lambda: redis.Redis(port=port, socket_timeout=1)):
            starter.join(60)
            assert " ready." in worker.output, worker.output
            assert "broker reachable again" in worker.output
            assert worker.stop() == 0
    finally:
        starter.join(60)
        worker.kill()


def test_a_broken_task_module_is_named_and_the_other_tasks_are_served(
        tmp_path: Path) -> None:
    # One module that raises on import (or lacks a dependency) must not take the
    # worker's other tasks down: it is named with its file, its tasks are unregistered.
    (tmp_path / "brokenproj.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('brokenproj', broker='sqlite:///{tmp_path / 'b.sqlite3'}',\n"
        "             include=['brokenproj_good', 'brokenproj_bad'])\n")
    (tmp_path / "brokenproj_good.py").write_text(
        "from brokenproj import app\n\n@app.task\ndef ok():\n    return 'ok'\n")
    (tmp_path / "brokenproj_bad.py").write_text("import a_module_that_is_not_installed\n")
    with WorkerProcess("brokenproj", cwd=tmp_path, args=["-P", "solo"]) as worker:
        done = subprocess.run(
            [sys.executable, "-c", "from brokenproj import app; "
             "print(app.send_task('brokenproj_good.ok').get(timeout=20))"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "ok", done.stderr
        assert "Task module 'brokenproj_bad'" in worker.output
        assert str(tmp_path / "brokenproj_bad.py") in worker.output
        assert "a_module_that_is_not_installed" in worker.output
