"""Logging as Celery sets it up: formats, task loggers, colour, hijack, print() redirection,
log file names, and what worker_prefetch_multiplier = 0 means."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from typing import Any, Iterator

import click
import pytest
from click.testing import CliRunner

from celeriac import Celery, _state, signals
from celeriac.cli.main import LOG_LEVEL, cli
from celeriac.exceptions import ImproperlyConfigured
from celeriac.utils.log import (
    NO_TASK,
    TASK_LOGGER,
    ColorFormatter,
    Logging,
    LoggingProxy,
    TaskFormatter,
    get_task_logger,
    mlevel,
    node_format,
    redirect_stdouts,
    restore_stdouts,
    supports_color,
)
from celeriac.worker.main import UNLIMITED_PREFETCH, Worker


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Every test starts from, and leaves, the logging set-up it found."""
    root, task = logging.getLogger(), logging.getLogger(TASK_LOGGER)
    saved = (root.handlers[:], root.level, task.handlers[:], task.level, task.propagate,
             sys.stdout, sys.stderr, signals.setup_logging._receivers[:])
    yield
    for logger in (root, task):
        for handler in logger.handlers:
            if handler not in saved[0] + saved[2]:
                handler.close()
    root.handlers[:], task.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    task.setLevel(saved[3])
    task.propagate = saved[4]
    sys.stdout, sys.stderr = saved[5], saved[6]
    signals.setup_logging._receivers[:] = saved[7]


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("logs", broker="memory://", backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


def record(message: str = "hello", level: int = logging.WARNING,
           name: str = "x") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- task loggers ------------------------------------------------------------------------
def test_get_task_logger_hangs_off_the_task_logger() -> None:
    logger = get_task_logger("proj.tasks.logging_test")
    assert logger.parent is logging.getLogger(TASK_LOGGER)
    assert get_task_logger("proj.tasks.logging_test") is logger


@pytest.mark.parametrize("name", ["celeriac", "celeriac.task", "celery", "celery.task"])
def test_get_task_logger_refuses_the_base_names(name: str) -> None:
    with pytest.raises(RuntimeError, match="reserved"):
        get_task_logger(name)


def test_task_records_carry_the_running_tasks_name_and_id(app: Celery) -> None:
    @app.task(name="logs.add")
    def add(x: int, y: int) -> int:
        return x + y

    formatter = TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s")
    assert formatter.format(record()) == f"{NO_TASK}[{NO_TASK}]: hello"  # outside a task
    add.push_request(id="id-1")
    token = _state.current_task.set(add)
    try:
        assert formatter.format(record()) == "logs.add[id-1]: hello"
    finally:
        _state.current_task.reset(token)
        add.pop_request()
    assert formatter.format(record()) == "???[???]: hello"


def test_a_root_format_naming_task_fields_does_not_fail_outside_a_task() -> None:
    assert ColorFormatter("%(task_id)s %(message)s").format(record()) == "??? hello"


# -- formats, hijack -----------------------------------------------------------------------
def test_worker_log_format_and_worker_task_log_format(app: Celery, capsys: Any) -> None:
    app.conf.worker_log_format = "ROOT %(levelname)s %(message)s"
    app.conf.worker_task_log_format = "TASK %(task_name)s %(message)s"
    Logging(app.conf, "INFO").setup()
    logging.getLogger("celeriac.worker").info("from the worker")
    get_task_logger("proj.fmt").warning("from a task module")
    err = capsys.readouterr().err.splitlines()
    assert "ROOT INFO from the worker" in err
    assert "TASK ??? from a task module" in err
    assert logging.getLogger().level == logging.INFO
    task_logger = logging.getLogger(TASK_LOGGER)
    assert task_logger.propagate is False and len(task_logger.handlers) == 1


# Read as Celery reads them; config.py still marks them ignored until its owner flips them.
@pytest.mark.filterwarnings("ignore::celeriac.config.IgnoredSettingWarning")
def test_worker_log_datefmt_and_worker_task_log_datefmt(app: Celery, capsys: Any) -> None:
    app.conf.update(worker_log_format="%(asctime)s R", worker_log_datefmt="DATE",
                    worker_task_log_format="%(asctime)s T", worker_task_log_datefmt="TDATE")
    Logging(app.conf).setup()
    logging.getLogger("x").warning("m")
    get_task_logger("proj.datefmt").warning("m")
    assert capsys.readouterr().err.splitlines() == ["DATE R", "TDATE T"]


def test_worker_hijack_root_logger_true_replaces_the_root_handlers(app: Celery) -> None:
    mine = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(mine)
    Logging(app.conf).setup()
    handlers = logging.getLogger().handlers
    assert mine not in handlers and len(handlers) == 1


def test_worker_hijack_root_logger_false_keeps_the_users_handlers(app: Celery) -> None:
    app.conf.worker_hijack_root_logger = False
    out = io.StringIO()
    mine = logging.StreamHandler(out)
    mine.setFormatter(logging.Formatter("USER %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [mine]
    Logging(app.conf, "INFO").setup()
    assert root.handlers == [mine]  # nothing added where a handler is set
    assert root.level == logging.INFO  # the level is still -l's, as in Celery
    logging.getLogger("celeriac.worker").info("ready")
    assert out.getvalue() == "USER ready\n"
    # the task logger had no handler: it gets one, with the task format
    assert len(logging.getLogger(TASK_LOGGER).handlers) == 1


def test_setting_up_again_replaces_only_its_own_handlers(app: Celery, tmp_path: Any) -> None:
    app.conf.worker_hijack_root_logger = False
    logging.getLogger().handlers[:] = []  # a root logger nobody set up
    logs = Logging(app.conf, logfile=str(tmp_path / "w%I.log"), hostname="w@h")
    logs.setup()
    (first,) = logging.getLogger().handlers
    logs.setup(index=2)  # what a pool process does with %I
    (second,) = logging.getLogger().handlers
    assert second is not first and second.baseFilename == str(tmp_path / "w-2.log")
    assert logs.logfile == str(tmp_path / "w-2.log")


def test_a_setup_logging_receiver_takes_over(app: Celery) -> None:
    seen: list[dict[str, Any]] = []
    before = logging.getLogger().handlers[:]

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.setup_logging.connect(receiver)
    assert Logging(app.conf, "DEBUG").setup() is True
    assert logging.getLogger().handlers == before
    assert seen[0]["loglevel"] == logging.DEBUG


def test_a_log_file_that_cannot_be_opened_is_a_clear_error(app: Celery, tmp_path: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot open the log file"):
        Logging(app.conf, logfile=str(tmp_path / "missing" / "w.log")).setup()


def test_log_levels() -> None:
    assert mlevel("info") == mlevel("INFO") == mlevel(20) == mlevel("20") == logging.INFO
    assert mlevel("fatal") == logging.CRITICAL
    with pytest.raises(ImproperlyConfigured, match="unknown log level"):
        mlevel("loud")


# -- colour --------------------------------------------------------------------------------
def test_colour_only_on_a_terminal_and_never_in_a_file() -> None:
    assert supports_color(None, None, Tty()) is True
    assert supports_color(True, None, Tty()) is True
    assert supports_color(True, None, io.StringIO()) is False  # not a terminal
    assert supports_color(True, "worker.log", Tty()) is False
    assert supports_color(False, None, Tty()) is False


def test_coloured_lines_by_level() -> None:
    formatter = ColorFormatter("%(message)s", use_color=True)
    assert formatter.format(record(level=logging.WARNING)) == "\033[1;33mhello\033[0m"
    assert formatter.format(record(level=logging.ERROR)) == "\033[1;31mhello\033[0m"
    assert formatter.format(record(level=logging.INFO)) == "hello"
    assert ColorFormatter("%(message)s").format(record()) == "hello"


def test_worker_log_color(app: Celery, monkeypatch: Any) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    app.conf.worker_log_color = True
    Logging(app.conf).setup()
    logging.getLogger("x").warning("coloured")
    assert tty.getvalue().startswith("\033[1;33m[")
    assert tty.getvalue().endswith("coloured\033[0m\n")
    app.conf.worker_log_color = False
    tty.truncate(0)
    tty.seek(0)
    Logging(app.conf).setup()
    logging.getLogger("x").warning("plain")
    assert "\033[" not in tty.getvalue() and tty.getvalue().endswith("plain\n")


# -- print() to the log --------------------------------------------------------------------
class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[tuple[logging.Logger, Collect]]:
    logger = logging.getLogger("test.redirected")
    handler = Collect()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, handler
    logger.removeHandler(handler)


def test_a_printed_line_is_one_record(collected: Any) -> None:
    logger, handler = collected
    proxy = LoggingProxy(logger, "ERROR")
    print("a", "b", file=proxy)
    print(file=proxy)  # an empty line: nothing
    proxy.write("one\ntwo\n")
    proxy.write("partial")
    assert [r.getMessage() for r in handler.records] == ["a b", "one\ntwo"]
    proxy.flush()
    assert [r.getMessage() for r in handler.records][-1] == "partial"
    assert {r.levelno for r in handler.records} == {logging.ERROR}
    assert not proxy.isatty() and proxy.writable()


def test_a_handler_writing_to_the_proxy_does_not_loop(collected: Any, capsys: Any) -> None:
    logger, handler = collected
    proxy = LoggingProxy(logger)

    class Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            proxy.write("echo\n")

    echo = Echo()
    logger.addHandler(echo)
    try:
        print("once", file=proxy)
    finally:
        logger.removeHandler(echo)
    assert [r.getMessage() for r in handler.records] == ["once"]
    assert "echo" in capsys.readouterr().err  # the real stderr got it


def test_redirect_stdouts_and_restore(collected: Any) -> None:
    logger, handler = collected
    before = sys.stdout, sys.stderr
    redirect_stdouts("INFO", logger)
    try:
        print("to the log")
        print("errors too", file=sys.stderr)
    finally:
        restore_stdouts()
    assert (sys.stdout, sys.stderr) == before
    assert [(r.getMessage(), r.levelno) for r in handler.records] == [
        ("to the log", logging.INFO), ("errors too", logging.INFO)]


def test_worker_redirect_stdouts_settings_are_read(app: Celery) -> None:
    app.conf.update(worker_redirect_stdouts=False, worker_redirect_stdouts_level="ERROR",
                    worker_pool="solo")
    worker = Worker(app, banner=False)
    assert worker.redirect_stdouts is False and worker.redirect_stdouts_level == "ERROR"
    assert Worker(Celery("d", broker="memory://", set_as_current=False)).redirect_stdouts


# -- log file names ------------------------------------------------------------------------
def test_node_format_expands_celerys_abbreviations() -> None:
    node = "w1@host.example.com"
    assert node_format("%p|%n|%h|%d", node) == "w1@host.example.com|w1|host.example.com|example.com"
    assert node_format("%n%I.log", node, index=None) == "w1.log"  # the main process
    assert node_format("%n%I.log", node, index=3) == "w1-3.log"
    assert node_format("%n-%i.log", node, index=None) == "w1-0.log"
    assert node_format("%n-%i.log", node, index=2) == "w1-2.log"
    assert node_format("100%%.log", node) == "100%.log"
    with pytest.raises(ImproperlyConfigured, match="unknown %Y"):
        node_format("%Y.log", node)


def test_the_workers_log_file_is_expanded_with_its_node_name(app: Celery) -> None:
    worker = Worker(app, hostname="w1@host.example.com", logfile="/tmp/%n%I-%d.log",
                    pool="solo")
    assert worker.logfile == "/tmp/w1-example.com.log"
    assert worker.logging.per_process
    assert not Worker(app, logfile="/tmp/%n.log", pool="solo").logging.per_process


# -- worker_prefetch_multiplier ------------------------------------------------------------
def test_worker_prefetch_multiplier_zero_is_a_large_bounded_batch(app: Celery) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no IgnoredSettingWarning: 0 is honoured
        app.conf.worker_prefetch_multiplier = 0
    assert Worker(app, pool="solo").prefetch == UNLIMITED_PREFETCH
    assert Worker(app, pool="solo", prefetch_multiplier=3).prefetch == 3
    assert Worker(app, pool="solo", prefetch_multiplier=0).prefetch == UNLIMITED_PREFETCH


# -- the CLI's -l --------------------------------------------------------------------------
def test_loglevel_option_takes_celerys_names_in_any_case() -> None:
    assert LOG_LEVEL.convert("info", None, None) == "INFO"
    assert LOG_LEVEL.convert("Fatal", None, None) == "FATAL"
    with pytest.raises(click.BadParameter):
        LOG_LEVEL.convert("loud", None, None)


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_an_unknown_loglevel_is_a_usage_error(command: str) -> None:
    done = CliRunner().invoke(cli, ["-b", "memory://", command, "-l", "loud"])
    assert done.exit_code == 2 and "loud" in done.output
