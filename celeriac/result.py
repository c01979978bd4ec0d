"""``AsyncResult``: the handle on a task's state and return value."""

from __future__ import annotations

import time
import warnings
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from . import _state, states
from .exceptions import ImproperlyConfigured, TimeoutError

if TYPE_CHECKING:
    from .app import Celery
    from .backends import Backend

# How many members ahead a waiting ResultSet.join reads in one bulk read.
PREFETCH_WINDOW = 100

#: what the task returns: ``add.delay(1, 2).get()`` is an ``int`` to a type checker
R = TypeVar("R")

_GET_IN_TASK = (
    "Never call result.get() within a task: it can deadlock the worker when every slot "
    "waits on a task that has no free slot to run. Chain the tasks instead "
    "(add.s(2, 2) | mul.s(4)), or pass disable_sync_subtasks=False if you really must."
)


_warned_no_tblib = False
_TRACEBACK_START = "Traceback (most recent call last):"


def remote_traceback(text: str) -> Any:
    """A traceback object rebuilt from a worker's formatted traceback, or None.

    Only the last ``Traceback (most recent call last):`` section is used: that of the
    exception raised, not of the ones it was chained to. Needs tblib; without it a
    warning says to install it (once per process) and None is returned.
    """
    global _warned_no_tblib
    try:
        import tblib
    except ImportError:
        if not _warned_no_tblib:
            _warned_no_tblib = True
            from .config import IgnoredSettingWarning

            warnings.warn(IgnoredSettingWarning(
                "task_remote_tracebacks is set but tblib is not installed: task errors "
                "are raised without the worker's traceback (pip install tblib, or "
                "pip install 'celeriac[tblib]')"), stacklevel=4)
        return None
    start = text.rfind(_TRACEBACK_START)
    if start < 0:
        return None
    try:
        return tblib.Traceback.from_string(text[start:], strict=False).as_traceback()
    except Exception:  # noqa: BLE001 - an unusual text: raise as if the setting were off
        return None


class ResultBase:
    """What every result type is (Celery's name): ``isinstance(v, ResultBase)``."""

    parent: Any = None


class AsyncResult(ResultBase, Generic[R]):
    """The state and result of one task, read from the result backend.

    Generic in the task's return type (``AsyncResult[int]``), which ``get()`` returns.

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
            callback: Callable[[str, Any], Any] | None = None,
            on_message: Callable[[dict[str, Any]], Any] | None = None,
            on_interval: Callable[[], Any] | None = None,
            disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,  # noqa: N803
            PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,  # noqa: N803
            ) -> R:
        """Wait for the task and return its result (Celery's arguments, in its order).

        Args:
            timeout: seconds to wait at most; None waits for as long as it takes.
            propagate: raise the task's exception when it failed.
            interval: seconds between two reads of a store that cannot notify (SQLite),
                and between two ``on_interval`` calls and parent checks.
            no_ack: accepted as Celery does; it matters only where reading a result
                consumes it (Celery's rpc backend). celeriac's stores keep a result
                until it expires, so there is nothing to acknowledge.
            follow_parents: with ``propagate``, raise the error of a failed earlier step
                of a chain (the one nearest its start), checked before waiting and at
                each interval: the steps after a failure never run, so waiting for
                this one would last until ``timeout``.
            callback: called as ``callback(task_id, value)`` with the value returned.
            on_message: called with the meta (Celery's layout, the exception rebuilt
                for failure states) of each state the task is seen in while waiting:
                STARTED, custom states such as PROGRESS (read once per ``interval``,
                so a state that lasts less may be missed), and always the final one.
            on_interval: called each ``interval`` while the task is not ready.
            disable_sync_subtasks: refuse to wait inside a task (it can deadlock).
            EXCEPTION_STATES: states whose result is an exception.
            PROPAGATE_STATES: states whose exception is raised when ``propagate``.

        Raises:
            RuntimeError: called inside a task without ``disable_sync_subtasks=False``.
            TimeoutError: not ready within ``timeout`` seconds.
            Exception: the task's own exception (re-created) when it failed and
                ``propagate`` is true; with ``follow_parents``, a failed parent's.
        """
        meta = self._ready_meta_or_none(disable_sync_subtasks)
        if self.ignored:  # sent with ignore_result: None, whatever the task's type says
            return None  # type: ignore[return-value]
        check_parents = follow_parents and propagate and self.parent is not None
        if check_parents:
            self._raise_failed_parent()
        if meta is None:
            if on_message is None and on_interval is None and not check_parents:
                meta = self.backend.wait_for(self.id, timeout=timeout, interval=interval)
            else:
                meta = self._watch(timeout, interval, on_message, on_interval, check_parents)
            self._cache = meta
        if on_message is not None:
            on_message(self._message(meta))
        value = self._value(meta, propagate, EXCEPTION_STATES, PROPAGATE_STATES)
        if callback is not None:
            callback(self.id, value)
        return value

    def _watch(self, timeout: float | None, interval: float,
               on_message: Callable[[dict[str, Any]], Any] | None,
               on_interval: Callable[[], Any] | None, check_parents: bool) -> dict[str, Any]:
        # get() with something to do while it waits: wait one interval at a time (a
        # store that notifies still wakes it at once), and between two waits report a
        # new state, call on_interval and look at the parents. Returns the ready meta;
        # its on_message is get()'s.
        backend = self.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        reported: dict[str, Any] | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            step = interval if remaining is None else max(0.0, min(interval, remaining))
            try:
                return backend.wait_for(self.id, timeout=step, interval=interval)
            except TimeoutError:
                pass
            if on_message is not None:
                current = backend.get_task_meta(self.id)
                if current.get("status") in states.READY_STATES:
                    return current
                # A meta without date_done was never stored: nothing was sent yet.
                if "date_done" in current and current != reported:
                    reported = current
                    on_message(self._message(current))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} not ready after {timeout} seconds")
            if check_parents:
                self._raise_failed_parent()
            if on_interval is not None:
                on_interval()

    def _message(self, meta: dict[str, Any]) -> dict[str, Any]:
        """``meta`` as on_message receives it: the exception rebuilt, as Celery does."""
        if meta.get("status") in states.EXCEPTION_STATES:
            return dict(meta, result=self.backend.exception_to_python(meta.get("result")))
        return meta

    def _raise_failed_parent(self) -> None:
        """Raise the error of the failed parent nearest the start of the chain, if any.

        A ``GroupResult`` parent (a chord's header) is passed over: a header task that
        fails always fails the chord's body with a ``ChordError`` naming it, so the
        body's own result says it, and at a moment that does not depend on timing.
        """
        lineage = []
        node = self.parent
        while node is not None:
            lineage.append(node)
            node = node.parent
        for node in reversed(lineage):
            if isinstance(node, AsyncResult):
                meta = node._meta()
                if meta.get("status") in states.PROPAGATE_STATES:
                    node._value(meta, propagate=True)  # raises

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5, disable_sync_subtasks: bool = True) -> R:
        """``get()`` for asyncio code (FastAPI, aiohttp): the event loop runs on while
        the result comes (on Redis, woken by the same notification as ``get()``).

        Raises:
            RuntimeError: awaited inside a task without ``disable_sync_subtasks=False``.
            TimeoutError: not ready within ``timeout`` seconds.
            Exception: the task's own exception when it failed and ``propagate``.
        """
        meta = self._ready_meta_or_none(disable_sync_subtasks)
        if self.ignored:  # sent with ignore_result: None, whatever the task's type says
            return None  # type: ignore[return-value]
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

    def _value(self, meta: dict[str, Any], propagate: bool,
               exception_states: frozenset[str] = states.EXCEPTION_STATES,
               propagate_states: frozenset[str] = states.PROPAGATE_STATES) -> Any:
        status = meta.get("status")
        if status in exception_states:
            exc = self.backend.exception_to_python(meta.get("result"))
            if propagate and status in propagate_states:
                remote = self._remote_traceback(meta.get("traceback"))
                if remote is not None and isinstance(exc, BaseException):
                    raise exc.with_traceback(remote)
                raise exc
            return exc
        return meta.get("result")

    def _remote_traceback(self, text: Any) -> Any:
        """The worker's traceback as a traceback object, to raise the task's error with
        (``task_remote_tracebacks``), or None: the setting is off, there is no
        traceback, or tblib (which builds it) is not installed."""
        app = self.app
        if not text or not isinstance(text, str) or app is None \
                or not app.conf.task_remote_tracebacks:
            return None
        return remote_traceback(text)

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
            interval: float = 0.5, callback: Callable[[str, Any], Any] | None = None,
            no_ack: bool = True, on_message: Callable[[dict[str, Any]], Any] | None = None,
            disable_sync_subtasks: bool = True,
            on_interval: Callable[[], Any] | None = None) -> list[Any]:
        """Wait for every member; see ``join``."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         callback=callback, no_ack=no_ack, on_message=on_message,
                         disable_sync_subtasks=disable_sync_subtasks,
                         on_interval=on_interval)

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float = 0.5, callback: Callable[[str, Any], Any] | None = None,
             no_ack: bool = True, on_message: Callable[[dict[str, Any]], Any] | None = None,
             disable_sync_subtasks: bool = True,
             on_interval: Callable[[], Any] | None = None) -> list[Any]:
        """The members' values in order, waiting at most ``timeout`` seconds in all.

        The other arguments are ``AsyncResult.get``'s, applied to each member in turn:
        ``on_message`` sees each member's states (its final one at least), and
        ``callback(task_id, value)``, when given, receives each value instead of the
        returned list (which is then empty).

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
                          no_ack=no_ack, on_message=on_message, on_interval=on_interval,
                          disable_sync_subtasks=False)
            if callback is not None:
                callback(r.id, value)
            else:
                values.append(value)
        return values

    def join_native(self, timeout: float | None = None, propagate: bool = True,
                    interval: float = 0.5, callback: Callable[[str, Any], Any] | None = None,
                    no_ack: bool = True,
                    on_message: Callable[[dict[str, Any]], Any] | None = None,
                    on_interval: Callable[[], Any] | None = None,
                    disable_sync_subtasks: bool = True) -> list[Any]:
        """``join`` (one implementation serves both; Celery's argument order)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         callback=callback, no_ack=no_ack, on_message=on_message,
                         disable_sync_subtasks=disable_sync_subtasks,
                         on_interval=on_interval)

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


class EagerResult(AsyncResult[R]):
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
            disable_sync_subtasks: bool = True, **kwargs: Any) -> R:
        if self._state in states.PROPAGATE_STATES and propagate:
            raise self._value_
        return self._value_  # type: ignore[no-any-return]

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5, disable_sync_subtasks: bool = True) -> R:
        return self.get(propagate=propagate)

    @property
    def result(self) -> Any:
        return self._value_

    info = result

    def forget(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
