"""Calling and running tasks through a real worker: retries, ignore_result, callbacks and
errbacks, handlers, signals, annotations, Reject/Ignore and states (SQLite and Redis)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import wait_until  # noqa: E402

from celeriac import signals
from celeriac.contrib.testing import WorkerProcess
from celeriac.exceptions import MaxRetriesExceededError, NotRegistered


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "marker"
    path.mkdir()
    return path


def notes(path: Path) -> list[Any]:
    """The JSON lines the project's tasks wrote with ``note``."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# -- 1. retries ---------------------------------------------------------------------------
def test_retry_counts_then_succeeds_or_gives_up(proj: Any, project: Path, marker: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        (marker / "ok").mkdir()
        ok = proj.retry_then_ok.delay(str(marker / "ok"), 2)
        assert ok.get(timeout=30) == 2
        assert notes(marker / "ok" / "runs") == [[0], [1], [2]]

        # exhausted with exc: FAILURE with the original exception
        (marker / "exc").mkdir()
        with pytest.raises(proj.CustomError, match="gave up"):
            proj.retry_exhausted.delay(str(marker / "exc"), True).get(timeout=30)
        assert notes(marker / "exc" / "runs") == [[0], [1], [2]]

        # exhausted without exc: MaxRetriesExceededError, as Celery does
        (marker / "noexc").mkdir()
        gave_up = proj.retry_exhausted.delay(str(marker / "noexc"), False)
        with pytest.raises(MaxRetriesExceededError):
            gave_up.get(timeout=30)
        assert gave_up.state == "FAILURE"

        # max_retries=None retries past the default limit of 3
        (marker / "forever").mkdir()
        assert proj.retry_forever.delay(str(marker / "forever"), 5).get(timeout=30) == 5

        # retry(max_retries=1) overrides the task's 10
        (marker / "override").mkdir()
        with pytest.raises(proj.CustomError, match="override"):
            proj.retry_override.delay(str(marker / "override")).get(timeout=30)
        assert notes(marker / "override" / "runs") == [[0], [1]]


def test_retry_state_is_stored_while_waiting(proj: Any, project: Path, marker: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        later = proj.retry_later.delay(str(marker), 1.0)
        assert wait_until(lambda: later.state == "RETRY")
        assert isinstance(later.info, proj.CustomError) and "later" in str(later.info)
        assert not later.ready()
        assert later.get(timeout=30) == {"retries": 1, "args": [str(marker), 1.0]}

        # throw=False: the retry is sent and the first run goes on to return
        quiet = proj.retry_no_throw.delay(str(marker))
        assert wait_until(lambda: proj.app.AsyncResult(quiet.id).result == "second")
        assert notes(marker / "runs") == [[0], [1]]


def test_autoretry(proj: Any, project: Path, marker: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        assert proj.auto_flaky.delay(str(marker), 2).get(timeout=30) == 2

        backoff = proj.auto_backoff.delay(str(marker))
        with pytest.raises(ValueError, match="always"):
            backoff.get(timeout=30)
        runs = notes(marker / "backoff")
        assert [r for r, _ in runs] == [0, 1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in zip(runs, runs[1:])]
        # 0.2 * 2**retries, capped at retry_backoff_max=0.3; no jitter. Only lower bounds:
        # a retry never runs before its eta.
        for gap, delay in zip(gaps, [0.2, 0.3, 0.3]):
            assert gap >= delay - 0.02

        with pytest.raises(TypeError):
            proj.auto_dont.delay(str(marker), "type").get(timeout=30)
        with pytest.raises(KeyError):
            proj.auto_dont.delay(str(marker), "key").get(timeout=30)
        assert notes(marker / "dont") == [["type"], ["key"], ["key"], ["key"]]


# -- 3. ignore_result -----------------------------------------------------------------------
def test_ignore_result_per_task_per_call_and_global(proj: Any, project: Path,
                                                    marker: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        per_task = proj.quiet.delay(str(marker))
        assert per_task.get(timeout=1) is None  # at once: nothing will be stored

        per_call = proj.touch_and_return.apply_async((str(marker / "call"), 7),
                                                     ignore_result=True)
        assert per_call.get(timeout=1) is None

        proj.app.conf.task_ignore_result = True
        try:
            globally = proj.touch_and_return.delay(str(marker / "global"), 8)
            assert globally.get(timeout=1) is None
        finally:
            proj.app.conf.task_ignore_result = False

        kept = proj.touch_and_return.delay(str(marker / "kept"), 9)
        assert kept.get(timeout=20) == 9
        for name in ("quiet", "call", "global"):
            assert (marker / name).exists()
        # the worker ran them in order, so they are done; an AsyncResult built from the
        # id alone cannot know the result was ignored
        for result in (per_task, per_call, globally):
            assert proj.app.AsyncResult(result.id).state == "PENDING"


# -- 4. link, link_error and handlers -------------------------------------------------------------
def test_link_and_link_error(proj: Any, project: Path, marker: Path) -> None:
    with WorkerProcess("proj", cwd=project, args=["-P", "threads", "-c", "2"]):
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        parent = proj.add.apply_async((2, 2), link=[
            proj.lineage.s("partial").set(task_id=first),
            proj.lineage.si("fixed").set(task_id=second),
        ])
        assert parent.get(timeout=20) == 4
        mutable = proj.app.AsyncResult(first).get(timeout=20)
        assert mutable == {"id": first, "args": [4, "partial"], "parent_id": parent.id,
                           "root_id": parent.id}
        fixed = proj.app.AsyncResult(second).get(timeout=20)
        assert fixed["args"] == ["fixed"] and fixed["parent_id"] == parent.id

        # a one-signature link
        single = str(uuid.uuid4())
        proj.add.apply_async((1, 1), link=proj.add.s(10).set(task_id=single))
        assert proj.app.AsyncResult(single).get(timeout=20) == 12

        # errbacks: (request, exc, traceback) is called in the worker, others get the id
        old_style = str(uuid.uuid4())
        failed = proj.fail_in.apply_async(
            (str(marker), "to errbacks"),
            link_error=[proj.record_error.s(), proj.old_errback.s().set(task_id=old_style)],
            link=proj.lineage.s().set(task_id=str(uuid.uuid4())))
        with pytest.raises(proj.CustomError):
            failed.get(timeout=20)
        sent = proj.app.AsyncResult(old_style).get(timeout=20)
        assert sent["args"] == [failed.id] and sent["parent_id"] == failed.id
        assert wait_until(lambda: (marker / "errback").exists())
        assert notes(marker / "errback") == [[failed.id, "CustomError", "to errbacks", True]]


def test_handlers_get_celerys_arguments(proj: Any, project: Path, tmp_path: Path) -> None:
    dirs = {mode: tmp_path / mode for mode in ("ok", "fail", "retry")}
    for path in dirs.values():
        path.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        ok = proj.recorded.delay(str(dirs["ok"]), "ok")
        assert ok.get(timeout=20) == {"mode": "ok", "retries": 0}
        failed = proj.recorded.delay(str(dirs["fail"]), "fail")
        with pytest.raises(proj.CustomError):
            failed.get(timeout=20)
        retried = proj.recorded.delay(str(dirs["retry"]), "retry")
        assert retried.get(timeout=20)["retries"] == 1
        assert wait_until(lambda: len(notes(dirs["retry"] / "handlers")) == 6)

    args = [str(dirs["ok"]), "ok"]
    value = {"mode": "ok", "retries": 0}
    assert notes(dirs["ok"] / "handlers") == [
        ["before_start", ok.id, args, {}],
        ["on_success", value, ok.id, args, {}],
        ["after_return", "SUCCESS", value, ok.id, args, {}, False],
    ]
    args = [str(dirs["fail"]), "fail"]
    error = "CustomError('recorded failure')"
    assert notes(dirs["fail"] / "handlers") == [
        ["before_start", failed.id, args, {}],
        ["on_failure", error, failed.id, args, {}, "CustomError", True],
        ["after_return", "FAILURE", error, failed.id, args, {}, True],
    ]
    args = [str(dirs["retry"]), "retry"]
    calls = notes(dirs["retry"] / "handlers")
    assert [c[0] for c in calls] == ["before_start", "on_retry", "after_return",
                                     "before_start", "on_success", "after_return"]
    assert calls[1] == ["on_retry", "CustomError('once more')", retried.id, args, {}, True]
    assert calls[2][1] == "RETRY"


# -- 5. signals ----------------------------------------------------------------------------
SIGNAL_MODULE = '''
import json
import os

from celeriac import signals
from proj import app  # noqa: F401  (-A finds the app here)

LOG = os.environ["SIGNAL_LOG"]
NAMES = [
    "task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
    "task_revoked", "task_unknown", "task_internal_error", "worker_init", "worker_ready",
    "worker_process_init", "worker_shutdown", "celeryd_init", "after_setup_logger",
]
if os.environ.get("WITH_SETUP_LOGGING"):
    NAMES.append("setup_logging")


def recorder(name):
    def record(sender=None, signal=None, **kwargs):
        sender = sender if isinstance(sender, str) else getattr(sender, "name", None)
        with open(LOG, "a") as fh:
            fh.write(json.dumps([name, sorted(kwargs), sender]) + "\\n")
    return record


for name in NAMES:
    getattr(signals, name).connect(recorder(name))
'''

EXPECTED_ARGS = {
    "task_prerun": ["args", "kwargs", "task", "task_id"],
    "task_postrun": ["args", "kwargs", "retval", "state", "task", "task_id"],
    "task_success": ["result"],
    "task_failure": ["args", "einfo", "exception", "kwargs", "task_id", "traceback"],
    "task_retry": ["einfo", "reason", "request"],
    "task_revoked": ["expired", "request", "signum", "terminated"],
    "task_unknown": ["exc", "id", "message", "name"],
    "task_internal_error": ["args", "einfo", "exception", "kwargs", "request", "task_id",
                            "traceback"],
    "worker_init": [], "worker_ready": [], "worker_process_init": [], "worker_shutdown": [],
    "celeryd_init": ["conf", "instance", "options"],
    "after_setup_logger": ["colorize", "format", "logfile", "logger", "loglevel"],
    "setup_logging": ["colorize", "format", "logfile", "loglevel"],
}


def test_worker_signals_fire_with_celerys_arguments(proj: Any, project: Path,
                                                     tmp_path: Path) -> None:
    (project / "sigs.py").write_text(SIGNAL_MODULE)
    log = tmp_path / "signals.log"
    with WorkerProcess("sigs", cwd=project, args=["-P", "prefork", "-c", "1"],
                       env={"SIGNAL_LOG": str(log)}):
        assert proj.add.delay(1, 2).get(timeout=20) == 3
        with pytest.raises(proj.CustomError):
            proj.fail_in.delay(str(tmp_path), "signal").get(timeout=20)
        assert proj.retry_then_ok.delay(str(tmp_path), 1).get(timeout=20) == 1
        expired = proj.add.apply_async((1, 1), expires=datetime.now(timezone.utc)
                                       - timedelta(seconds=5))
        assert wait_until(lambda: expired.state == "REVOKED")
        with pytest.raises(NotRegistered):
            proj.app.send_task("proj.nobody_home").get(timeout=20)
        # on_success raising is an internal error: SUCCESS was stored, then FAILURE
        broken = proj.broken_handler.delay()
        assert wait_until(lambda: proj.app.AsyncResult(broken.id).state == "FAILURE")
    fired: dict[str, list[Any]] = {}
    for name, args, sender in notes(log):
        fired.setdefault(name, []).append((args, sender))
    expected = set(EXPECTED_ARGS) - {"setup_logging"}
    assert set(fired) == expected
    for name, calls in fired.items():
        assert all(args == EXPECTED_ARGS[name] for args, _ in calls), name
    assert ([s for _, s in fired["task_success"]]
            == ["proj.add", "proj.retry_then_ok"])
    assert fired["task_failure"][0][1] == "proj.fail_in"
    assert fired["task_retry"][0][1] == "proj.retry_then_ok"
    assert fired["task_revoked"][0][1] == "proj.add"
    assert fired["task_internal_error"][0][1] == "proj.broken_handler"
    assert fired["celeryd_init"][0][1].startswith("celeriac@")

    # setup_logging: a receiver takes over logging, so after_setup_logger is not sent
    log.unlink()
    with WorkerProcess("sigs", cwd=project, args=["-P", "solo"],
                       env={"SIGNAL_LOG": str(log), "WITH_SETUP_LOGGING": "1"}):
        assert proj.add.delay(2, 2).get(timeout=20) == 4
    names = [name for name, _, _ in notes(log)]
    assert "setup_logging" in names and "after_setup_logger" not in names
    assert [a for n, a, _ in notes(log) if n == "setup_logging"] == [
        EXPECTED_ARGS["setup_logging"]]


def test_publish_signals_fire_in_the_client(proj: Any) -> None:
    seen: list[tuple[str, Any, list[str]]] = []

    def before(sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
        seen.append(("before", sender, sorted(kwargs)))
        assert kwargs["headers"]["task"] == "proj.add"
        assert kwargs["routing_key"] == "celery"
        assert kwargs["retry_policy"]["max_retries"] == 3

    def after(sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
        seen.append(("after", sender, sorted(kwargs)))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        proj.add.delay(1, 1)
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen == [
        ("before", "proj.add", ["body", "declare", "exchange", "headers", "properties",
                                "retry_policy", "routing_key"]),
        ("after", "proj.add", ["body", "exchange", "headers", "routing_key"]),
    ]


# -- 6 and 8. annotations and states configured in the worker ---------------------------------
SETTINGS_MODULE = '''
import os

from proj import app, note

# Set after proj defined its tasks: the worker applies them when it starts.
app.conf.task_track_started = True


def on_failure(self, exc, task_id, args, kwargs, einfo):
    note(args[0], "annotated", self.name, type(exc).__name__, task_id)


app.conf.task_annotations = [
    {"*": {"rate_limit": "100/s"}},
    {"proj.annotated": {"on_failure": on_failure, "rate_limit": "600/m"}},
]
'''


def test_settings_in_the_worker_annotations_and_track_started(proj: Any, project: Path,
                                                              marker: Path) -> None:
    (project / "configured.py").write_text(SETTINGS_MODULE)
    with WorkerProcess("configured", cwd=project, args=["-P", "threads", "-c", "2"]):
        started = proj.slow_started.delay(str(marker))
        assert wait_until(lambda: started.state == "STARTED")  # global task_track_started
        (marker / "go").touch()
        assert started.get(timeout=20) == "done"

        assert proj.annotated.delay(str(marker), False).get(timeout=20) == {
            "rate_limit": "600/m", "track_started": None}
        failing = proj.annotated.delay(str(marker), True)
        with pytest.raises(proj.CustomError):
            failing.get(timeout=20)
        assert wait_until(lambda: (marker / "annotated").exists())
        assert notes(marker / "annotated") == [["proj.annotated", "CustomError", failing.id]]
        # '*' reached the other tasks
        assert proj.task_attrs.delay("rate_limit").get(timeout=20) == {"rate_limit": "100/s"}


# -- 7. Reject and Ignore ---------------------------------------------------------------------------
def test_reject_and_ignore(proj: Any, project: Path, marker: Path) -> None:
    requeue_dir, dead_dir = marker / "requeue", marker / "dead"
    requeue_dir.mkdir()
    dead_dir.mkdir()
    with WorkerProcess("proj", cwd=project, args=["-P", "solo"]):
        again = proj.reject_me.delay(str(requeue_dir), True)
        assert again.get(timeout=20) == 1  # rejected once, given back, run again
        dead = proj.reject_me.delay(str(dead_dir), False)
        ignored = proj.ignore_me.delay(str(marker))
        after = proj.add.delay(3, 3)
        assert after.get(timeout=20) == 6
        assert (marker / "ignored").exists()
        assert ignored.state == "PENDING"  # Ignore stores nothing
        assert dead.state == "PENDING"
    assert notes(requeue_dir / "reject") == [[0], [1]]
    letters = proj.app.connect_broker().dead_letters()
    assert [d for d in letters if "bad input" in d.reason and dead.id in d.payload]
