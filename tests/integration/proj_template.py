"""The app the integration tests run in a real worker (BROKER_URL_HERE is filled in)."""

import asyncio
import os
import time
from pathlib import Path

from celeriac import Celery, group

app = Celery("proj", broker="BROKER_URL_HERE", backend="BROKER_URL_HERE")
# Each test has its own queue and dead-letter list, so test runs sharing a Redis
# database never take each other's messages.
app.conf.task_default_queue = "QUEUE_HERE"
app.conf.broker_dead_letter_queue = "QUEUE_HERE.dead"
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lost_timeout = 3.0


class CustomError(Exception):
    """Defined here so the client can re-raise it by type."""


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)


def touch(path: str, text: str = "x") -> None:
    with open(path, "a") as fh:
        fh.write(text + "\n")


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def fail_custom(message):
    raise CustomError(message)


@app.task(bind=True)
def whoami(self, *args, **kwargs):
    r = self.request
    return {"id": r.id, "args": r.args, "kwargs": r.kwargs, "retries": r.retries,
            "hostname": r.hostname, "routing_key": r.delivery_info.get("routing_key"),
            "root_id": r.root_id, "is_eager": r.is_eager}


@app.task
async def nap(seconds):
    started = time.time()
    await asyncio.sleep(seconds)
    return [started, time.time()]


@app.task
def pid():
    return os.getpid()


@app.task
def block(marker_dir, name):
    """Say it started, then wait until the test says go."""
    touch(os.path.join(marker_dir, "started"), name)
    wait_for_file(os.path.join(marker_dir, "go"))
    touch(os.path.join(marker_dir, "finished"), name)
    return name


@app.task(acks_late=True)
def block_late(marker_dir, name):
    touch(os.path.join(marker_dir, "started"), name)
    wait_for_file(os.path.join(marker_dir, "go"))
    touch(os.path.join(marker_dir, "finished"), name)
    return name


@app.task(bind=True, track_started=True)
def progress(self, marker_dir):
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    touch(os.path.join(marker_dir, "progress"))
    wait_for_file(os.path.join(marker_dir, "go"))
    return "finished"


@app.task(bind=True, track_started=True)
def started_then_wait(self, marker_dir):
    touch(os.path.join(marker_dir, "started"))
    wait_for_file(os.path.join(marker_dir, "go"))
    return "ok"


@app.task(ignore_result=True)
def quiet(marker_dir):
    touch(os.path.join(marker_dir, "quiet"))
    return 1


@app.task
def unserializable():
    return object()


# -- calling and running tasks (tests/integration/test_calling.py) -----------------------
import json  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

from celeriac.exceptions import Ignore, Reject  # noqa: E402


def note(marker_dir, name, *fields):
    """Append one JSON line to ``marker_dir/name``: how tasks tell the test what ran."""
    touch(os.path.join(marker_dir, name), json.dumps(list(fields)))


@app.task(bind=True, max_retries=5, default_retry_delay=0.1)
def retry_then_ok(self, marker_dir, fail_times):
    note(marker_dir, "runs", self.request.retries)
    if self.request.retries < fail_times:
        raise self.retry(exc=CustomError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task(bind=True, max_retries=2)
def retry_exhausted(self, marker_dir, with_exc):
    note(marker_dir, "runs", self.request.retries)
    if with_exc:
        raise self.retry(exc=CustomError("gave up"), countdown=0.1)
    raise self.retry(countdown=0.1)


@app.task(bind=True, max_retries=None, default_retry_delay=0.05)
def retry_forever(self, marker_dir, until):
    note(marker_dir, "runs", self.request.retries)
    if self.request.retries < until:
        raise self.retry()
    return self.request.retries


@app.task(bind=True, max_retries=10)
def retry_override(self, marker_dir):
    note(marker_dir, "runs", self.request.retries)
    raise self.retry(exc=CustomError("override"), countdown=0.05, max_retries=1)


@app.task(bind=True)
def retry_later(self, marker_dir, seconds):
    """Retry once with an eta, so that the test can see the RETRY state meanwhile."""
    if self.request.retries == 0:
        when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        raise self.retry(exc=CustomError("later"), eta=when)
    return {"retries": self.request.retries, "args": self.request.args}


@app.task(bind=True, default_retry_delay=0.05)
def retry_no_throw(self, marker_dir):
    note(marker_dir, "runs", self.request.retries)
    if self.request.retries == 0:
        self.retry(throw=False)
        return "first"
    return "second"


@app.task(autoretry_for=(CustomError,), retry_kwargs={"max_retries": 5, "countdown": 0.05})
def auto_flaky(marker_dir, fail_times):
    runs = lines(os.path.join(marker_dir, "auto"))
    note(marker_dir, "auto", len(runs))
    if len(runs) < fail_times:
        raise CustomError(f"flaky {len(runs)}")
    return len(runs)


@app.task(bind=True, autoretry_for=(ValueError,), retry_backoff=0.2, retry_backoff_max=0.3,
          retry_jitter=False, max_retries=3)
def auto_backoff(self, marker_dir):
    note(marker_dir, "backoff", self.request.retries, time.time())
    raise ValueError("always")


@app.task(autoretry_for=(Exception,), dont_autoretry_for=(TypeError,),
          retry_kwargs={"countdown": 0.05, "max_retries": 2})
def auto_dont(marker_dir, kind):
    note(marker_dir, "dont", kind)
    raise TypeError("no retry") if kind == "type" else KeyError("retry")


def lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


@app.task(bind=True)
def lineage(self, *args):
    r = self.request
    return {"id": r.id, "args": list(args), "parent_id": r.parent_id, "root_id": r.root_id}


@app.task
def record_error(request, exc, traceback):
    """A Celery 5 errback: called in the worker with the failed request."""
    marker_dir = request.args[0]
    note(marker_dir, "errback", request.id, type(exc).__name__, str(exc),
         "Traceback" in traceback)


@app.task
def fail_in(marker_dir, message):
    raise CustomError(message)


@app.task
def touch_and_return(path, value):
    touch(path)
    return value


class Recording(app.Task):
    """Writes each handler call to ``<args[0]>/handlers`` with the arguments it got."""

    def before_start(self, task_id, args, kwargs):
        note(args[0], "handlers", "before_start", task_id, args, kwargs)

    def on_success(self, retval, task_id, args, kwargs):
        note(args[0], "handlers", "on_success", retval, task_id, args, kwargs)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note(args[0], "handlers", "on_failure", repr(exc), task_id, args, kwargs,
             type(einfo.exception).__name__, "CustomError" in einfo.traceback)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        note(args[0], "handlers", "on_retry", repr(exc), task_id, args, kwargs,
             einfo is not None)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note(args[0], "handlers", "after_return", status,
             retval if status == "SUCCESS" else repr(retval), task_id, args, kwargs,
             einfo is not None)


@app.task(bind=True, base=Recording, default_retry_delay=0.05)
def recorded(self, marker_dir, mode):
    if mode == "fail":
        raise CustomError("recorded failure")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=CustomError("once more"))
    return {"mode": mode, "retries": self.request.retries}


@app.task(bind=True, acks_late=True)
def reject_me(self, marker_dir, requeue):
    runs = lines(os.path.join(marker_dir, "reject"))
    note(marker_dir, "reject", len(runs))
    if not requeue:
        raise Reject("bad input", requeue=False)
    if not runs:
        raise Reject("not yet", requeue=True)
    return len(runs)


@app.task
def ignore_me(marker_dir):
    touch(os.path.join(marker_dir, "ignored"))
    raise Ignore()


@app.task(bind=True)
def annotated(self, marker_dir, fail):
    if fail:
        raise CustomError("annotated failure")
    return {"rate_limit": self.rate_limit, "track_started": self.track_started}


@app.task(bind=True)
def slow_started(self, marker_dir):
    touch(os.path.join(marker_dir, "started"))
    wait_for_file(os.path.join(marker_dir, "go"))
    return "done"


class BrokenSuccessHandler(app.Task):
    def on_success(self, retval, task_id, args, kwargs):
        raise RuntimeError("handler bug")


@app.task(base=BrokenSuccessHandler)
def broken_handler():
    return 1


@app.task(bind=True)
def task_attrs(self, *names):
    return {name: getattr(self, name) for name in names}


@app.task(bind=True)
def old_errback(self, task_id):
    """An errback of the older kind: sent as a task with the failed task's id."""
    r = self.request
    return {"id": r.id, "args": [task_id], "parent_id": r.parent_id, "root_id": r.root_id}


@app.task(bind=True)
async def whoami_async(self, seconds):
    before = self.request.id
    await asyncio.sleep(seconds)
    return [before, self.request.id]


@app.task
def record(path, text):
    touch(path, text)
    return text


# -- canvas -----------------------------------------------------------------------------
@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def identity(value):
    return value


@app.task
def get_inside(disable_sync):
    # Calls .get() on a subtask from inside a task: refused unless disable_sync is False.
    return add.delay(1, 1).get(timeout=20, disable_sync_subtasks=disable_sync)


@app.task
def note_error(request, exc, traceback, marker_dir):
    """An errback with a partial argument: notes which task failed and how."""
    note(marker_dir, "errback", request.id, type(exc).__name__, str(exc))


@app.task
def snooze(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
def replace_with(self, kind, value):
    """Hands its work to another signature (Task.replace)."""
    if kind == "task":
        raise self.replace(add.s(value, value))
    if kind == "group":
        raise self.replace(group(add.s(i, i) for i in range(value)))
    raise self.replace(add.s(value, 1) | mul.s(10))


@app.task(trail=True)
def fan_out(how_many):
    """The tree Celery's docs use for collect(): a group of tasks that each send one."""
    return group(send_square.s(i) for i in range(how_many))()


@app.task(trail=True)
def send_square(i):
    return square.delay(i)


@app.task(trail=True)
def square(i):
    return i * i


@app.task(bind=True)
def grow_chord(self, how_many):
    """A chord header task that adds more tasks to its own chord."""
    for i in range(how_many):
        self.add_to_chord(add.s(i, 100))
    return "grown"


# -- promises under fault (tests/fault/test_promises.py) ------------------------------------
@app.task(acks_late=True)
def touch_late(path, value):
    """An acks_late task that leaves one line per run."""
    touch(path, str(value))
    return value


@app.task(acks_late=True)
def hold_gil(path, seconds):
    """A C call that keeps the GIL for ``seconds``: no other thread of the process runs."""
    import ctypes

    touch(path, "start")
    ctypes.PyDLL(None).sleep(int(seconds))  # PyDLL: the GIL is not released
    return os.getpid()


@app.task(acks_late=True)
def exit_process(path):
    """Kills the process that runs it, every time: a poison message."""
    touch(path, "died")
    os._exit(1)


@app.task
def span(seconds):
    """When it started and ended, to see which runs overlapped."""
    started = time.time()
    time.sleep(seconds)
    return [started, time.time(), os.getpid()]


@app.task(acks_late=True)
def fail_late(message):
    raise ValueError(message)


@app.task(rate_limit="1/m")
def once_a_minute(value):
    return value


@app.task
def touch_early(path, value):
    """An early-acked task that leaves one line per run."""
    touch(path, str(value))
    return value
