"""``celeriac -A proj worker|beat|call|result|purge ...``: Celery's commands and options."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..exceptions import CeleriacError
from .app_loader import find_app
from .multi import multi

_NOT_USER_CODE = tuple(str(Path(p).resolve().parent) + os.sep
                      for p in (str(Path(__file__).parent), importlib.__file__))


def _own_frame(filename: str) -> bool:
    """A frame of celeriac's or of the import machinery, not of the user's code."""
    if filename.startswith("<frozen importlib"):
        return True
    try:
        return str(Path(filename).resolve()).startswith(_NOT_USER_CODE)
    except (OSError, ValueError):
        return False


def _user_frames(te: traceback.TracebackException) -> bool:
    """Drop from ``te`` (and its causes) the frames of the loader before the user's code
    and the import machinery's; say whether any of the user's frames are left."""
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if not _own_frame(f.filename)), len(frames))
    te.stack = traceback.StackSummary.from_list(
        [f for f in frames[first:] if not f.filename.startswith("<frozen importlib")])
    found = first < len(frames)
    for linked in (te.__cause__, te.__context__):
        if linked is not None:
            found = _user_frames(linked) or found
    return found


def describe_load_error(name: str, exc: BaseException) -> str:
    """Why ``-A name`` could not be loaded: one line, then the traceback of the user's
    code when the error came from there (a failing import inside the module, a typo)."""
    head = f"cannot load app {name!r}: {type(exc).__name__}: {exc}"
    te = traceback.TracebackException.from_exception(exc)
    if not _user_frames(te):
        return head
    return head + "\n" + "".join(te.format()).rstrip()


class _Context:
    def __init__(self, app_name: str | None, broker: str | None, result_backend: str | None,
                 workdir: str | None, config: str | None, given: Any = None) -> None:
        self.app_name = app_name
        self.broker = broker
        self.result_backend = result_backend
        self.workdir = workdir
        self.config = config
        self._given = given  # app.start()'s own app, used when there is no -A
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            if self.workdir:
                os.chdir(self.workdir)
            if self.app_name:
                try:
                    self._app = find_app(self.app_name)
                except Exception as exc:
                    raise click.UsageError(describe_load_error(self.app_name, exc)) from exc
            elif self._given is not None:
                self._app = self._given
            else:
                from ..app import Celery

                self._app = Celery("default")
            if self.config:
                self._app.config_from_object(self.config)
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.result_backend:
                self._app.conf.result_backend = self.result_backend
            if not self.app_name and self._given is None:
                self._say_default(self._app)
        return self._app

    @staticmethod
    def _say_default(app: Any) -> None:
        # Without -A every setting is a default: a producer and a worker started in
        # different directories would each use their own file and never meet.
        if app.conf.resolved_broker_url():
            return
        from ..utils.urls import sqlite_path

        path = os.path.abspath(sqlite_path(app.broker_url))
        state = "existing" if os.path.exists(path) else "new"
        click.echo(f"celeriac: no app given (-A), so using the default SQLite broker and "
                   f"result store {path} ({state} file); choose an app with -A <module> or "
                   f"CELERIAC_APP, or a broker with -b <url>", err=True)

    def error(self, exc: BaseException) -> click.ClickException:
        """A CLI error for ``exc`` with every credential of the app's settings masked."""
        message = str(exc)
        if self._app is not None:
            from ..utils.urls import redact
            from ..worker.main import app_secrets

            try:
                message = redact(message, app_secrets(self._app))
            except Exception:  # noqa: BLE001 - the message as it is, then
                pass
        return click.ClickException(message)


class _Group(click.Group):
    """The program's group: its options may also follow the command name, as in
    Celery 4 (``celeriac worker -A proj -l info``). They are moved in front of it before
    parsing, unless the command has an option of the same name. After a command that
    takes unknown options as they are (``multi``, ``inspect``) only whole words move
    (``-A proj``, ``--app=proj``): ``-A:w1`` is one of multi's per-node options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._own_options_first(ctx, args))

    def _own_options_first(self, ctx: click.Context, args: list[str]) -> list[str]:
        mine = _value_options([self])
        at = 0
        while at < len(args):  # find the command name, past the group's own options
            if args[at] == "--":
                at += 1
                break
            if not args[at].startswith("-"):
                break
            at += 2 if args[at] in mine else 1
        if at >= len(args):
            return args
        command = self.get_command(ctx, args[at])
        if command is None:
            return args
        raw = bool(command.context_settings.get("ignore_unknown_options"))
        commands = [command, *getattr(command, "commands", {}).values()]
        theirs = _value_options(commands)
        their_names = {o for c in commands for p in c.params if isinstance(p, click.Option)
                       for o in (*p.opts, *p.secondary_opts)}
        moved: list[str] = []
        kept: list[str] = []
        rest = args[at + 1:]
        pos = 0
        while pos < len(rest):
            arg = rest[pos]
            name = arg.partition("=")[0] if arg.startswith("--") else arg[:2]
            if arg == "--":
                kept.extend(rest[pos:])
                break
            if arg in theirs:
                kept.extend(rest[pos:pos + 2])
                pos += 2
                continue
            whole = arg != name  # --app=proj, -Aproj: the value is in the word
            if name in mine and name not in their_names and not (
                    raw and whole and not arg.startswith("--")):
                moved.extend(rest[pos:pos + (1 if whole else 2)])
                pos += 1 if whole else 2
                continue
            kept.append(arg)
            pos += 1
        return [*args[:at], *moved, args[at], *kept]


def _value_options(commands: list[click.Command]) -> set[str]:
    """The option names of ``commands`` that take a value (the next word)."""
    return {opt for command in commands for param in command.params
            if isinstance(param, click.Option) and not (param.is_flag or param.count)
            for opt in (*param.opts, *param.secondary_opts)}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_name", envvar="CELERIAC_APP",
              help="The app: module, module:attribute or package (finds 'app' or 'celery').")
@click.option("-b", "--broker", help="Broker URL (overrides the app's).")
@click.option("--result-backend", help="Result backend URL (overrides the app's).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory first.")
@click.option("--config", help="Module to load settings from (config_from_object).")
@click.version_option(__version__, prog_name="celeriac")
@click.pass_context
def cli(ctx: click.Context, app_name: str | None, broker: str | None,
        result_backend: str | None, workdir: str | None, config: str | None) -> None:
    """celeriac: a distributed task queue that speaks Celery."""
    # app.start() passes its app as the context object; an explicit -A still wins
    ctx.obj = _Context(app_name, broker, result_backend, workdir, config,
                       given=ctx.obj if app_name is None else None)


def _csv(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


class _LogLevel(click.Choice):
    """``-l``: a level name, in any case (``info`` is ``INFO``), as Celery's."""

    def __init__(self) -> None:
        super().__init__(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL"),
                         case_sensitive=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return str(super().convert(value, param, ctx)).upper()


LOG_LEVEL = _LogLevel()


#: where a detached worker logs when neither -f nor worker_logfile says (celery multi's)
DETACHED_WORKER_LOGFILE = "%n%I.log"
#: where a detached beat logs when neither -f nor beat_logfile says
DETACHED_BEAT_LOGFILE = "celerybeat.log"


def _daemon_options(command: Any) -> Any:
    """``--pidfile``, ``--uid``, ``--gid``, ``--umask``: defaults from the app's
    ``<program>_pidfile``... settings, as Celery 5.4's."""
    for option in reversed((
        click.option("--pidfile", help="Write the pid to this file (removed at exit); a "
                                       "live process in it refuses the start."),
        click.option("--uid", help="Run as this user (name or id)."),
        click.option("--gid", help="Run with this group (name or id)."),
        click.option("--umask", help="umask of the process, in octal (e.g. 022)."),
    )):
        command = option(command)
    return command


def _daemonize(obj: _Context, program: str, detach: bool, logfile: str | None,
               pidfile: str | None, uid: str | None, gid: str | None,
               umask: str | None) -> None:
    """Detach (returning in the daemon), or take the pidfile and switch user in this
    process; an error exits (a live pidfile with Celery's code, 73)."""
    from ..utils.daemon import DaemonError, DaemonOptions, detach as to_background
    from ..utils.daemon import foreground, parse_umask

    conf = obj.app.conf
    try:
        options = DaemonOptions(
            detach=detach, pidfile=pidfile, logfile=logfile,
            uid=uid or conf.get(f"{program}_uid"), gid=gid or conf.get(f"{program}_gid"),
            umask=parse_umask(umask if umask is not None else conf.get(f"{program}_umask")))
        if detach:
            to_background(options)
        else:
            foreground(options)
    except DaemonError as exc:
        error = obj.error(exc)
        error.exit_code = exc.exit_code
        raise error from exc


@cli.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True, type=LOG_LEVEL,
              help="Logging level.")
@click.option("-c", "--concurrency", type=int, help="Pool size (default: number of CPUs).")
@click.option("-P", "--pool",
              type=click.Choice(["prefork", "threads", "solo", "asyncio", "gevent", "eventlet"]),
              help="Pool implementation (default: prefork).")
@click.option("--autoscale", help="MAX,MIN: grow the pool up to MAX processes under load, "
                                  "shrink it to MIN when idle.")
@click.option("-Q", "--queues", multiple=True, help="Queues to consume, comma separated.")
@click.option("-X", "--exclude-queues", multiple=True, help="Queues not to consume.")
@click.option("-n", "--hostname", help="Node name; %h, %n and %d expand.")
@click.option("--max-tasks-per-child", type=int, help="Replace a pool process after N tasks.")
@click.option("--prefetch-multiplier", type=int,
              help="Messages fetched ahead per slot; 0 means no limit (batches of 1000).")
@click.option("-E", "--task-events", is_flag=True, default=None, help="Send task events.")
@click.option("-f", "--logfile",
              help="Log to this file instead of stderr. Expands %n (node name), %h (host), "
                   "%d (domain), %p (full node name), %i (pool process index, 0 in the "
                   "main process) and %I (-index, empty in the main process): with %i or "
                   "%I each pool process logs to a file of its own.")
@click.option("--without-heartbeat", is_flag=True, hidden=True)
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--heartbeat-interval", type=float,
              help="Seconds between worker-heartbeat events (default: worker_heartbeat_interval).")
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.option("-O", "optimization", hidden=True)
@click.option("-B", "--beat", "embed_beat", is_flag=True,
              help="Also run the beat service, in a thread of this process.")
@click.option("-s", "--schedule", "schedule_filename",
              help="Beat's state file (with -B; default: beat_schedule_filename).")
@click.option("-S", "--scheduler", help="Beat's scheduler class (with -B).")
@click.option("-D", "--detach", is_flag=True,
              help=f"Run in the background as a daemon (log file default: "
                   f"{DETACHED_WORKER_LOGFILE}).")
@_daemon_options
@click.pass_obj
def worker(obj: _Context, loglevel: str, concurrency: int | None, pool: str | None,
           autoscale: str | None, queues: tuple[str, ...], exclude_queues: tuple[str, ...],
           hostname: str | None, max_tasks_per_child: int | None,
           prefetch_multiplier: int | None, task_events: bool | None, logfile: str | None,
           embed_beat: bool, schedule_filename: str | None, scheduler: str | None,
           detach: bool, pidfile: str | None, uid: str | None, gid: str | None,
           umask: str | None, **ignored: Any) -> None:
    """Start a worker."""
    from ..utils.log import node_format
    from ..worker.main import Worker

    conf = obj.app.conf
    logfile = logfile or conf.worker_logfile or (DETACHED_WORKER_LOGFILE if detach else None)
    extra: dict[str, Any] = {}
    if autoscale:  # only when given: a Worker without an autoscaler takes no such argument
        extra["autoscale"] = autoscale
    # worker-online/heartbeat/offline: off with --without-heartbeat, as in Celery
    extra.update(heartbeat_interval=ignored.get("heartbeat_interval"),
                 worker_events=not ignored.get("without_heartbeat"))
    try:
        # With -B, beat runs in a thread started only once the pool processes exist
        # (a fork while it works could leave a pool process hung); the worker stops it,
        # saving its state and releasing its lock, when it stops.
        node = Worker(obj.app, hostname=hostname, concurrency=concurrency, pool=pool,
                      queues=_csv(queues) or None, exclude_queues=_csv(exclude_queues) or None,
                      loglevel=loglevel, logfile=logfile,
                      max_tasks_per_child=max_tasks_per_child,
                      prefetch_multiplier=prefetch_multiplier, send_events=task_events,
                      beat=embed_beat, schedule_filename=schedule_filename,
                      scheduler=scheduler, **extra)
        pidfile = pidfile or conf.worker_pidfile
        _daemonize(obj, "worker", detach, node.logfile,
                   node_format(pidfile, node.hostname) if pidfile else None, uid, gid, umask)
        sys.exit(node.start())
    except CeleriacError as exc:
        raise obj.error(exc) from exc


@cli.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True, type=LOG_LEVEL,
              help="Logging level.")
@click.option("-f", "--logfile", help="Log to this file instead of stderr.")
@click.option("-s", "--schedule", "schedule_filename",
              help="State file with last run times (default: beat_schedule_filename).")
@click.option("-S", "--scheduler",
              help="Scheduler: persistent (default), memory, sqlite, or module:Class.")
@click.option("--max-interval", type=float, help="Longest sleep between checks (seconds).")
@click.option("--lock-ttl", type=float, default=None,
              help="Seconds the leader lock lasts without renewal (default 15).")
@click.option("--no-lock", is_flag=True, help="Run without the leader lock (one beat only).")
@click.option("--detach", is_flag=True,
              help=f"Run in the background as a daemon (log file default: "
                   f"{DETACHED_BEAT_LOGFILE}).")
@_daemon_options
@click.pass_obj
def beat(obj: _Context, loglevel: str, logfile: str | None, schedule_filename: str | None,
         scheduler: str | None, max_interval: float | None, lock_ttl: float | None,
         no_lock: bool, detach: bool, pidfile: str | None, uid: str | None, gid: str | None,
         umask: str | None, **ignored: Any) -> None:
    """Start the periodic task scheduler (beat)."""
    import signal

    from ..beat import Beat
    from ..beat.service import DEFAULT_LOCK_TTL
    from ..worker.main import app_secrets, redact_all, setup_logging

    conf = obj.app.conf
    logfile = logfile or conf.beat_logfile or (DETACHED_BEAT_LOGFILE if detach else None)
    _daemonize(obj, "beat", detach, logfile, pidfile or conf.beat_pidfile, uid, gid, umask)
    try:  # worker_log_format, worker_hijack_root_logger ... apply to beat too, as in Celery
        setup_logging(loglevel, logfile, app=obj.app)
    except CeleriacError as exc:
        raise obj.error(exc) from exc
    redact_all(app_secrets(obj.app))
    try:
        service = Beat(obj.app, scheduler=scheduler, schedule_filename=schedule_filename,
                       max_interval=max_interval, lock=False if no_lock else None,
                       lock_ttl=lock_ttl or DEFAULT_LOCK_TTL)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: service.stop())
        service.run()
    except CeleriacError as exc:
        raise obj.error(exc) from exc


@cli.command()
@click.argument("name")
@click.option("-a", "--args", default="[]", help="Positional arguments, as JSON.")
@click.option("-k", "--kwargs", default="{}", help="Keyword arguments, as JSON.")
@click.option("--countdown", type=float)
@click.option("--queue")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.pass_obj
def call(obj: _Context, name: str, args: str, kwargs: str, countdown: float | None,
         queue: str | None, wait: bool) -> None:
    """Send a task by name and print its id."""
    try:
        result = obj.app.send_task(name, json.loads(args), json.loads(kwargs),
                                   countdown=countdown, queue=queue)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"arguments must be JSON: {exc}") from exc
    click.echo(result.id)
    if wait:
        click.echo(json.dumps(result.get(propagate=False), default=repr))


@cli.command()
@click.argument("task_id")
@click.option("-t", "--task", "task_name", help="Name of the task (for its own backend).")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Print the traceback instead of the result.")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for the result (default: as long as it takes).")
@click.pass_obj
def result(obj: _Context, task_id: str, task_name: str | None, show_traceback: bool,
           timeout: float | None) -> None:
    """Print the return value of a task (waiting for it), as Celery does."""
    app = obj.app
    if task_name:
        try:
            res = app.tasks[task_name].AsyncResult(task_id)
        except KeyError as exc:
            raise click.UsageError(f"no task named {task_name!r} in the app") from exc
    else:
        res = app.AsyncResult(task_id)
    if show_traceback:
        click.echo(res.traceback)
        return
    from ..exceptions import TimeoutError as ResultTimeout

    try:
        value = res.get(timeout=timeout)
    except ResultTimeout as exc:
        raise click.ClickException(f"no result for {task_id} within {timeout} s "
                                   f"(state {res.state})") from exc
    except Exception as exc:  # the task failed: its traceback, as the worker saw it
        tb = res.traceback
        click.echo(tb.rstrip() if tb else f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(value)


@cli.command()
@click.option("-Q", "--queues", multiple=True, help="Queues to purge (default: the app's).")
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@click.pass_obj
def purge(obj: _Context, queues: tuple[str, ...], force: bool) -> None:
    """Delete every waiting message from the queues."""
    app = obj.app
    names = _csv(queues) or [app.conf.task_default_queue]
    if not force:
        click.confirm(f"Delete every waiting message in {', '.join(names)}?", abort=True)
    broker = app.connect_broker()
    total = sum(broker.purge(name) for name in names)
    click.echo(f"Purged {total} message(s) from {len(names)} queue(s).")


@cli.command()
@click.pass_obj
def cleanup(obj: _Context) -> None:
    """Delete expired results now (what beat's daily celery.backend_cleanup does)."""
    deleted = obj.app.backend.cleanup()
    click.echo(f"Deleted {deleted} expired result(s).")


@cli.command("dead-letters")
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def dead_letters(obj: _Context, limit: int) -> None:
    """Show the messages set aside as unrunnable (newest first): id, queue, reason and
    the start of the message; the dashboard's queues page requeues or deletes by id."""
    from ..brokers import DeadLetters, require

    broker = require(obj.app.connect_broker(), DeadLetters, "keep messages set aside")
    for item in broker.dead_letters(limit):
        click.echo(f"{item.id}\t{item.queue}\t{item.reason}\t{item.payload[:200]}")


@cli.command("help")
@click.pass_context
def help_(ctx: click.Context) -> None:
    """Show the commands and the program's options."""
    parent = ctx.parent if ctx.parent is not None else ctx
    click.echo(parent.get_help())


def _masked(value: Any) -> Any:
    """``value`` with the credentials of every URL in it masked (lists, dicts too)."""
    from ..utils.urls import mask_password

    if isinstance(value, str):
        return mask_password(value) if "://" in value else value
    if isinstance(value, (list, tuple)):
        return type(value)(_masked(v) for v in value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def bug_report(app: Any) -> str:
    """What ``celeriac report`` prints: versions, platform, app, URLs, settings; every
    password and secret-looking setting masked."""
    import platform
    from importlib import metadata

    libraries = []
    for name in ("click", "redis", "msgpack", "pyyaml", "sqlalchemy", "tblib"):
        try:
            libraries.append(f"{name}:{metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    broker = _masked(app.broker_url)
    backend = _masked(app.result_backend_url)
    lines = [
        f"software -> celeriac:{__version__} py:{platform.python_version()} "
        f"{' '.join(libraries)}".rstrip(),
        f"platform -> system:{platform.system()} arch:{', '.join(platform.architecture())}",
        f"            kernel version:{platform.release()} "
        f"imp:{platform.python_implementation()}",
        f"app      -> {app.main or '__main__'}",
        f"settings -> transport:{str(broker).partition(':')[0]} results:{backend}",
        f"broker   -> {broker}",
        "",
    ]
    table = _masked(app.conf.table(with_defaults=False, censored=True))
    lines.extend(f"{key}: {value!r}" for key, value in sorted(table.items()))
    return "\n".join(lines)


@cli.command()
@click.pass_obj
def report(obj: _Context) -> None:
    """Show the versions, the platform and the app's settings, for a bug report."""
    click.echo(bug_report(obj.app))


@cli.command()
@click.option("-I", "--ipython", "use_ipython", is_flag=True, help="Use IPython.")
@click.option("--python", "plain", is_flag=True, help="Use the plain Python shell.")
@click.option("-T", "--without-tasks", is_flag=True, help="Do not put the tasks in the "
                                                            "namespace.")
@click.pass_obj
def shell(obj: _Context, use_ipython: bool, plain: bool, without_tasks: bool) -> None:
    """An interactive Python shell with the app, its tasks and the canvas preloaded."""
    import code

    from .. import Signature, Task, chain, chord, chunks, group, signature, xmap, xstarmap

    app = obj.app
    app.finalize()
    namespace: dict[str, Any] = {
        "app": app, "celery": app, "Task": Task, "chord": chord, "group": group,
        "chain": chain, "chunks": chunks, "xmap": xmap, "xstarmap": xstarmap,
        "signature": signature, "subtask": signature, "Signature": Signature,
    }
    if not without_tasks:  # by short name, as Celery's shell: add, not proj.add
        namespace.update({name.rpartition(".")[2]: task for name, task in app.tasks.items()
                          if not name.startswith(("celery.", "celeriac."))})
    if not plain:
        try:
            import IPython
        except ImportError:
            if use_ipython:
                raise click.UsageError("IPython is not installed") from None
        else:
            IPython.start_ipython(argv=[], user_ns=namespace)
            return
    banner = (f"Python {sys.version.split()[0]} (celeriac {__version__}), app "
              f"{app.main or '__main__'}: names preloaded: {', '.join(sorted(namespace))}")
    code.interact(banner=banner, local=namespace, exitmsg="")


cli.add_command(multi)

from . import control as _control  # noqa: E402 - the commands need the group defined

for _command in (_control.inspect, _control.control, _control.status):
    cli.add_command(_command)


def _green_pool(argv: list[str]) -> str | None:
    """The green pool ``celeriac ... worker -P gevent|eventlet`` asks for, else None."""
    if "worker" not in argv:
        return None
    pool = None
    args = argv[argv.index("worker") + 1:]
    for at, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-P", "--pool"):
            pool = args[at + 1] if at + 1 < len(args) else None
        elif arg.startswith("--pool="):
            pool = arg.partition("=")[2]
        elif arg.startswith("-P"):
            pool = arg[2:]
    return pool if pool in ("gevent", "eventlet") else None


def _monkey_patch(pool: str) -> None:
    """Make sockets, sleeps and threads cooperate, before the app and its modules (and
    redis-py) are imported, so that they all see the patched ones."""
    try:
        if pool == "gevent":
            from gevent import monkey

            monkey.patch_all()
        else:
            import eventlet

            eventlet.monkey_patch()
    except ImportError as exc:
        if exc.name not in (pool, None):
            raise  # installed, but broken: its own error says more
        from ..exceptions import MissingDependency

        click.ClickException(str(MissingDependency(pool, pool, f"-P {pool}"))).show()
        sys.exit(1)


def main() -> None:
    pool = _green_pool(sys.argv[1:])
    if pool is not None:
        _monkey_patch(pool)
    cli(prog_name="celeriac")


from . import events as _events  # noqa: E402 - registered after the commands above

cli.add_command(_events.events)

from . import dashboard as _dashboard  # noqa: E402

cli.add_command(_dashboard.dashboard)
cli.add_command(_dashboard.dashboard, name="flower")
