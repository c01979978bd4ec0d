"""Workers for tests: a real worker process, or an embedded one in a thread of the test.

    with WorkerProcess("tasks", cwd=project_dir, args=["-P", "threads"]) as worker:
        assert add.delay(2, 2).get(timeout=10) == 4
    # leaving the block sends SIGTERM (a warm shutdown) and waits

    with start_worker(app):             # Celery's celery.contrib.testing.worker.start_worker
        assert add.delay(2, 2).get(timeout=10) == 4

``TestApp`` and ``setup_default_app`` make the app the pytest plugin
(``celeriac.contrib.pytest``) hands to tests, as Celery's ``celery.contrib.testing.app``.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .. import _state, signals
from ..worker.main import Worker

if TYPE_CHECKING:
    from ..app import Celery


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


# -- an embedded worker ------------------------------------------------------------------------
#: the embedded worker's log level, as Celery's (``WORKER_LOGLEVEL``, default error)
WORKER_LOGLEVEL = os.environ.get("WORKER_LOGLEVEL", "error")
#: pools that run in the test's own process, on threads
EMBEDDED_POOLS = ("solo", "threads", "asyncio")
#: Celery's signals of the embedded worker: ``test_worker_starting`` (sender: the app),
#: ``test_worker_started`` (the app; ``worker``, ``consumer``: its pool),
#: ``test_worker_stopped`` (the app; ``worker``)
test_worker_starting = signals.Signal("test_worker_starting")
test_worker_started = signals.Signal("test_worker_started")
test_worker_stopped = signals.Signal("test_worker_stopped")


class _QuietLogging:
    """Stands in for the worker's logging set-up: the test runner owns logging (pytest
    captures celeriac's records through the root logger), so nothing is changed."""

    custom = True
    per_process = False
    logfile: str | None = None

    def setup(self, index: int | None = None) -> bool:
        return True  # "set up by someone else": the worker adds no handler either


class TestWorker(Worker):
    """A worker that runs in a thread of the test process and stops when asked.

    Signal handlers belong to the main thread, which is the test's: this worker installs
    none and is stopped with ``request_stop`` instead. Tasks are looked up when a
    message comes, so a task defined after the worker started is served too.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, app: Celery, *, enable_logging: bool = False, **options: Any) -> None:
        super().__init__(app, **options)
        if not enable_logging:
            self.logging = _QuietLogging()  # type: ignore[assignment]
        self.ready = threading.Event()
        self.failure: str | None = None
        self.exit_code: int | None = None

    def _install_signal_handlers(self) -> None:
        """None: only the main thread may install them, and it is the test's."""

    def _fatal(self, message: str) -> None:
        self.failure = message
        super()._fatal(message)

    def reload(self) -> None:
        """Celery's ``WorkController.reload``: nothing to do here, since the embedded pools
        find tasks registered after the start by name when their message comes."""

    def run_in_thread(self) -> None:
        def on_ready(sender: Any = None, **_: Any) -> None:
            if sender is self:
                self.ready.set()

        signals.worker_ready.connect(on_ready)
        try:
            self.exit_code = self.start()
        finally:
            signals.worker_ready.disconnect(on_ready)
            self.ready.set()  # wake whoever waits, ready or not


def _anon_hostname() -> str:
    return f"gen{os.getpid()}@{socket.gethostname()}"


def _ping() -> str:
    return "pong"


@contextmanager
def start_worker(app: Celery, concurrency: int = 1, pool: str = "solo",
                 loglevel: str | int = WORKER_LOGLEVEL, logfile: str | None = None,
                 perform_ping_check: bool = True, ping_task_timeout: float = 10.0,
                 shutdown_timeout: float = 10.0, **kwargs: Any) -> Iterator[TestWorker]:
    """Run a worker for ``app`` in a thread of this process while the block runs.

    Celery's ``celery.contrib.testing.worker.start_worker``: it yields once the worker is
    ready and (``perform_ping_check``) has answered the ``celery.ping`` task; leaving the
    block stops it warmly and waits up to ``shutdown_timeout`` seconds.

    Args:
        app: the app to serve (made the current app, as Celery does).
        concurrency: threads of the ``threads`` pool.
        pool: ``solo`` (default), ``threads`` or ``asyncio``: pools that run in threads.
        loglevel: the worker's level when it sets up logging (``enable_logging=True``).
        **kwargs: ``Worker`` options (``queues``, ``hostname``, ``prefetch_multiplier`` ...),
            ``without_heartbeat`` (default True: no worker events) and
            ``enable_logging`` (default: the app's ``celery_enable_logging``).

    Raises:
        RuntimeError: the worker did not start (the message says why) or did not stop.
    """
    if pool not in EMBEDDED_POOLS:
        raise ValueError(f"start_worker runs the worker in a thread of this process: pool "
                         f"must be one of {', '.join(EMBEDDED_POOLS)}, not {pool!r} (a "
                         "prefork worker is a process of its own: use WorkerProcess)")
    test_worker_starting.send(sender=app)
    app.set_current()
    if perform_ping_check and "celery.ping" not in app.tasks:
        app.task(name="celery.ping")(_ping)
    without_heartbeat = bool(kwargs.pop("without_heartbeat", True))
    enable_logging = bool(kwargs.pop("enable_logging",
                                     getattr(app, "_celeriac_test_logging", False)))
    worker = TestWorker(app, enable_logging=enable_logging, concurrency=concurrency,
                        pool=pool, loglevel=str(loglevel), logfile=logfile, banner=False,
                        hostname=kwargs.pop("hostname", None) or _anon_hostname(),
                        worker_events=not without_heartbeat, **kwargs)
    thread = threading.Thread(target=worker.run_in_thread, name="celeriac-test-worker",
                              daemon=True)
    thread.start()
    worker.ready.wait()
    try:
        if worker.exit_code is not None or not thread.is_alive():
            raise RuntimeError(f"the embedded worker did not start: {worker.failure or 'see the log'}")
        test_worker_started.send(sender=app, worker=worker, consumer=worker.pool)
        if perform_ping_check:
            # to a queue the worker reads, which need not be the default one
            answer = app.tasks["celery.ping"].apply_async(queue=worker.queues[0]).get(
                timeout=ping_task_timeout)
            assert answer == "pong", answer
        yield worker
    finally:
        worker.request_stop("the test is over")
        thread.join(shutdown_timeout)
        test_worker_stopped.send(sender=app, worker=worker)
        if thread.is_alive():
            raise RuntimeError("the embedded worker did not stop within "
                               f"{shutdown_timeout} s: raise shutdown_timeout if a task "
                               "takes longer")


# -- the test app ------------------------------------------------------------------------------
#: what the test app is configured with before the test's own ``celery_config``
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "broker_url": "memory://",
    "worker_hijack_root_logger": False,
    "worker_log_color": False,
    "accept_content": ["json"],
    "enable_utc": True,
    "timezone": "UTC",
}


def TestApp(name: str | None = None, config: Mapping[str, Any] | None = None,  # noqa: N802
            enable_logging: bool = False, set_as_current: bool = False,
            **parameters: Any) -> Celery:
    """A ``Celery`` app for tests: an in-process broker and results (``memory://``)
    unless ``config`` or ``parameters`` (``broker=``, ``backend=``) name others."""
    from ..app import Celery

    settings = copy.deepcopy(DEFAULT_TEST_CONFIG)
    settings.update(config or {})
    if parameters.get("broker") is not None:
        settings.pop("broker_url", None)
    app = Celery(name or "celery.tests", set_as_current=set_as_current, **parameters)
    app.conf.update(settings)
    app._celeriac_test_logging = enable_logging  # type: ignore[attr-defined]
    return app


class Trap:
    """Stands in for the current app: anything that uses it raises, which finds code that
    does not pass its app explicitly (``use_celery_app_trap``)."""

    def __getattr__(self, name: str) -> Any:
        if name in ("_is_coroutine", "__func__"):  # probed by inspect and mock
            return None
        raise RuntimeError("Test depends on current_app")


@contextmanager
def setup_default_app(app: Celery, use_trap: bool = False) -> Iterator[None]:
    """While the block runs, ``app`` is the test's app; the current app is put back (and
    ``app`` closed) after. With ``use_trap`` the current app is a ``Trap``."""
    previous = _state._default_app
    pinned = _state.pin_app(None)
    try:
        if use_trap:
            _state.set_default_app(Trap())  # type: ignore[arg-type]
        yield
    finally:
        _state._pinned_app.reset(pinned)
        _state._default_app = previous
        if app is not previous:
            app.close()
