"""The worker process: start-up in a written order, shutdown in reverse.

Start: import the app's modules, set up logging, check that the broker and the result
backend answer (or exit with one line that says why), print the banner, start the pool,
then the services that run in threads of this process (embedded beat), announce
readiness. Stop (SIGTERM/SIGINT): stop the services and fetching, let running tasks
finish, give unstarted messages back. A second signal (or SIGQUIT) stops cold.

No fork while a service thread is busy: a child forked while another thread holds a
lock (the import lock, the resolver's, a connection pool's) waits for it forever. So
services start only once the pool processes exist, and a pool process forked later (a
replacement) waits until every service thread is between two steps (``add_fork_gate``).
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import signal
import socket
import ssl
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from .. import __version__, signals
from ..exceptions import CeleriacError, ImproperlyConfigured, MissingDependency
from ..utils.log import LOG_FORMAT as LOG_FORMAT  # importable from here, as before
from ..utils.log import (TASK_LOGGER, Logging, current_process_index, redirect_stdouts,
                         restore_stdouts)
from ..utils.outage import OutageLog, describe
from ..utils.urls import mask_password, redact, scheme_of, secrets_of
from ..events.dispatcher import EventDispatcher
from ..events.heart import WorkerHeart
from .autoscale import Autoscaler, autoscaler_class, parse_autoscale
from .forkgate import add_fork_gate, remove_fork_gate
from .pools import POOLS, RESIZABLE_POOLS, Pool, create_pool

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")

#: What ``worker_prefetch_multiplier = 0`` ("no limit" in Celery) fetches per round trip:
#: a large batch, but bounded, so one fetch never drags a whole queue into one process.
#: Fair dispatch still holds: a consumer fetches one at a time while a sibling slot is
#: idle, and gives back what waits behind a long task (worker_prefetch_release_after).
UNLIMITED_PREFETCH = 1000


def format_hostname(template: str) -> str:
    """Expand ``%h`` (host name), ``%n`` (its first label) and ``%d`` (the domain)."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    return template.replace("%h", host).replace("%n", name).replace("%d", domain).replace(
        "%%", "%")


# no fork while a service thread is busy: see worker/forkgate.py


class Service(Protocol):
    """Something a worker runs beside its pool, in a thread of the main process."""

    name: str

    def start(self) -> None: ...

    def request_stop(self) -> None:
        """Ask it to stop; called from a signal handler, so it must not block."""

    def stop(self) -> None:
        """Stop it and wait (bounded) until it has put its things away."""

    def alive(self) -> bool:
        """Whether it still runs (a service that ended by itself stops the worker)."""


class EmbeddedBeat:
    """``worker -B``: the beat service in a thread of the worker's main process.

    Its state is saved and its leader lock released when the worker stops.
    """

    name = "beat"
    join_timeout = 10.0

    def __init__(self, app: Any, scheduler: Any = None, schedule_filename: str | None = None,
                 max_interval: float | None = None) -> None:
        from ..beat import Beat

        self.beat = Beat(app, scheduler=scheduler, schedule_filename=schedule_filename,
                         max_interval=max_interval)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        add_fork_gate(self.beat.busy)
        try:
            self.thread = self.beat.start_thread()
        except BaseException:
            remove_fork_gate(self.beat.busy)
            raise

    def request_stop(self) -> None:
        self.beat.stop()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self.beat.stop()
        if self.thread is not None:
            self.thread.join(self.join_timeout)
            if self.thread.is_alive():
                logger.warning("beat did not stop within %.0f s; leaving it",
                               self.join_timeout)
        remove_fork_gate(self.beat.busy)


# -- start-up checks ------------------------------------------------------------------------
class StartupError(CeleriacError):
    """The broker or the result backend cannot be used; the worker does not start."""

    def __init__(self, what: str, url: str, reason: str, detail: str, hint: str,
                 retries: int = 0) -> None:
        self.what, self.url, self.reason, self.detail, self.hint = what, url, reason, detail, hint
        self.retries = retries
        after = f" after {retries} retries" if retries else ""
        detail = f" ({detail})" if detail and reason not in detail else ""
        super().__init__(f"Cannot start: {what} {url}: {reason}{detail}{after}. {hint}")


_REFUSED = ("connection refused", "errno 111", "error 111")
_AUTH = ("wrongpass", "noauth", "authentication", "invalid password", "invalid username",
         "auth <password> called without")
_NAME = ("name or service not known", "nodename nor servname", "temporary failure in name",
         "no address associated")
# TLS alerts a server sends when it will not take the client's certificate (or its lack
# of one): OpenSSL's texts, as the ssl module reports them
_TLS_REFUSED = ("alert certificate required", "alert bad certificate", "alert unknown ca",
                "alert certificate unknown", "alert handshake failure",
                "alert access denied")
# The setting that holds the TLS options for the URL a start-up check names
_TLS_SETTING = {"broker_url": "broker_use_ssl", "result_backend": "redis_backend_use_ssl"}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def classify(exc: BaseException, what: str, setting: str) -> tuple[str, bool, str]:
    """``(reason, worth retrying, what to do)`` for an error met while connecting."""
    chain = _chain(exc)
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    text = " ".join(str(e) for e in chain).lower()
    if isinstance(exc, MissingDependency):
        return str(exc), False, "Install the extra it names."
    if isinstance(exc, ImproperlyConfigured):
        return str(exc), False, f"Fix {setting}."
    if "AuthenticationError" in names or any(word in text for word in _AUTH):
        return ("authentication failed", False,
                f"Check the user name and password in {setting} (or in its transport "
                "options).")
    # A certificate problem is configuration (or an expired certificate): waiting does not
    # heal it, so the worker stops at once instead of retrying for minutes. The errors
    # are OSErrors, and brokers wrap them in ConnectionError: this comes before those.
    tls_setting = _TLS_SETTING.get(setting, f"the TLS options of {setting}")
    if (any(isinstance(e, ssl.SSLCertVerificationError) for e in chain)
            or "certificate verify failed" in text):
        return ("TLS certificate verification failed", False,
                f"Check that the CA certificates trusted (ca_certs in {tls_setting}, or "
                "the system's without it) signed the server's certificate, and that it "
                "names the host.")
    if any(alert in text for alert in _TLS_REFUSED):
        return ("the server refused the TLS handshake", False,
                f"The server may require a client certificate: check certfile and keyfile "
                f"in {tls_setting}, and that the server trusts the CA that signed it.")
    if "BusyLoadingError" in names:
        return "the server is still loading its data", True, "Wait for it, or start later."
    if (any(isinstance(e, ConnectionRefusedError) for e in chain)
            or any(word in text for word in _REFUSED)):
        return ("connection refused", True,
                f"Check that the server is running and that {setting} names its host and "
                "port.")
    if any(isinstance(e, socket.gaierror) for e in chain) or any(w in text for w in _NAME):
        return "host name not found", True, f"Check the host name in {setting}."
    if ("TimeoutError" in names or "timeout" in names or "timed out" in text
            or any(isinstance(e, OSError) and e.errno == errno.ETIMEDOUT for e in chain)):
        return ("timed out", True,
                f"Check that the host in {setting} is reachable from here (firewall, "
                "network).")
    if "unable to open database file" in text:
        return ("cannot open the database file", False,
                f"Check that the directory of the file in {setting} exists and is "
                "writable.")
    if "database is locked" in text:
        return "the database is locked", True, "Another process holds it; retrying may help."
    if "ConnectionError" in names or any(isinstance(e, OSError) for e in chain):
        return "unreachable", True, f"Check that the server named by {setting} is running."
    return describe(exc), False, f"Check {setting}."


def startup_retry_policy(conf: Any) -> tuple[bool, int | None]:
    """``(retry at all, most retries or None for no limit)``, as Celery reads them."""
    retry = conf.broker_connection_retry_on_startup
    if retry is None:
        retry = conf.broker_connection_retry
    most = conf.broker_connection_max_retries
    return bool(retry), (int(most) if most else None)


def retry_pause(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): short, doubling, at most 2 s."""
    return min(0.1 * 2 ** (attempt - 1), 2.0)


def check_connection(what: str, url: str, setting: str, probe: Callable[[], Any], conf: Any,
                     sleep: Callable[[float], Any] = time.sleep) -> Any:
    """Run ``probe`` (a connect and a cheap round trip) until it works; return its value.

    Errors that waiting can heal (refused, timed out, name not found) are retried as
    ``broker_connection_retry_on_startup`` and ``broker_connection_max_retries`` say,
    with short backed-off pauses; an outage is logged once, then every 30 s.

    Raises:
        StartupError: it failed for good; the message is one line with the masked URL,
            the reason, and what to do.
    """
    masked = mask_password(url)
    retry, most = startup_retry_policy(conf)
    outage = OutageLog(logger, what, masked, level=logging.WARNING)
    attempt = 0
    while True:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            reason, transient, hint = classify(exc, what, setting)
            if not transient or not retry or (most is not None and attempt >= most):
                if transient and retry:
                    hint += " broker_connection_max_retries sets how long to wait."
                raise StartupError(what, masked, reason, describe(exc), hint,
                                   attempt) from exc
            attempt += 1
            outage.failed(exc, note=f"retrying (up to {most} times)" if most else
                          "retrying until it answers")
            sleep(retry_pause(attempt))
            continue
        outage.recovered()
        return value


# -- logging ----------------------------------------------------------------------------------
class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then replaces every known secret with ``**``."""

    def __init__(self, inner: logging.Formatter | None, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.secrets = set(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


def redact_logs(secrets: Iterable[str], logger_: logging.Logger | None = None) -> None:
    """Scrub ``secrets`` from whatever the root logger's handlers write (tracebacks too)."""
    secrets = {s for s in secrets if s}
    if not secrets:
        return
    for handler in (logger_ or logging.getLogger()).handlers:
        current = handler.formatter
        if isinstance(current, RedactingFormatter):
            current.secrets |= secrets
        else:
            handler.setFormatter(RedactingFormatter(current, secrets))


def app_secrets(app: Any) -> set[str]:
    """The credentials in the app's configuration (URLs, transport options, passwords)."""
    conf = app.conf
    try:
        table = conf.table(with_defaults=True, censored=False)
    except Exception:  # noqa: BLE001 - a best effort on top of the URLs below
        table = {}
    urls = [conf.resolved_broker_url(), conf.resolved_broker_read_url(),
            conf.resolved_broker_write_url(), conf.resolved_result_backend()]
    return secrets_of(table, *[u for u in urls if u])


def redact_all(secrets: Iterable[str]) -> None:
    """``redact_logs`` for the root logger and the task logger (which does not propagate)."""
    redact_logs(secrets)
    redact_logs(secrets, logging.getLogger(TASK_LOGGER))


def setup_logging(loglevel: str | int, logfile: str | None = None, app: Any = None,
                  hostname: str | None = None) -> Logging:
    """Set up logging from ``app``'s settings (Celery's defaults without one).

    Raises:
        ImproperlyConfigured: an unknown level, or a log file that cannot be opened.
    """
    logs = Logging(app.conf if app is not None else None, loglevel, logfile, hostname)
    logs.setup()
    return logs


class Worker:
    """A worker node: a pool of consumers serving ``queues`` for ``app``."""

    def __init__(self, app: Celery, hostname: str | None = None,
                 concurrency: int | None = None, pool: str | None = None,
                 queues: Sequence[str] | None = None,
                 exclude_queues: Sequence[str] | None = None, loglevel: str = "WARNING",
                 logfile: str | None = None, max_tasks_per_child: int | None = None,
                 prefetch_multiplier: int | None = None, send_events: bool | None = None,
                 banner: bool = True, beat: bool = False, schedule_filename: str | None = None,
                 scheduler: Any = None, services: Sequence[Service] = (),
                 autoscale: str | Sequence[int] | None = None,
                 heartbeat_interval: float | None = None, worker_events: bool = True) -> None:
        conf = app.conf
        self.app = app
        self.hostname = format_hostname(hostname or "celeriac@%h")
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        self.pool_name = pool or conf.worker_pool or "prefork"
        if self.pool_name not in POOLS:
            raise ImproperlyConfigured(
                f"unknown pool {self.pool_name!r}; choose one of: {', '.join(POOLS)}")
        #: ``--autoscale=MAX,MIN`` as ``(max, min)``, or None; the pool starts at MIN
        #: (at least one slot) and its autoscaler (``worker_autoscaler``) moves it
        self.autoscale = parse_autoscale(autoscale)
        self.autoscaler: Autoscaler | None = None
        if self.autoscale is not None:
            if self.pool_name not in RESIZABLE_POOLS:
                raise ImproperlyConfigured(
                    f"--autoscale needs a pool that can change size ({', '.join(RESIZABLE_POOLS)}"
                    f"), not {self.pool_name!r}")
            high, low = self.autoscale
            self.autoscaler = autoscaler_class(conf.worker_autoscaler)(high, low)
            self.concurrency = max(1, low)
        self.loglevel = loglevel
        # ``-f``: %n, %h, %d, %p, %i and %I expand; with %i/%I each pool process logs to
        # a file of its own (set up again when it starts).
        self.logging = Logging(conf, loglevel, logfile, self.hostname)
        #: the file this (main) process logs to, expanded
        self.logfile = self.logging.logfile
        self.redirect_stdouts = bool(conf.worker_redirect_stdouts)
        self.redirect_stdouts_level = conf.worker_redirect_stdouts_level or "WARNING"
        self._secrets: set[str] = set()
        # one bound method, so that disconnect finds what connect stored
        self._child_logging = self._setup_child_logging
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        multiplier = (prefetch_multiplier if prefetch_multiplier is not None
                      else conf.worker_prefetch_multiplier)
        if multiplier is None:
            multiplier = 1
        # 0 is Celery's "no limit": a large bounded batch here (see UNLIMITED_PREFETCH)
        self.prefetch = UNLIMITED_PREFETCH if int(multiplier) == 0 else max(1, int(multiplier))
        self.async_limit = int(conf.worker_async_concurrency or 100)
        self.send_events = bool(send_events if send_events is not None
                                else conf.worker_send_task_events)
        # -E is the setting: each consumer (pool process or thread) reads it
        conf.worker_send_task_events = self.send_events
        # This process's events: worker-online/heartbeat/offline (off with
        # --without-heartbeat, as in Celery) and, with -E, the ends of the tasks it
        # records for a lost pool process.
        groups = {"worker"} if worker_events else set()
        if self.send_events:
            groups.add("task")
        # The pool's supervisor tells a broker outage of this process already.
        self.events = EventDispatcher(app, self.hostname, enabled=bool(groups), groups=groups,
                                      outage_level=logging.DEBUG)
        self.heart = WorkerHeart(
            self.events, heartbeat_interval or conf.worker_heartbeat_interval,
            self._task_load, add_fork_gate, remove_fork_gate) if worker_events else None
        self.banner = banner
        self.queues = self._select_queues(queues, exclude_queues)
        self.pool: Pool | None = None
        self._signals = 0
        #: run beside the pool once it is up; stopped (in reverse) before the worker ends
        self.services: list[Service] = list(services)
        if self.heart is not None:  # first in, last out: worker-offline comes last
            self.services.insert(0, self.heart)
        if beat:
            self.services.append(EmbeddedBeat(app, scheduler=scheduler,
                                               schedule_filename=schedule_filename))
        if conf.worker_enable_remote_control:
            from ..control.mailbox import Mailbox

            self.services.append(Mailbox(self))
        self._started: list[Service] = []
        self._told_to_stop: set[int] = set()

    def _task_load(self) -> tuple[int, int]:
        """``(active, processed)``: tasks running now, tasks ended since the start."""
        pool = self.pool
        return pool.counters.totals() if pool is not None else (0, 0)

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
        custom_logging = self.logging.setup()
        self._redact(app_secrets(app))
        app.finalize()
        self._redact(app_secrets(app))  # on_after_configure handlers may have added some
        try:
            self.check_connections()
        except StartupError as exc:
            self._fatal(str(exc))
            return 1
        signals.worker_init.send(sender=self)
        if self.banner:
            print(self.render_banner(), flush=True)
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        redirected = False
        try:
            if self.redirect_stdouts and not custom_logging:
                # print() in a task is logged (pool processes forked below inherit it);
                # a setup_logging receiver owns logging, so then it is left alone.
                redirect_stdouts(self.redirect_stdouts_level)
                redirected = True
            if (self.logging.per_process and self.pool_name == "prefork"
                    and not custom_logging):
                signals.worker_process_init.connect(self._child_logging)
            return self._run()
        finally:
            signals.worker_process_init.disconnect(self._child_logging)
            if redirected:
                restore_stdouts()

    def _redact(self, secrets: Iterable[str]) -> None:
        self._secrets |= set(secrets)
        redact_all(self._secrets)

    def _setup_child_logging(self, **_: Any) -> None:
        """In a new pool process: log to its own file (``%i``/``%I`` in ``-f``)."""
        self.logging.setup(current_process_index())
        redact_all(self._secrets)

    def _run(self) -> int:
        app = self.app
        self._install_signal_handlers()
        self.pool = create_pool(self)
        self.pool.start()
        code = 0
        try:
            if not self._signals:
                try:
                    self._start_services()
                except Exception as exc:
                    self._fatal(f"Cannot start: {self._started_name}: {describe(exc)}")
                    code = 1
                    self._signals += 1
                    self._warm_stop(f"{self._started_name} did not start")
            if not code:
                signals.worker_ready.send(sender=self)
                logger.warning("%s ready.", self.hostname)
            while self.pool.alive():
                self.pool.supervise()
                if self._signals:
                    self._tell_pool_to_stop()
                elif not code and self._a_service_ended():
                    code = 1
                time.sleep(0.1)
        finally:
            self._stop_services()
            signals.worker_shutdown.send(sender=self)
            app.close()
        return 1 if code or self.pool.failed else 0

    def _fatal(self, message: str) -> None:
        message = redact(message, app_secrets(self.app))
        logger.critical("%s", message)
        if self.logfile:  # whoever started the worker sees why it did not
            print(message, file=sys.__stderr__ or sys.stderr, flush=True)

    # -- start-up checks -------------------------------------------------------------------
    def check_connections(self) -> None:
        """Connect to the broker and the result backend and make one cheap round trip each.

        Raises:
            StartupError: one of them cannot be used (after the retries the settings
                allow when waiting may help).
        """
        app = self.app
        conf = app.conf
        broker_url = app.broker_read_url

        def probe_broker() -> bool:
            broker = app.connect_broker()
            try:
                broker.size(self.queues[0])
                return bool(broker.shared_between_processes)
            finally:
                broker.close()

        shared = check_connection("broker", broker_url, "broker_url", probe_broker, conf)
        if not shared and self.pool_name == "prefork":
            logger.warning("%s cannot be shared between processes; using the threads pool",
                           mask_password(broker_url))
            self.pool_name = "threads"
        backend_url = app.result_backend_url
        if scheme_of(backend_url) != "disabled":

            def probe_backend() -> None:
                try:
                    app.backend.get_task_meta("celeriac-startup-check")
                except BaseException:
                    app.close()  # the next try builds its client afresh
                    raise

            check_connection("result backend", backend_url, "result_backend", probe_backend,
                             conf)
        app.close()  # nothing opened here is carried into the pool processes

    # -- services ----------------------------------------------------------------------------
    _started_name = ""

    def _start_services(self) -> None:
        for service in self.services:
            self._started_name = service.name
            service.start()
            self._started.append(service)

    def _a_service_ended(self) -> bool:
        for service in self._started:
            if not service.alive():
                # -B promised periodic tasks; a worker quietly running without them
                # would break that promise, so it stops, non-zero, for its supervisor.
                self._fatal(f"{service.name} stopped unexpectedly (see above); stopping "
                            "the worker")
                self._signals += 1
                self._warm_stop(f"{service.name} ended")
                return True
        return False

    def _stop_services(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception:
                logger.exception("could not stop %s", service.name)

    def _tell_pool_to_stop(self) -> None:
        # A pool process forked while the stop signal was being handled (a replacement)
        # was not told; tell each child once. SIGTERM to a child means "finish and stop".
        children = getattr(self.pool, "children", None)
        if not children:
            return
        for pid in list(children):
            if pid not in self._told_to_stop:
                self._told_to_stop.add(pid)
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, lambda *_: self._cold())

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            self._warm_stop(signal.Signals(signum).name, signum)
        else:
            self._cold()

    def request_stop(self, why: str) -> None:
        """A warm shutdown asked from another thread (remote control's ``shutdown``)."""
        self._signals += 1
        if self._signals == 1:
            self._warm_stop(why)

    def _warm_stop(self, why: str, signum: int = signal.SIGTERM) -> None:
        logger.warning("worker: Warm shutdown (%s): finishing running tasks, "
                       "returning the rest; signal again to stop now", why)
        signals.worker_shutting_down.send(sender=self.hostname, sig=signum, how="Warm",
                                          exitcode=0)
        for service in self._started:
            service.request_stop()
        if self.pool is not None:
            self._told_to_stop.update(getattr(self.pool, "children", ()))
            self.pool.warm_stop()

    def _cold(self) -> None:
        logger.warning("worker: Cold shutdown: stopping running tasks")
        if self.pool is not None:
            self.pool.cold_stop()

    # -- the banner ----------------------------------------------------------------------
    def render_banner(self) -> str:
        app = self.app
        broker_url = app.broker_read_url
        tasks = [n for n in app.tasks.names() if not n.startswith("celery.")]
        lines = [
            f"celeriac {__version__} · {self.hostname}",
            f"  {platform.platform()} · Python {platform.python_version()}",
            "",
            f"  app:          {app.main or '__main__'} ({type(app).__name__} at {id(app):#x})",
            f"  transport:    {mask_password(broker_url)}",
            f"  results:      {mask_password(app.result_backend_url)}",
            f"  concurrency:  {self._concurrency_line()}",
            f"  prefetch:     {self.prefetch} per consumer",
            f"  task events:  {'ON' if self.send_events else 'OFF (-E to monitor tasks)'}",
            "",
            "[queues]",
            *[f"  . {q}" for q in self.queues],
            "",
            "[tasks]",
            *([f"  . {n}" for n in tasks] or ["  (none registered: check -A and include)"]),
        ]
        if any(s.name == "beat" for s in self.services):
            lines[9:9] = ["  beat:         embedded (-B)"]
        return redact("\n".join(lines), app_secrets(app))

    def _concurrency_line(self) -> str:
        if self.autoscale is None:
            return f"{self.concurrency} ({self.pool_name})"
        high, low = self.autoscale
        return f"{low}..{high} (autoscale) · {self.pool_name}"
