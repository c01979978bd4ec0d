"""Workers started from Python as Celery's are: ``app.start()`` as a tasks module's
``__main__``, ``app.worker_main(argv)``, ``app.Worker(...).start()``; and
``celeriac shell`` falling back to the plain console without IPython."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from celeriac import Celery

TASKS = '''
import sys

from celeriac import Celery, current_app, current_task

app = Celery("startproj", broker="sqlite:///{broker}")


@app.task
def add(x, y):
    return x + y


@app.task
def whoami():
    # Celery's proxies, inside a task run by the worker
    return [current_app.main, current_task.name, current_task.request.id]


if __name__ == "__main__":
    {main}
'''


class Script:
    """``python <script> ...`` in a directory: its output, and a stop like an operator's."""

    def __init__(self, where: Path, name: str, args: list[str]) -> None:
        self.log = where / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, name, *args], cwd=where, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output:
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class Project:
    """``startproj.py`` in a directory, run as scripts; a client app on its broker."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.broker = where / "broker.sqlite3"
        self.client = Celery("startproj_client", broker=f"sqlite:///{self.broker}",
                             set_as_current=False)
        self.started: list[Script] = []

    def run(self, main: str, args: Sequence[str] = ()) -> Script:
        (self.where / "startproj.py").write_text(TASKS.format(broker=self.broker, main=main))
        script = Script(self.where, "startproj.py", list(args))
        self.started.append(script)
        return script


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    for script in proj.started:
        script.kill()
    proj.client.close()


def test_app_start_as_main_runs_the_worker_command(project: Project) -> None:
    script = project.run('print("exit code", app.start())',
                         ["worker", "-P", "threads", "-c", "2", "-l", "info"])
    script.wait_ready()
    client = project.client
    assert client.send_task("startproj.add", (2, 3)).get(timeout=20) == 5
    result = client.send_task("startproj.whoami")
    assert result.get(timeout=20) == ["startproj", "startproj.whoami", result.id]
    assert script.stop() == 0
    assert "exit code 0" in script.output  # app.start() returned once the worker stopped


def test_worker_main_runs_a_worker_and_returns_its_exit_code(project: Project) -> None:
    script = project.run(
        'print("exit code", app.worker_main(["worker", "-P", "solo", "-l", "info"]))')
    script.wait_ready()
    assert project.client.send_task("startproj.add", (20, 22)).get(timeout=20) == 42
    assert script.stop() == 0
    assert "exit code 0" in script.output


def test_app_worker_start_purges_then_serves(project: Project) -> None:
    stale = project.client.send_task("startproj.add", (100, 100))  # waiting before start
    script = project.run(
        'w = app.Worker(pool="threads", concurrency=2, loglevel="INFO", purge=True)\n'
        '    print("exit code", w.start(), w.exitcode)')
    script.wait_ready()
    assert "purge: Erased 1 message(s) from celery." in script.output
    assert project.client.send_task("startproj.add", (1, 2)).get(timeout=20) == 3
    assert stale.state == "PENDING"  # purged, never run
    assert script.stop() == 0
    assert "exit code 0 0" in script.output


def test_shell_without_ipython_is_the_plain_console(tmp_path: Path) -> None:
    broker = tmp_path / "broker.sqlite3"
    (tmp_path / "startproj.py").write_text(TASKS.format(broker=broker, main="pass"))
    # an IPython that cannot be imported, first on the path
    (tmp_path / "no_ipython" / "IPython").mkdir(parents=True)
    (tmp_path / "no_ipython" / "IPython" / "__init__.py").write_text(
        "raise ImportError('IPython is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "no_ipython")}
    script = "print('shell', add.name, app.main, add.apply((2, 2)).get())\n"
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "startproj", "shell"],
                          cwd=tmp_path, input=script, capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "shell startproj.add startproj 4" in done.stdout
    assert "names preloaded:" in done.stderr  # the plain console's banner
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "startproj", "shell",
                           "--ipython"], cwd=tmp_path, input="", capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 2 and "IPython is not installed" in done.stderr
