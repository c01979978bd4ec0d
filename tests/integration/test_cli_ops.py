"""``celeriac help``, ``report`` and ``shell``, and the program's options after the
command name (``celeriac worker -A proj``), as Celery's users type them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import wait_until


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    """None of these depends on the broker: SQLite only."""
    return f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"


def celeriac(cwd: Path, *args: str, stdin: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def test_help_lists_the_commands(tmp_path: Path) -> None:
    done = celeriac(tmp_path, "help")
    assert done.returncode == 0, done.stderr
    for command in ("worker", "beat", "multi", "call", "result", "purge", "shell", "report",
                    "help"):
        assert f"\n  {command} " in done.stdout, command


def test_report_masks_every_password(configure: Any, project: Path) -> None:
    configure(broker_transport_options={"sentinel_kwargs": {"password": "hunter2"}},
              task_default_rate_limit="10/s")
    done = celeriac(project, "-A", "proj", "report", "-b",
                    "redis://user:s3cret@127.0.0.1:1/0?password=qs3cret",
                    "--result-backend", "redis://:pw2secret@127.0.0.1:1/1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for secret in ("s3cret", "pw2secret", "hunter2"):
        assert secret not in out, out
    assert out.startswith("software -> celeriac:") and " py:3." in out
    assert "platform -> system:" in out and "app      -> proj" in out
    assert "broker   -> redis://user:**@127.0.0.1:1/0" in out
    assert "results:redis://:**@127.0.0.1:1/1" in out
    assert "task_default_rate_limit: '10/s'" in out  # the app's own settings
    assert "worker_concurrency" not in out  # not the defaults


SCRIPT = """\
print("tasks", add.name, mul.name, celery is app)
print("canvas", (add.s(1, 1) | mul.s(3)).apply().get(), isinstance(group, type))
print("names", all(n in globals() for n in ("Task", "chord", "group", "chain", "signature")))
"""


@pytest.mark.parametrize("flags", [["--python"], []])
def test_shell_runs_piped_commands_with_the_app_preloaded(project: Path,
                                                          flags: list[str]) -> None:
    if not flags:
        pytest.importorskip("IPython")  # the default when installed
    done = celeriac(project, "-A", "proj", "shell", *flags, stdin=SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tasks proj.add proj.mul True" in done.stdout
    assert "canvas 6 True" in done.stdout
    assert "names True" in done.stdout


def test_worker_with_the_app_after_the_command(proj: Any, project: Path) -> None:
    log = project / "worker.out"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "worker", "-A", "proj", "-l", "info",
             "-P", "threads", "-c", "1"], cwd=project, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(lambda: " ready." in log.read_text(), 30), log.read_text()
        assert "app:          proj" in log.read_text()
        sent = celeriac(project, "call", "proj.add", "-a", "[2, 5]", "--wait", "-A", "proj")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.splitlines()[-1] == "7"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait()
