"""``AsyncResult``: the handle on a task's state and return value."""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator

from . import _state, states
from .exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .app import Celery
    from .backends import Backend

# How many members ahead a waiting ResultSet.join reads in one bulk read.
PREFETCH_WINDOW = 100

_GET_IN_TASK = (
    "Never call result.get() within a task: it can deadlock the worker when every slot "
    "waits on a task that has no free slot to run. Chain the tasks instead "
    "(add.s(2, 2) | mul.s(4)), or pass disable_sync_subtasks=False if you really must."
)


class ResultBase:
    """What every result type is (Celery's name): ``isinstance(v, ResultBase)``."""

    parent: Any = None


class AsyncResult(ResultBase):
    """The state and result of one task, read from the result backend.

    Args:
        id: the task id.
        backend: where to read; defaults to the app's backend.
        app: the app; defaults to the current app.
    """

    def __init__(self, id: str, backend: Backend | None = None, task_name: str | None = None,
                 app: Celery | None = None, parent: Any = None) -> None:
        if id is None:
            raise ValueError("AsyncResult needs a task id, got None")
        self.id = str(id)
        self.app = app or _state.get_current_app()
        self._backend = backend
        self.task_name = task_name
        self.parent: Any = parent
        #: the task was sent with ``ignore_result``: nothing will be stored, so ``get()``
        #: returns None at once. Only the AsyncResult returned by the call knows this;
        #: one built later from the id reads the backend and stays PENDING.
        self.ignored = False
        self._cache: dict[str, Any] | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.app is None:
                raise ImproperlyConfigured("AsyncResult needs an app or a backend")
            self._backend = self.app.backend
        return self._backend

    # -- reading ----------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, no_ack: bool = True, follow_parents: bool = True,
            disable_sync_subtasks: bool = True, callback: Any = None,
            on_message: Any = None, on_interval: Any = None) -> Any:
        """Wait for the task and return its result.

        Raises:
            RuntimeError: called inside a task without ``disable_sync_subtasks=False``.
            TimeoutError: not ready within ``timeout`` seconds.
            Exception: the task's own exception (re-created) when it failed and
                ``propagate`` is true.
        """
        meta = self._ready_meta_or_none(disable_sync_subtasks)
        if self.ignored:
            return None
        if meta is None:
            meta = self._cache = self.backend.wait_for(self.id, timeout=timeout,
                                                       interval=interval)
        if callback is not None:
            callback(self.id, meta.get("result"))
        return self._value(meta, propagate)

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5, disable_sync_subtasks: bool = True) -> Any:
        """``get()`` for asyncio code (FastAPI, aiohttp): the event loop runs on while
        the result comes (on Redis, woken by the same notification as ``get()``).

        Raises:
            RuntimeError: awaited inside a task without ``disable_sync_subtasks=False``.
            TimeoutError: not ready within ``timeout`` seconds.
            Exception: the task's own exception when it failed and ``propagate``.
        """
        meta = self._ready_meta_or_none(disable_sync_subtasks)
        if self.ignored:
            return None
        if meta is None:
            meta = self._cache = await self.backend.await_for(self.id, timeout=timeout,
                                                              interval=interval)
        return self._value(meta, propagate)

    def _ready_meta_or_none(self, disable_sync_subtasks: bool) -> dict[str, Any] | None:
        # What get() and aget() check before waiting: the rule against waiting inside a
        # task, then a result already known.
        if disable_sync_subtasks and not self.ignored and _state.current_task.get() is not None:
            raise RuntimeError(_GET_IN_TASK)
        return self._cache

    def _value(self, meta: dict[str, Any], propagate: bool) -> Any:
        status = meta.get("status")
        if status in states.EXCEPTION_STATES:
            exc = self.backend.exception_to_python(meta.get("result"))
            if propagate and status in states.PROPAGATE_STATES:
                raise exc
            return exc
        return meta.get("result")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def state(self) -> str:
        return self._meta().get("status", states.PENDING)

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception, or the meta of a custom state."""
        meta = self._meta()
        return self._value(meta, propagate=False)

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        value = self._meta().get("date_done")
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    @property
    def children(self) -> list[Any]:
        """Results of the tasks this one sent while it ran (recorded when it ended)."""
        return [result_from_tuple(child, self.app)
                for child in self._meta().get("children") or []]

    def collect(self, intermediate: bool = False, **get_options: Any) -> Iterator[
            tuple[Any, Any]]:
        """``(result, value)`` for this task and every task it sent, depth first,
        waiting for each as ``get()`` does (``get_options`` are ``get``'s).

        Celery's rule: the tree is followed through ``children``, so the senders must
        keep ``trail`` on (the default). A node that is not ready when reached raises
        ``IncompleteStream`` unless ``intermediate`` is true.
        """
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**get_options)

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[Any, Any]]:
        """``(parent, node)`` pairs of the tree ``collect()`` walks."""
        from .exceptions import IncompleteStream

        stack: deque[tuple[Any, Any]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise IncompleteStream()

    @property
    def name(self) -> str | None:
        return self._meta().get("name") or self.task_name

    @property
    def args(self) -> Any:
        return self._meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._meta().get("kwargs")

    @property
    def worker(self) -> str | None:
        return self._meta().get("worker")

    @property
    def retries(self) -> int | None:
        return self._meta().get("retries")

    @property
    def queue(self) -> str | None:
        return self._meta().get("queue")

    def revoke(self, connection: Any = None, terminate: bool = False,
               signal: str | int | None = None, wait: bool = False,
               timeout: float | None = None) -> None:
        """Revoke this task (see ``app.control.revoke``)."""
        if self.app is None:
            raise ImproperlyConfigured("revoking needs an app")
        self.app.control.revoke(self.id, terminate=terminate, signal=signal or "SIGTERM")

    def forget(self) -> None:
        """Remove the result from the backend."""
        self._cache = None
        self.backend.forget(self.id)

    def as_tuple(self) -> tuple[Any, ...]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class ResultSet(ResultBase):
    """Several results handled as one: ``get``/``join`` return their values in order.

    Args:
        results: the member results.
        app: the app; defaults to the first member's, then the current one.
    """

    def __init__(self, results: Any, app: Celery | None = None, **kwargs: Any) -> None:
        self.results: list[AsyncResult] = list(results)
        self.app = app or (self.results[0].app if self.results else None) or \
            _state.get_current_app()

    def add(self, result: AsyncResult) -> None:
        if result not in self.results:
            self.results.append(result)

    def discard(self, result: AsyncResult) -> None:
        if result in self.results:
            self.results.remove(result)

    remove = discard

    def clear(self) -> None:
        self.results.clear()

    def ready(self) -> bool:
        """Whether every member is ready."""
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """Whether any member failed."""
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for r in self.results if r.successful())

    def revoke(self, connection: Any = None, terminate: bool = False,
               signal: str | int | None = None, wait: bool = False,
               timeout: float | None = None) -> None:
        for r in self.results:
            r.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, callback: Any = None, no_ack: bool = True,
            on_message: Any = None, disable_sync_subtasks: bool = True,
            on_interval: Any = None) -> list[Any]:
        """Wait for every member; see ``join``."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         callback=callback, disable_sync_subtasks=disable_sync_subtasks)

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float = 0.5, callback: Any = None, no_ack: bool = True,
             on_message: Any = None, on_interval: Any = None,
             disable_sync_subtasks: bool = True) -> list[Any]:
        """The members' values in order, waiting at most ``timeout`` seconds in all.

        Raises:
            TimeoutError: not all ready in time.
            Exception: the first failed member's error, when ``propagate``.
        """
        if disable_sync_subtasks and _state.current_task.get() is not None:
            raise RuntimeError(_GET_IN_TASK)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._prefetch(self.results)
        values = []
        for index, r in enumerate(self.results):
            if r._cache is None:
                # Members finish roughly in order: one bulk read of the next ones finds
                # most of them ready, so only a few are waited for one at a time.
                self._prefetch(self.results[index:index + PREFETCH_WINDOW])
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = r.get(timeout=remaining, propagate=propagate, interval=interval,
                          disable_sync_subtasks=False)
            if callback is not None:
                callback(r.id, value)
            else:
                values.append(value)
        return values

    join_native = join

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5, disable_sync_subtasks: bool = True) -> list[Any]:
        """``get()`` for asyncio code: the members' values in order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._prefetch(self.results)
        values = []
        for r in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(await r.aget(timeout=remaining, propagate=propagate,
                                       interval=interval,
                                       disable_sync_subtasks=disable_sync_subtasks))
        return values

    def _prefetch(self, members: list[AsyncResult]) -> None:
        # One bulk read of the members' metas, so only the unfinished ones are waited
        # for one by one (a large group on Redis: one MGET per thousand).
        pending = [r for r in members
                   if r._cache is None and not r.ignored and type(r) is AsyncResult]
        if len(pending) < 2 or self.app is None:
            return
        by_backend: dict[int, list[AsyncResult]] = {}
        for r in pending:
            by_backend.setdefault(id(r.backend), []).append(r)
        for members in by_backend.values():
            metas = members[0].backend.get_many_metas([r.id for r in members])
            for r, meta in zip(members, metas):
                if meta.get("status") in states.READY_STATES:
                    r._cache = meta

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.results))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, under the group's id.

    ``save()`` stores the member ids in the result backend (``celery-taskset-meta-<id>``
    on Redis) and ``GroupResult.restore(id)`` reads them back.
    """

    def __init__(self, id: str | None = None, results: Any = None,
                 parent: Any = None, app: Celery | None = None, **kwargs: Any) -> None:
        super().__init__(results or [], app=app)
        self.id = id
        self.parent: Any = parent

    @property
    def backend(self) -> Backend:
        if self.app is None:
            raise ImproperlyConfigured("GroupResult needs an app")
        return self.app.backend

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    def save(self, backend: Backend | None = None) -> GroupResult:
        (backend or self.backend).save_group(str(self.id), self.as_tuple())
        return self

    def delete(self, backend: Backend | None = None) -> None:
        (backend or self.backend).delete_group(str(self.id))

    @classmethod
    def restore(cls, id: str, backend: Backend | None = None,
                app: Celery | None = None) -> GroupResult | None:
        """The group saved under ``id``, or None."""
        app = app or _state.get_current_app()
        if backend is None:
            if app is None:
                raise ImproperlyConfigured("GroupResult.restore needs an app or a backend")
            backend = app.backend
        value = backend.restore_group(id)
        if value is None:
            return None
        return result_from_tuple(value, app=app)

    def as_tuple(self) -> tuple[Any, ...]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [r.as_tuple() for r in self.results])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def result_from_tuple(value: Any, app: Celery | None = None) -> Any:
    """Rebuild an ``AsyncResult`` or ``GroupResult`` from its ``as_tuple()`` form."""
    (id_, parent), members = value
    parent_result = result_from_tuple(parent, app) if parent else None
    if members is not None:
        return GroupResult(id_, [result_from_tuple(m, app) for m in members],
                           parent=parent_result, app=app)
    return AsyncResult(id_, app=app, parent=parent_result)


class EagerResult(AsyncResult):
    """The result of ``task.apply()``: already known, nothing to read."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None,
                 name: str | None = None) -> None:
        self.id = id
        self.app = None
        self._backend = None
        self.task_name = name
        self.parent = None
        self.ignored = False
        self._value_ = value
        self._state = state
        self._traceback = traceback
        self._cache = None

    def _meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value_, "traceback": self._traceback}

    def get(self, timeout: float | None = None, propagate: bool = True,  # type: ignore[override]
            disable_sync_subtasks: bool = True, **kwargs: Any) -> Any:
        if self._state in states.PROPAGATE_STATES and propagate:
            raise self._value_
        return self._value_

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5, disable_sync_subtasks: bool = True) -> Any:
        return self.get(propagate=propagate)

    @property
    def result(self) -> Any:
        return self._value_

    info = result

    def forget(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
