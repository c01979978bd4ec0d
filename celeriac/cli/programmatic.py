"""celeriac's program from Python: ``app.start()``, ``app.worker_main()``, ``app.Worker``.

The CLI is a layer above the app, so ``Celery`` reaches this module by name when one of
these is called (``celeriac.app._program``) instead of importing it.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Sequence

import click

from ..worker.main import Worker as _Worker

if TYPE_CHECKING:
    from ..app import Celery


def start(app: Celery, argv: Sequence[str] | None = None) -> int:
    """Run ``celeriac`` with ``app`` as its ``-A`` (an ``-A`` in ``argv`` wins).

    Args:
        app: the app the commands act on.
        argv: the command line after the program's name (``["worker", "-l", "info"]``);
            default ``sys.argv[1:]``, so that ``python tasks.py worker`` runs a worker
            when ``tasks.py`` ends with ``app.start()``. (Celery passes ``sys.argv``
            whole, where click reads the script's name as the command.)

    Returns:
        The command's exit code (a worker's, once it stopped).

    Raises:
        SystemExit: a usage error or a failed command, after its message was printed,
            with the code ``celeriac`` exits with.
    """
    from .main import cli

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="celeriac", standalone_mode=False, obj=app)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from exc
    except click.Abort:
        click.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    except SystemExit as exc:  # the worker command exits with its worker's code
        return _exit_code(exc.code)
    return 0


def worker_main(app: Celery, argv: Sequence[str] | None = None) -> int:
    """``start(app, argv)`` for a command line that runs the worker.

    Raises:
        ValueError: ``argv`` has no ``worker`` command (``start`` runs the others).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "worker" not in args:
        raise ValueError("app.worker_main() needs the worker command in argv (for example "
                         "['worker', '-l', 'info']); app.start() runs the other commands")
    return start(app, args)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class AppWorker(_Worker):
    """What ``app.Worker(...)`` makes: Celery's embeddable worker, ``start()`` blocking
    until it is shut down (SIGTERM/SIGINT, or remote control) and leaving the exit code
    in ``exitcode``, with the keyword names Celery's takes.

    Args:
        app: the app (default: the one ``app.Worker`` belongs to).
        hostname: node name (``-n``); ``%h``, ``%n``, ``%d`` expand.
        concurrency, loglevel, logfile, max_tasks_per_child, prefetch_multiplier,
            autoscale, beat, schedule_filename, scheduler, heartbeat_interval: as the
            ``celeriac worker`` options of the same names.
        pool, pool_cls: the pool by name (``prefork``, ``threads``, ``solo`` ...).
        queues, exclude_queues: a list or a comma-separated string (``-Q``, ``-X``).
        include: more modules to import at start-up (added to ``include``).
        send_events, task_events: ``-E``.
        quiet: no banner.
        purge: delete the waiting messages of the worker's queues before it starts.
        pidfile: take this pidfile (``%n`` ... expand) while the worker runs.
        redirect_stdouts, redirect_stdouts_level: override ``worker_redirect_stdouts``
            and ``worker_redirect_stdouts_level``.
        without_heartbeat: no worker-online/heartbeat/offline events.
        without_gossip, without_mingle: accepted as Celery's; celeriac has neither.

    Any other keyword is a ``TypeError`` that names it.
    """

    bound_app: Celery | None = None
    exitcode: int | None = None

    def __init__(self, app: Celery | None = None, *, hostname: str | None = None,
                 concurrency: int | None = None, pool: str | None = None,
                 pool_cls: str | None = None, queues: Sequence[str] | str | None = None,
                 exclude_queues: Sequence[str] | str | None = None,
                 loglevel: str | int = "WARNING", logfile: str | None = None,
                 include: Sequence[str] | str | None = None,
                 max_tasks_per_child: int | None = None,
                 prefetch_multiplier: int | None = None, send_events: bool | None = None,
                 task_events: bool | None = None,
                 autoscale: str | Sequence[int] | None = None, beat: bool = False,
                 schedule_filename: str | None = None, scheduler: Any = None,
                 heartbeat_interval: float | None = None, quiet: bool = False,
                 purge: bool = False, pidfile: str | None = None,
                 redirect_stdouts: bool | None = None,
                 redirect_stdouts_level: str | None = None,
                 without_heartbeat: bool = False, without_gossip: bool = False,
                 without_mingle: bool = False) -> None:
        app = app or self.bound_app
        if app is None:
            raise TypeError("AppWorker needs an app: use app.Worker(...)")
        chosen_pool = pool or pool_cls
        if chosen_pool is not None and not isinstance(chosen_pool, str):
            raise TypeError(f"pool must be a pool's name (prefork, threads, solo ...), "
                            f"not {chosen_pool!r}")
        if include:
            app.conf.include = [*(app.conf.include or ()), *_names(include)]
        if isinstance(loglevel, int):
            loglevel = logging.getLevelName(loglevel)
        extra: dict[str, Any] = {"autoscale": autoscale} if autoscale else {}
        super().__init__(
            app, hostname=hostname, concurrency=concurrency, pool=chosen_pool,
            queues=_names(queues) or None, exclude_queues=_names(exclude_queues) or None,
            loglevel=str(loglevel).upper(), logfile=logfile,
            max_tasks_per_child=max_tasks_per_child, prefetch_multiplier=prefetch_multiplier,
            send_events=send_events if send_events is not None else task_events,
            banner=not quiet, beat=beat, schedule_filename=schedule_filename,
            scheduler=scheduler, heartbeat_interval=heartbeat_interval,
            worker_events=not without_heartbeat, **extra)
        if redirect_stdouts is not None:
            self.redirect_stdouts = redirect_stdouts
        if redirect_stdouts_level is not None:
            self.redirect_stdouts_level = redirect_stdouts_level
        self.purge = purge
        self.pidfile = pidfile

    def start(self) -> int:
        """Run until shut down; the exit code is returned and kept in ``exitcode``."""
        from ..utils.daemon import create_pidlock
        from ..utils.log import node_format

        lock = create_pidlock(node_format(self.pidfile, self.hostname)) if self.pidfile \
            else None
        try:
            if self.purge:
                self._purge()
            self.exitcode = super().start()
        finally:
            if lock is not None:
                lock.release()
        return self.exitcode

    def _purge(self) -> None:
        broker = self.app.connect_broker()
        try:
            count = sum(broker.purge(name) for name in self.queues)
        finally:
            broker.close()
        if count:
            print(f"purge: Erased {count} message(s) from {', '.join(self.queues)}.",
                  flush=True)


def _names(value: Sequence[str] | str | None) -> list[str]:
    """A list of names, or Celery's comma-separated string of them."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item.strip()]


def worker_class(app: Celery) -> type[AppWorker]:
    """``AppWorker`` bound to ``app``: what ``app.Worker`` is."""
    return type("Worker", (AppWorker,), {"bound_app": app, "__module__": __name__})
