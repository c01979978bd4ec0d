"""The worker process: start-up in a written order, shutdown in reverse.

Start: import the app's modules, set up logging, print the banner, start the pool,
announce readiness. Stop (SIGTERM/SIGINT): stop fetching, let running tasks finish, give
unstarted messages back. A second signal (or SIGQUIT) stops cold.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

from .. import __version__, signals
from ..exceptions import ImproperlyConfigured
from .pools import POOLS, Pool, create_pool

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def format_hostname(template: str) -> str:
    """Expand ``%h`` (host name), ``%n`` (its first label) and ``%d`` (the domain)."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    return template.replace("%h", host).replace("%n", name).replace("%d", domain).replace(
        "%%", "%")


def setup_logging(loglevel: str | int, logfile: str | None = None) -> None:
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ImproperlyConfigured(f"unknown log level {loglevel!r}")
    if signals.setup_logging.receivers:
        signals.setup_logging.send(sender=None, loglevel=level, logfile=logfile,
                                   format=LOG_FORMAT, colorize=False)
        return
    handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, loglevel=level, logfile=logfile,
                                    format=LOG_FORMAT, colorize=False)
    signals.after_setup_task_logger.send(sender=None, logger=logging.getLogger("celeriac.task"),
                                         loglevel=level, logfile=logfile, format=LOG_FORMAT,
                                         colorize=False)


class Worker:
    """A worker node: a pool of consumers serving ``queues`` for ``app``."""

    def __init__(self, app: Celery, hostname: str | None = None,
                 concurrency: int | None = None, pool: str | None = None,
                 queues: Sequence[str] | None = None,
                 exclude_queues: Sequence[str] | None = None, loglevel: str = "WARNING",
                 logfile: str | None = None, max_tasks_per_child: int | None = None,
                 prefetch_multiplier: int | None = None, send_events: bool | None = None,
                 banner: bool = True) -> None:
        conf = app.conf
        self.app = app
        self.hostname = format_hostname(hostname or "celeriac@%h")
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        self.pool_name = pool or conf.worker_pool or "prefork"
        if self.pool_name not in POOLS:
            raise ImproperlyConfigured(
                f"unknown pool {self.pool_name!r}; choose one of: {', '.join(POOLS)}")
        self.loglevel = loglevel
        self.logfile = logfile
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        multiplier = (prefetch_multiplier if prefetch_multiplier is not None
                      else conf.worker_prefetch_multiplier)
        self.prefetch = max(1, int(multiplier or 1))
        self.async_limit = int(conf.worker_async_concurrency or 100)
        self.send_events = bool(send_events if send_events is not None
                                else conf.worker_send_task_events)
        self.banner = banner
        self.queues = self._select_queues(queues, exclude_queues)
        self.pool: Pool | None = None
        self._signals = 0

    def _select_queues(self, queues: Sequence[str] | None,
                       exclude: Sequence[str] | None) -> list[str]:
        conf = self.app.conf
        if queues:
            selected = list(dict.fromkeys(queues))
        elif conf.task_queues:
            selected = [getattr(q, "name", q) for q in conf.task_queues]
        else:
            selected = [conf.task_default_queue]
        if exclude:
            selected = [q for q in selected if q not in set(exclude)]
        if not selected:
            raise ImproperlyConfigured("no queues left to consume: check -Q and -X")
        return selected

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> int:
        """Run until shut down; returns the process exit code."""
        app = self.app
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf,
                                  options={})
        setup_logging(self.loglevel, self.logfile)
        app.finalize()
        broker = app.connect_broker()  # fails early on a bad URL or a missing extra
        if not broker.shared_between_processes and self.pool_name == "prefork":
            logger.warning("%s cannot be shared between processes; using the threads pool",
                           broker.safe_url())
            self.pool_name = "threads"
        broker.close()
        signals.worker_init.send(sender=self)
        if self.banner:
            print(self.render_banner(), flush=True)
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        self._install_signal_handlers()
        self.pool = create_pool(self)
        self.pool.start()
        signals.worker_ready.send(sender=self)
        logger.warning("%s ready.", self.hostname)
        try:
            while self.pool.alive():
                self.pool.supervise()
                time.sleep(0.1)
        finally:
            signals.worker_shutdown.send(sender=self)
            app.close()
        return 1 if self.pool.failed else 0

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, lambda *_: self._cold())

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.warning("worker: Warm shutdown (%s): finishing running tasks, "
                           "returning the rest; signal again to stop now",
                           signal.Signals(signum).name)
            signals.worker_shutting_down.send(sender=self.hostname, sig=signum, how="Warm",
                                              exitcode=0)
            if self.pool is not None:
                self.pool.warm_stop()
        else:
            self._cold()

    def _cold(self) -> None:
        logger.warning("worker: Cold shutdown: stopping running tasks")
        if self.pool is not None:
            self.pool.cold_stop()

    # -- the banner ----------------------------------------------------------------------
    def render_banner(self) -> str:
        app = self.app
        broker = app.connect_broker()
        from ..utils.urls import mask_password

        tasks = [n for n in app.tasks.names() if not n.startswith("celery.")]
        lines = [
            f"celeriac {__version__} · {self.hostname}",
            f"  {platform.platform()} · Python {platform.python_version()}",
            "",
            f"  app:          {app.main or '__main__'} ({type(app).__name__} at {id(app):#x})",
            f"  transport:    {broker.safe_url()}",
            f"  results:      {mask_password(app.result_backend_url)}",
            f"  concurrency:  {self.concurrency} ({self.pool_name})",
            f"  prefetch:     {self.prefetch} per consumer",
            f"  task events:  {'ON' if self.send_events else 'OFF (enable -E to monitor)'}",
            "",
            "[queues]",
            *[f"  . {q}" for q in self.queues],
            "",
            "[tasks]",
            *([f"  . {n}" for n in tasks] or ["  (none registered: check -A and include)"]),
        ]
        broker.close()
        return "\n".join(lines)
