"""A real worker's logs: print() in tasks, task loggers, formats, hijack, per-process log
files, and worker_prefetch_multiplier = 0."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from celeriac.contrib.testing import WorkerProcess

TASKS = '''
import sys
import threading

from celeriac.utils.log import get_task_logger

task_logger = get_task_logger("proj.logging_tasks")


@app.task
def shout(text):
    print(text)
    print("err", text, file=sys.stderr)
    return text


@app.task
async def shout_async(text):
    print(text)
    return text


@app.task
def log_it(text):
    task_logger.warning("inside %s", text)
    # a thread started by the task runs outside it: '???' as in Celery
    thread = threading.Thread(target=task_logger.warning, args=("outside " + text,))
    thread.start()
    thread.join()
    return text
'''

#: easy to match: level, logger, process and message, nothing else
PLAIN = "%(levelname)s|%(name)s|%(processName)s|%(message)s"


@pytest.fixture
def configure(configure: Any) -> Any:
    """The project's app with this module's tasks, plus ``source`` and settings."""
    return lambda source="", **settings: configure(TASKS + source, **settings)


class FileWorker(WorkerProcess):
    """A worker logging to files: its output is stdout/stderr plus those files."""

    def __init__(self, *args: Any, files: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = files

    @property
    def output(self) -> str:
        text = super().output
        for path in sorted(self.files.glob("*.log")):
            text += path.read_text(errors="replace")
        return text


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_print_in_a_task_goes_to_the_log_at_worker_redirect_stdouts_level(
        configure: Any, project: Path, pool: str) -> None:
    proj = configure(worker_log_format=PLAIN, worker_redirect_stdouts_level="ERROR")
    task = proj.shout_async if pool == "asyncio" else proj.shout
    with WorkerProcess("proj", cwd=project, args=["-P", pool, "-c", "1"]) as worker:
        assert task.delay(f"printed-by-{pool}").get(timeout=30) == f"printed-by-{pool}"
        process = "ForkPoolWorker-1" if pool == "prefork" else "MainProcess"
        line = f"ERROR|celeriac.redirected|{process}|printed-by-{pool}"
        assert wait_until(lambda: line in worker.output.splitlines(), 10), worker.output
        if pool != "asyncio":  # stderr too, as Celery redirects both
            err = f"ERROR|celeriac.redirected|{process}|err printed-by-{pool}"
            assert err in worker.output.splitlines(), worker.output


def test_worker_redirect_stdouts_false_leaves_print_alone(configure: Any,
                                                          project: Path) -> None:
    proj = configure(worker_log_format=PLAIN, worker_redirect_stdouts=False)
    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "1"]) as worker:
        assert proj.shout.delay("raw-print").get(timeout=30) == "raw-print"
        assert wait_until(lambda: "raw-print" in worker.output.splitlines(), 10), worker.output
        assert "celeriac.redirected" not in worker.output


def test_task_log_lines_carry_the_task_name_and_id(configure: Any, project: Path) -> None:
    proj = configure(worker_log_format="ROOT " + PLAIN,
                     worker_task_log_format="TASK %(task_name)s %(task_id)s %(message)s")
    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "1"]) as worker:
        result = proj.log_it.delay("hello")
        assert result.get(timeout=30) == "hello"
        assert wait_until(lambda: "outside hello" in worker.output, 10), worker.output
        worker.stop()
        lines = worker.output.splitlines()
    assert f"TASK proj.log_it {result.id} inside hello" in lines
    assert "TASK ??? ??? outside hello" in lines
    assert [line for line in lines if line.startswith("ROOT WARNING|celeriac.worker|")
            and line.endswith(" ready.")]


HIJACK_OFF = '''
import logging as _logging

_mine = _logging.StreamHandler()
_mine.setFormatter(_logging.Formatter("USER %(name)s %(message)s"))
_logging.getLogger().addHandler(_mine)
'''


@pytest.mark.parametrize("hijack", [False, True])
def test_worker_hijack_root_logger(configure: Any, project: Path, hijack: bool) -> None:
    proj = configure(HIJACK_OFF, worker_hijack_root_logger=hijack, worker_log_format=PLAIN)
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "1"]) as worker:
        assert proj.add.delay(1, 2).get(timeout=30) == 3
        worker.stop()
        ready = [line for line in worker.output.splitlines() if line.endswith(" ready.")]
    if hijack:  # the user's handler was replaced by the worker's
        assert ready and all(line.startswith("WARNING|celeriac.worker|") for line in ready)
    else:  # the user's handler was kept, and the worker added none beside it
        assert ready and all(line.startswith("USER celeriac.worker ") for line in ready)


def test_logfile_expands_the_node_name_and_gives_each_pool_process_its_own(
        configure: Any, project: Path, tmp_path: Path) -> None:
    proj = configure(worker_log_format=PLAIN)
    logs = tmp_path / "logs"
    logs.mkdir()
    with FileWorker("proj", cwd=project, files=logs,
                    args=["-P", "prefork", "-c", "2", "-n", "w1@%h",
                          "--logfile", str(logs / "%n%I.log")]) as worker:
        texts = [f"file-{i}" for i in range(6)]
        assert [proj.shout.delay(t).get(timeout=30) for t in texts] == texts
        assert wait_until(lambda: all(t in worker.output for t in texts), 10)
        assert wait_until(lambda: (logs / "w1-2.log").exists(), 10)
    assert sorted(p.name for p in logs.iterdir()) == ["w1-1.log", "w1-2.log", "w1.log"]
    main = (logs / "w1.log").read_text()
    assert re.search(r"^WARNING\|celeriac\.worker\|MainProcess\|w1@\S+ ready\.$", main, re.M)
    children = (logs / "w1-1.log").read_text() + (logs / "w1-2.log").read_text()
    for text in texts:  # printed in a pool process: in that process's own file
        assert re.search(rf"^WARNING\|celeriac\.redirected\|ForkPoolWorker-\d\|{text}$",
                         children, re.M), children
        assert text not in main
    for index in (1, 2):
        other = f"ForkPoolWorker-{3 - index}"
        assert other not in (logs / f"w1-{index}.log").read_text()


def test_worker_log_color_is_never_used_off_a_terminal(configure: Any, project: Path) -> None:
    proj = configure(worker_log_color=True)
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]) as worker:
        assert proj.add.delay(2, 2).get(timeout=30) == 4
        worker.stop()
        output = worker.output
    assert " ready." in output and "\033[" not in output


def test_worker_prefetch_multiplier_zero_drains_the_queue(configure: Any,
                                                          project: Path) -> None:
    proj = configure(worker_prefetch_multiplier=0)
    with WorkerProcess("proj", cwd=project, args=["-P", "prefork", "-c", "2"]) as worker:
        results = [proj.add.delay(i, i) for i in range(40)]
        assert [r.get(timeout=60) for r in results] == [2 * i for i in range(40)]
        worker.stop()
        output = worker.output
    assert "prefetch:     1000 per consumer" in output
    assert "IgnoredSettingWarning" not in output
