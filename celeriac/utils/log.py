"""Logging for celeriac's programs and tasks, as Celery sets it up.

* ``get_task_logger(__name__)``: a logger for a task module. Its records go through the
  ``celeriac.task`` logger, whose lines carry the running task's name and id
  (``worker_task_log_format``; ``???`` outside a task).
* ``Logging``: how a worker (or beat) sets up logging from its settings:
  ``worker_log_format``/``worker_log_datefmt`` for the root logger,
  ``worker_task_log_format``/``worker_task_log_datefmt`` for task loggers,
  ``worker_log_color`` (colour only on a terminal, never in a file) and
  ``worker_hijack_root_logger`` (True: the root logger's handlers are replaced; False:
  a handler is added only to a logger that has none). A receiver of the
  ``setup_logging`` signal takes over instead. The log file name expands ``%n``, ``%h``,
  ``%d``, ``%p``, ``%i`` and ``%I`` (``node_format``); with ``%i``/``%I`` each prefork
  pool process sets up its logs again, for its own file.
* ``redirect_stdouts(level)``: ``print()`` and other writes to ``sys.stdout`` and
  ``sys.stderr`` become log records of the ``celeriac.redirected`` logger
  (``worker_redirect_stdouts``, ``worker_redirect_stdouts_level``). A pool process forked
  afterwards inherits the redirection.

Example::

    from celeriac.utils.log import get_task_logger

    logger = get_task_logger(__name__)

    @app.task
    def add(x, y):
        logger.info("adding %s and %s", x, y)   # [...] proj.add[<id>]: adding 2 and 2
        return x + y
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import re
import socket
import sys
import threading
from logging.handlers import WatchedFileHandler
from typing import Any, Iterable

from .. import _state, signals
from ..exceptions import ImproperlyConfigured

__all__ = [
    "TASK_LOGGER", "REDIRECT_LOGGER", "LOG_FORMAT", "TASK_LOG_FORMAT",
    "get_logger", "get_task_logger", "mlevel", "ColorFormatter", "TaskFormatter",
    "LoggingProxy", "redirect_stdouts", "restore_stdouts", "supports_color",
    "node_format", "current_process_index", "Logging",
]

#: the logger every task logger hangs off (Celery's is ``celery.task``)
TASK_LOGGER = "celeriac.task"
#: the logger redirected ``print()`` output is written to
REDIRECT_LOGGER = "celeriac.redirected"
#: names ``get_task_logger`` refuses: they are the base loggers themselves
RESERVED_LOGGER_NAMES = frozenset({"celeriac", TASK_LOGGER, "celery", "celery.task"})

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_LOG_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                   "%(task_name)s[%(task_id)s]: %(message)s")
#: what ``%(task_name)s`` and ``%(task_id)s`` say outside a task
NO_TASK = "???"


def get_logger(name: str) -> logging.Logger:
    """The logger called ``name`` (``logging.getLogger``)."""
    return logging.getLogger(name)


def _descends_from(logger: logging.Logger, ancestor: logging.Logger) -> bool:
    node: logging.Logger | None = logger
    for _ in range(1000):  # a bound: a hand-made cycle of parents must not hang
        if node is None:
            return False
        if node is ancestor:
            return True
        node = node.parent
    return False


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a module of tasks: its records carry the task name and id.

    The logger hangs off ``celeriac.task``, which the worker gives a handler with
    ``worker_task_log_format`` (and does not propagate to the root logger).

    Raises:
        RuntimeError: ``name`` is one of the base loggers (``celeriac``,
            ``celeriac.task``), as Celery refuses ``celery`` and ``celery.task``.
    """
    if name in RESERVED_LOGGER_NAMES:
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    base = logging.getLogger(TASK_LOGGER)
    if not _descends_from(logger, base):
        logger.parent = base
    return logger


def mlevel(level: str | int | None) -> int:
    """A log level as a number: ``"info"``, ``"INFO"``, ``20`` and ``"20"`` are 20.

    Raises:
        ImproperlyConfigured: not a level name.
    """
    if level is None or level == "":
        return logging.NOTSET
    if isinstance(level, int):
        return level
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    try:
        return logging.getLevelNamesMapping()[text.upper()]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        ) from None


# -- formatters ------------------------------------------------------------------------------
_COLOR = "\033[1;%dm"
_RESET = "\033[0m"
_RED, _YELLOW, _BLUE, _MAGENTA = 31, 33, 34, 35


class ColorFormatter(logging.Formatter):
    """A formatter that colours whole lines by level (when ``use_color``), as Celery's.

    DEBUG is blue, WARNING yellow, ERROR red, CRITICAL magenta; INFO is left plain.
    Records get ``task_name``/``task_id`` of ``???`` when they have none, so a format
    naming them never fails on a record logged outside a task.
    """

    COLORS = {"DEBUG": _BLUE, "WARNING": _YELLOW, "ERROR": _RED, "CRITICAL": _MAGENTA}

    def __init__(self, fmt: str | None = None, use_color: bool = False,
                 datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.use_color = use_color

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("task_name", NO_TASK)
        record.__dict__.setdefault("task_id", NO_TASK)
        text = super().format(record)
        color = self.COLORS.get(record.levelname) if self.use_color else None
        return f"{_COLOR % color}{text}{_RESET}" if color else text


class TaskFormatter(ColorFormatter):
    """Adds the running task's ``task_name`` and ``task_id`` to each record."""

    def format(self, record: logging.LogRecord) -> str:
        task = _state.current_task.get()
        if task is not None:
            record.__dict__.update(task_id=task.request.id or NO_TASK, task_name=task.name)
        return super().format(record)


# -- print() to the log ----------------------------------------------------------------------
class LoggingProxy(io.TextIOBase):
    """A text stream whose lines become records of ``logger`` at ``level``.

    A line is logged when it ends (a newline) or on ``flush()``, so ``print("a", "b")``
    is one record, not three. Each thread keeps its own partial line. A write made while
    logging itself writes here (a broken handler reporting its error) goes to the
    process's real stderr instead of looping.
    """

    mode = "w"
    encoding = "utf-8"
    errors = "replace"
    #: a partial line longer than this is logged without waiting for its end
    max_partial = 8192

    def __init__(self, logger: logging.Logger, level: str | int = logging.WARNING) -> None:
        super().__init__()
        self.logger = logger
        self.level = mlevel(level) or logging.WARNING
        self.name = f"<{logger.name}>"
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, data: str) -> int:  # type: ignore[override]
        if not isinstance(data, str):
            raise TypeError(f"write() argument must be str, not {type(data).__name__}")
        if self.closed or not data:
            return len(data)
        local = self._local
        if getattr(local, "busy", False):
            _real_stderr().write(data)
            return len(data)
        pending = getattr(local, "pending", "") + data
        head, newline, rest = pending.rpartition("\n")
        if not newline and len(pending) > self.max_partial:
            head, rest = pending, ""
        local.pending = rest
        if newline or not rest:
            self._log(head)
        return len(data)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        local = self._local
        pending = getattr(local, "pending", "")
        if pending:
            local.pending = ""
            self._log(pending)

    def close(self) -> None:
        if not self.closed:
            self.flush()
        super().close()

    def _log(self, text: str) -> None:
        text = text.rstrip("\r\n")
        if not text.strip():
            return
        local = self._local
        local.busy = True
        try:
            self.logger.log(self.level, "%s", text)
        finally:
            local.busy = False


def _real_stderr() -> Any:
    stream = sys.stderr
    if isinstance(stream, LoggingProxy) or stream is None:
        return sys.__stderr__
    return stream


#: what redirect_stdouts replaced, for restore_stdouts
_saved_streams: list[tuple[Any, Any]] = []


def redirect_stdouts(level: str | int = "WARNING",
                     logger: logging.Logger | str = REDIRECT_LOGGER) -> LoggingProxy:
    """Make ``sys.stdout`` and ``sys.stderr`` write to ``logger`` at ``level``."""
    target = logger if isinstance(logger, logging.Logger) else get_logger(logger)
    proxy = LoggingProxy(target, level)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or odd stream: nothing to flush
            pass
    _saved_streams.append((sys.stdout, sys.stderr))
    sys.stdout = sys.stderr = proxy
    return proxy


def restore_stdouts() -> None:
    """Undo the last ``redirect_stdouts`` (what it wrote so far stays logged)."""
    if not _saved_streams:
        return
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, LoggingProxy):
            stream.flush()
    sys.stdout, sys.stderr = _saved_streams.pop()


# -- colour ------------------------------------------------------------------------------------
def supports_color(colorize: bool | None, logfile: str | None,
                   stream: Any = None) -> bool:
    """Whether log lines are coloured, as Celery decides: ``worker_log_color`` True or
    None colours only when logging to a terminal (never to a file); False never."""
    if colorize is False or logfile:
        return False
    stream = _real_stderr() if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# -- %n, %h, %i ... in file names ----------------------------------------------------------------
_FORMAT_KEY = re.compile(r"%([%\w])")


def current_process_index() -> int | None:
    """This prefork pool process's number (1, 2, ...), or None in the worker itself."""
    process = multiprocessing.current_process()
    index = getattr(process, "index", None)  # set by a pool that numbers its processes
    if isinstance(index, int):
        return index + 1
    match = re.fullmatch(r"ForkPoolWorker-(\d+)", process.name or "")
    return int(match.group(1)) if match else None


def node_format(template: str, nodename: str, index: int | None = None,
                **extra: str) -> str:
    """Expand Celery's abbreviations in a file name, for node ``name@host.example.com``:

    ``%p`` the node name, ``%n`` its name part (``name``), ``%h`` the host
    (``host.example.com``), ``%d`` its domain (``example.com``), ``%i`` the pool process
    number (``0`` in the worker itself), ``%I`` the same with a dash (``-1``; nothing in
    the worker itself), ``%%`` a ``%``.

    Raises:
        ImproperlyConfigured: another letter follows a ``%``.
    """
    if not template:
        return template
    name, at, host = nodename.partition("@")
    if not at:
        name, host = "", nodename
    host = host or socket.gethostname()
    domain = host.partition(".")[2]
    if index is None:
        index = current_process_index()
    keys = {"p": nodename, "n": name or "celeriac", "h": host, "d": domain,
            "i": str(index) if index else "0", "I": f"-{index}" if index else "", "%": "%",
            **extra}

    def expand(match: re.Match[str]) -> str:
        try:
            return keys[match.group(1)]
        except KeyError:
            raise ImproperlyConfigured(
                f"unknown %{match.group(1)} in {template!r}: use %n, %h, %d, %p, %i or %I, "
                "and %% for a literal %") from None

    return _FORMAT_KEY.sub(expand, template)


# -- setting it up -------------------------------------------------------------------------------
def _has_handler(logger: logging.Logger) -> bool:
    return any(not isinstance(h, logging.NullHandler) for h in logger.handlers)


class Logging:
    """A program's logging set-up, from the app's settings; kept, so that a pool process
    can set it up again (``setup(index=...)``) when its log file has a name of its own.

    Args:
        conf: the app's settings (``None``: Celery's defaults).
        loglevel: the level of the root and task loggers (``-l``).
        logfile: a file name (``%n``... expand when ``hostname`` is given), or None for
            stderr.
        hostname: the node name the file name expands with.
        colorize: overrides ``worker_log_color``.
    """

    def __init__(self, conf: Any = None, loglevel: str | int = "WARNING",
                 logfile: str | None = None, hostname: str | None = None,
                 colorize: bool | None = None) -> None:
        def setting(name: str, default: Any) -> Any:
            value = conf.get(name, default) if conf is not None else default
            return default if value is None and default is not None else value

        self.level = mlevel(loglevel)
        self.template = logfile or None
        self.hostname = hostname
        self.format = setting("worker_log_format", LOG_FORMAT)
        self.datefmt = setting("worker_log_datefmt", None)
        self.task_format = setting("worker_task_log_format", TASK_LOG_FORMAT)
        self.task_datefmt = setting("worker_task_log_datefmt", None)
        self.hijack = bool(setting("worker_hijack_root_logger", True))
        if colorize is None:
            colorize = setting("worker_log_color", None)
        # Decided once, here: a pool process setting up again must not ask its stderr,
        # which may be redirected to the log by then.
        self.colorize = supports_color(colorize, self.template)
        #: a setup_logging receiver took over: celeriac added nothing
        self.custom = False
        self.logfile: str | None = self.logfile_for()
        #: (logger, handler) pairs this set-up added, removed when it is set up again
        self._added: list[tuple[logging.Logger, logging.Handler]] = []

    @property
    def per_process(self) -> bool:
        """Whether each pool process logs to a file of its own (``%i`` or ``%I``)."""
        return self.template is not None and "%i" in self.template.lower()

    def logfile_for(self, index: int | None = None) -> str | None:
        if not self.template or self.hostname is None:
            return self.template
        return node_format(self.template, self.hostname, index)

    def setup(self, index: int | None = None) -> bool:
        """Set up the root and task loggers; say whether a ``setup_logging`` receiver
        did it instead (then celeriac adds nothing, and stdouts are not redirected).

        Raises:
            ImproperlyConfigured: the log file cannot be opened.
            Exception: what a ``setup_logging`` receiver raised.
        """
        self.logfile = logfile = self.logfile_for(index)
        if signals.setup_logging.receivers:
            self.custom = True
            for _, answer in signals.setup_logging.send(
                    sender=None, loglevel=self.level, logfile=logfile, format=self.format,
                    colorize=self.colorize):
                if isinstance(answer, Exception):
                    raise answer
            return True
        self._remove_own()
        root = logging.getLogger()
        task_logger = logging.getLogger(TASK_LOGGER)
        if self.hijack:
            for logger in (root, logging.getLogger("celeriac"), task_logger,
                           logging.getLogger(REDIRECT_LOGGER)):
                logger.handlers[:] = []
        self._add_handler(root, ColorFormatter(self.format, self.colorize, self.datefmt))
        if self.level:
            root.setLevel(self.level)
        signals.after_setup_logger.send(sender=None, logger=root, loglevel=self.level,
                                        logfile=logfile, format=self.format,
                                        colorize=self.colorize)
        self._add_handler(task_logger,
                          TaskFormatter(self.task_format, self.colorize, self.task_datefmt))
        if self.level:
            task_logger.setLevel(self.level)
        task_logger.propagate = False
        signals.after_setup_task_logger.send(sender=None, logger=task_logger,
                                             loglevel=self.level, logfile=logfile,
                                             format=self.task_format,
                                             colorize=self.colorize)
        return False

    def _add_handler(self, logger: logging.Logger, formatter: logging.Formatter) -> None:
        if _has_handler(logger):  # hijack off and the user's own set-up: left alone
            return
        handler = self._new_handler()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        self._added.append((logger, handler))

    def _new_handler(self) -> logging.Handler:
        if not self.logfile:
            return logging.StreamHandler(_real_stderr())
        try:
            return WatchedFileHandler(self.logfile, encoding="utf-8")
        except OSError as exc:
            raise ImproperlyConfigured(
                f"cannot open the log file {self.logfile!r}: {exc.strerror or exc}") from exc

    def _remove_own(self) -> None:
        for logger, handler in self._added:
            if handler in logger.handlers:
                logger.removeHandler(handler)
            try:
                handler.close()
            except Exception:  # noqa: BLE001 - it is being replaced anyway
                pass
        self._added.clear()

    def handlers(self) -> list[logging.Handler]:
        """The handlers of the root and task loggers (for redaction)."""
        return [*logging.getLogger().handlers, *logging.getLogger(TASK_LOGGER).handlers]
