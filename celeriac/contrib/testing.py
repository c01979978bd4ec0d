"""Start a real worker process for a test, and stop it the way an operator would.

    with WorkerProcess("tasks", cwd=project_dir, args=["-P", "threads"]) as worker:
        assert add.delay(2, 2).get(timeout=10) == 4
    # leaving the block sends SIGTERM (a warm shutdown) and waits
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence


class WorkerProcess:
    """``celeriac -A <app> worker`` as a subprocess, ready once it logged ``ready.``.

    Args:
        app: the ``-A`` argument.
        cwd: directory to run in (where the app module lives).
        args: extra worker options (``-c 2``, ``-Q a,b`` ...).
        env: extra environment variables.
        ready_timeout: how long to wait for readiness before failing.
    """

    def __init__(self, app: str, cwd: str | os.PathLike[str] | None = None,
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 loglevel: str = "INFO", ready_timeout: float = 30.0) -> None:
        self.command = [sys.executable, "-m", "celeriac", "-A", app, "worker",
                        "-l", loglevel, *args]
        self.cwd = str(cwd) if cwd is not None else None
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="celeriac-worker-", suffix=".log",
                                                delete=False)

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if " ready." in self.output:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"worker not ready after {self.ready_timeout}s:\n{self.output}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        with open(self._log.name, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            time.sleep(0.05)
        return False

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM) and wait; kills the group if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, as a crash would."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()
            if exc_type is not None:
                # The worker's own account is what explains a failed test; pytest shows
                # stderr of a failed test and hides it otherwise.
                tail = self.output[-20000:]
                sys.stderr.write(f"--- worker log ({' '.join(self.command[2:])}) ---\n{tail}\n")
            os.unlink(self._log.name)
