"""Unit tests for AsyncResult over the memory and SQLite result backends.

The stored layout is Celery's (CELERY-WIRE.md 3.2-3.4), so the same meta can be read by
a Celery client; these tests check what a user of ``AsyncResult`` sees.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import _state, states
from celeriac.backends import Backend, BackendOptions, connect
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.exceptions import (
    RemoteError,
    ResultNotSerializable,
    TaskRevokedError,
    TimeoutError,
)
from celeriac.result import AsyncResult


class MyError(Exception):
    """A custom exception, importable by its module and name."""


class TwoArgError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


BackendFactory = Callable[..., Backend]


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens backends of one kind; each call with the same test sees the same store."""
    url = (f"memory://unit-{uuid.uuid4()}" if request.param == "memory"
           else f"sqlite:///{tmp_path}/r.db")
    opened: list[Backend] = []

    def make(options: BackendOptions | None = None) -> Backend:
        backend = (MemoryBackend(url, options) if request.param == "memory"
                   else SQLiteBackend(url, options))
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(make_backend: BackendFactory) -> Backend:
    return make_backend()


def new_id() -> str:
    return str(uuid.uuid4())


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


# -- pending ----------------------------------------------------------------------------
def test_unknown_task_is_pending(backend: Backend) -> None:
    r = AsyncResult(new_id(), backend=backend)
    assert r.state == r.status == states.PENDING
    assert r.result is None and r.info is None
    assert r.traceback is None
    assert not r.ready() and not r.successful() and not r.failed()


def test_get_on_a_pending_task_times_out(backend: Backend) -> None:
    r = AsyncResult(new_id(), backend=backend)
    with pytest.raises(TimeoutError):
        r.get(timeout=0.1)


def test_async_result_needs_an_id() -> None:
    with pytest.raises(ValueError):
        AsyncResult(None)  # type: ignore[arg-type]


# -- success ----------------------------------------------------------------------------
def test_success(backend: Backend) -> None:
    tid = new_id()
    backend.store_result(tid, {"sum": 8, "items": [1, "two"]}, states.SUCCESS)
    r = AsyncResult(tid, backend=backend)
    assert r.state == r.status == "SUCCESS"
    assert r.ready() and r.successful() and not r.failed()
    assert r.result == r.info == {"sum": 8, "items": [1, "two"]}
    assert r.get(timeout=1) == {"sum": 8, "items": [1, "two"]}
    assert r.traceback is None
    assert r.date_done is not None and r.date_done.utcoffset() is not None


def test_get_waits_for_a_result_stored_later(make_backend: BackendFactory) -> None:
    tid = new_id()
    writer = make_backend()
    reader = make_backend()
    timer = threading.Timer(0.05, writer.mark_as_done, (tid, 42))
    timer.start()
    try:
        assert AsyncResult(tid, backend=reader).get(timeout=5, interval=0.01) == 42
    finally:
        timer.cancel()


def test_stored_meta_has_celerys_fields(backend: Backend) -> None:
    tid = new_id()
    backend.store_result(tid, 8, states.SUCCESS)
    meta = json.loads(backend._get(tid))  # the bytes a Celery client would read
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 8
    assert meta["task_id"] == tid
    assert {"traceback", "children", "date_done"} <= set(meta)


def test_other_backend_instance_on_the_same_url_sees_the_result(
        make_backend: BackendFactory) -> None:
    tid = new_id()
    make_backend().mark_as_done(tid, "shared")
    assert AsyncResult(tid, backend=make_backend()).get(timeout=1) == "shared"


# -- failure ----------------------------------------------------------------------------
def test_failure_reraises_the_original_exception_type(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_failure(tid, raised(ValueError("bad value 7")))
    r = AsyncResult(tid, backend=backend)
    assert r.state == states.FAILURE
    assert r.ready() and r.failed() and not r.successful()
    with pytest.raises(ValueError, match="bad value 7") as info:
        r.get(timeout=1)
    assert type(info.value) is ValueError
    assert "ValueError" in r.traceback and "bad value 7" in r.traceback
    assert isinstance(r.result, ValueError) and r.result.args == ("bad value 7",)


def test_failure_reraises_a_custom_exception(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_failure(tid, raised(MyError("custom", 42)))
    with pytest.raises(MyError) as info:
        AsyncResult(tid, backend=backend).get(timeout=1)
    assert type(info.value) is MyError
    assert info.value.args == ("custom", 42)


def test_custom_exception_with_its_own_constructor(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_failure(tid, raised(TwoArgError(404, "not found")))
    with pytest.raises(TwoArgError) as info:
        AsyncResult(tid, backend=backend).get(timeout=1)
    assert (info.value.code, info.value.text) == (404, "not found")


def test_unimportable_exception_comes_back_as_remote_error(backend: Backend) -> None:
    class LocalError(Exception):  # qualname has <locals>: cannot be found by name
        pass

    tid = new_id()
    backend.mark_as_failure(tid, raised(LocalError("gone")))
    with pytest.raises(RemoteError) as info:
        AsyncResult(tid, backend=backend).get(timeout=1)
    assert "LocalError" in info.value.exc_type
    assert "LocalError" in str(info.value) and "gone" in str(info.value)


def test_exception_from_an_unknown_module_comes_back_as_remote_error(backend: Backend) -> None:
    # What a Celery worker stores for an exception defined in the worker's own code.
    tid = new_id()
    meta = {"status": "FAILURE", "task_id": tid, "traceback": "Traceback ...",
            "children": [], "date_done": None,
            "result": {"exc_type": "NoSuchErr", "exc_message": ["bad", 3],
                       "exc_module": "nowhere_to_be_found.errors"}}
    backend._set(tid, json.dumps(meta).encode(), None, True)
    r = AsyncResult(tid, backend=backend)
    with pytest.raises(RemoteError) as info:
        r.get(timeout=1)
    err = info.value
    assert err.exc_type == "NoSuchErr"
    assert err.exc_module == "nowhere_to_be_found.errors"
    assert "NoSuchErr" in str(err) and "bad" in str(err)
    assert r.traceback == "Traceback ..."


def test_reading_a_failure_never_imports_the_module_it_names(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The module name comes from the result store; importing it would run its code.
    name = f"unit_side_effect_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Boom(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tid = new_id()
    meta = {"status": "FAILURE", "task_id": tid, "traceback": None,
            "result": {"exc_type": "Boom", "exc_message": ["x"], "exc_module": name}}
    backend._set(tid, json.dumps(meta).encode(), None, True)
    with pytest.raises(RemoteError, match="Boom"):
        AsyncResult(tid, backend=backend).get(timeout=1)
    assert not marker.exists()
    assert name not in __import__("sys").modules


def test_exc_type_that_is_not_an_exception_is_not_instantiated(backend: Backend) -> None:
    tid = new_id()
    meta = {"status": "FAILURE", "task_id": tid, "traceback": None,
            "result": {"exc_type": "dict", "exc_message": [], "exc_module": "builtins"}}
    backend._set(tid, json.dumps(meta).encode(), None, True)
    with pytest.raises(RemoteError):
        AsyncResult(tid, backend=backend).get(timeout=1)


def test_celery_exception_dict_with_string_message(backend: Backend) -> None:
    tid = new_id()
    meta = {"status": "FAILURE", "task_id": tid, "traceback": None,
            "result": {"exc_type": "KeyError", "exc_message": "missing",
                       "exc_module": "builtins"}}
    backend._set(tid, json.dumps(meta).encode(), None, True)
    with pytest.raises(KeyError, match="missing"):
        AsyncResult(tid, backend=backend).get(timeout=1)


def test_get_without_propagate_returns_the_exception(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_failure(tid, raised(ValueError("quiet")))
    value = AsyncResult(tid, backend=backend).get(timeout=1, propagate=False)
    assert isinstance(value, ValueError) and value.args == ("quiet",)


def test_revoked_raises_task_revoked_error(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_revoked(tid, "expired")
    r = AsyncResult(tid, backend=backend)
    assert r.state == states.REVOKED and r.ready() and not r.failed()
    with pytest.raises(TaskRevokedError, match="expired"):
        r.get(timeout=1)


def test_exception_args_that_are_not_json_are_stored_as_repr(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_failure(tid, raised(ValueError(object())))
    with pytest.raises(ValueError, match="object object at"):
        AsyncResult(tid, backend=backend).get(timeout=1)


# -- retry and custom states ------------------------------------------------------------
def test_retry_state_is_not_ready_and_exposes_the_exception(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_retry(tid, raised(ConnectionError("later")))
    r = AsyncResult(tid, backend=backend)
    assert r.state == states.RETRY
    assert not r.ready() and not r.failed() and not r.successful()
    assert isinstance(r.info, ConnectionError) and r.info.args == ("later",)
    with pytest.raises(TimeoutError):
        r.get(timeout=0.1)


def test_custom_state_with_meta(backend: Backend) -> None:
    tid = new_id()
    backend.store_result(tid, {"current": 5, "total": 10}, "PROGRESS")
    r = AsyncResult(tid, backend=backend)
    assert r.state == r.status == "PROGRESS"
    assert r.info == r.result == {"current": 5, "total": 10}
    assert not r.ready() and not r.successful() and not r.failed()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.1)


def test_state_follows_the_task_until_it_is_ready(backend: Backend) -> None:
    tid = new_id()
    r = AsyncResult(tid, backend=backend)
    backend.mark_as_started(tid, pid=1, hostname="w1")
    assert r.state == states.STARTED and r.info == {"pid": 1, "hostname": "w1"}
    backend.store_result(tid, {"current": 1}, "PROGRESS")
    assert r.state == "PROGRESS"
    backend.mark_as_done(tid, 3)
    assert r.state == states.SUCCESS and r.get(timeout=1) == 3


# -- forget, serializability, expiry -----------------------------------------------------
def test_forget(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_done(tid, 1)
    r = AsyncResult(tid, backend=backend)
    assert r.get(timeout=1) == 1
    r.forget()
    assert r.state == states.PENDING
    assert AsyncResult(tid, backend=backend).state == states.PENDING


def test_result_that_cannot_be_encoded_is_stored_as_failure(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_done(tid, {"conn": object()})
    r = AsyncResult(tid, backend=backend)
    assert r.state == states.FAILURE  # not stuck in PENDING forever
    with pytest.raises(ResultNotSerializable) as info:
        r.get(timeout=1)
    text = str(info.value)
    assert tid in text and "json" in text and "object" in text


def test_results_expire(make_backend: BackendFactory) -> None:
    # long enough that a loaded machine (the suite in parallel) reads it before it goes
    backend = make_backend(BackendOptions(expires=0.5))
    tid = new_id()
    backend.mark_as_done(tid, "soon gone")
    assert AsyncResult(tid, backend=backend).state == states.SUCCESS
    time.sleep(0.6)
    assert AsyncResult(tid, backend=backend).state == states.PENDING


def test_no_expiry_when_expires_is_none(make_backend: BackendFactory) -> None:
    backend = make_backend(BackendOptions(expires=None))
    tid = new_id()
    backend.mark_as_done(tid, "kept")
    time.sleep(0.02)
    assert AsyncResult(tid, backend=backend).get(timeout=1) == "kept"


def test_ready_result_is_read_once(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    tid = new_id()
    backend.mark_as_done(tid, 5)
    r = AsyncResult(tid, backend=backend)
    assert r.get(timeout=1) == 5
    reads: list[str] = []
    original = backend.get_task_meta

    def counting(task_id: str) -> dict[str, Any]:
        reads.append(task_id)
        return original(task_id)

    monkeypatch.setattr(backend, "get_task_meta", counting)
    assert (r.state, r.result, r.get()) == (states.SUCCESS, 5, 5)
    assert reads == []


def test_get_inside_a_task_is_refused(backend: Backend) -> None:
    tid = new_id()
    backend.mark_as_done(tid, 1)
    token = _state.current_task.set(object())  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="within a task"):
            AsyncResult(tid, backend=backend).get(timeout=1)
        assert AsyncResult(tid, backend=backend).get(
            timeout=1, disable_sync_subtasks=False) == 1
    finally:
        _state.current_task.reset(token)


# -- connect ----------------------------------------------------------------------------
def test_connect_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    assert isinstance(connect(f"memory://unit-{uuid.uuid4()}"), MemoryBackend)
    assert isinstance(connect("cache+memory://"), MemoryBackend)
    backend = connect(f"sqlite:///{tmp_path}/c.db")
    try:
        assert isinstance(backend, SQLiteBackend)
        backend.mark_as_done("x", 1)
        assert (tmp_path / "c.db").exists()
    finally:
        backend.close()
    # db+sqlite:// is Celery's SQLAlchemy backend: Celery's tables in the SQLite file
    from celeriac.backends.database import DatabaseBackend

    db_backend = connect(f"db+sqlite:///{tmp_path}/d.db")
    assert isinstance(db_backend, DatabaseBackend)
    db_backend.close()
