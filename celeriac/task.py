"""Tasks: the ``Task`` class, the request context, and the decorators that make them.

``@app.task`` turns a function into a singleton instance of a ``Task`` subclass, as Celery
does, so that custom bases (``app.Task = ContextTask``), ``bind=True`` and class-level
options all work the way Celery users expect.
"""

from __future__ import annotations

import contextvars
import importlib
from datetime import datetime, timedelta, timezone
from typing import (TYPE_CHECKING, Any, Callable, Concatenate, Generic, Literal, ParamSpec,
                    TypeVar, overload)

from . import _state, states
from .context import Context
from .exceptions import Ignore, ImproperlyConfigured, MaxRetriesExceededError, Reject, Retry
from .retries import install_autoretry, resend_options
from .worker.execute import run_eagerly
from .worker.outcome import TaskEnd

if TYPE_CHECKING:
    from .app import Celery
    from .canvas import Signature
    from .result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


class _RequestStack:
    """The requests a task is running under, per thread and per asyncio task.

    A context variable rather than a thread-local: many runs of one ``async def`` task
    share the worker's event-loop thread, and each must see its own request.
    """

    __slots__ = ("_var",)

    def __init__(self) -> None:
        self._var: contextvars.ContextVar[tuple[Context, ...]] = contextvars.ContextVar(
            "celeriac_requests", default=())

    def top(self) -> Context | None:
        stack = self._var.get()
        return stack[-1] if stack else None

    def push(self, request: Context) -> None:
        self._var.set(self._var.get() + (request,))

    def pop(self) -> None:
        self._var.set(self._var.get()[:-1])


class Task(Generic[P, R]):
    """Base class of every task; subclass it to share behaviour between tasks.

    Class attributes are the task's options (``max_retries``, ``ignore_result`` ...);
    ``None`` means "use the app's setting".
    """

    name: str = ""
    typing: bool = True
    max_retries: int | None = 3
    default_retry_delay: float = 3 * 60
    rate_limit: str | None = None
    #: celeriac: a rate shared by every worker, through the broker ('100/m' ...)
    global_rate_limit: str | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    serializer: str | None = None
    compression: str | None = None
    expires: float | datetime | None = None
    priority: int | None = None
    resultrepr_maxsize: int = 1024
    send_events: bool = True
    trail: bool = True
    throws: tuple[type[BaseException], ...] = ()
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    abstract: bool = True
    _app: Celery | None = None
    _bound_app: Celery | None = None
    __wrapped__: Callable[..., Any] | None = None

    def __init__(self) -> None:
        self._requests = _RequestStack()

    # -- the app ----------------------------------------------------------------------
    @property
    def app(self) -> Celery:
        app = self._bound_app or type(self)._app or _state.get_current_app()
        if app is None:
            raise ImproperlyConfigured(
                f"task {self.name!r} is a shared_task used before any Celery app exists; "
                "create the app first (for Django: import your project's celery module in "
                "its __init__.py)")
        return app

    def bind(self, app: Celery) -> None:
        self._bound_app = app

    @property
    def backend(self) -> Any:
        return self.app.backend

    # -- running ----------------------------------------------------------------------
    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:  # pragma: no cover - replaced
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        requests = self._requests
        pushed = False
        if requests.top() is None:
            # A direct call (not from a worker) still gets a request, as in Celery.
            requests.push(Context(args=args, kwargs=kwargs, called_directly=True))
            pushed = True
        # current_task is this task while it runs, called directly too, as in Celery
        token = _state.current_task.set(self)
        try:
            return self.run(*args, **kwargs)
        finally:
            _state.current_task.reset(token)
            if pushed:
                requests.pop()

    @property
    def request(self) -> Context:
        return self._requests.top() or Context()

    def push_request(self, request: Context | None = None, **fields: Any) -> None:
        self._requests.push(request or Context(**fields))

    def pop_request(self) -> None:
        self._requests.pop()

    # -- calling ----------------------------------------------------------------------
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; a shortcut for ``apply_async``."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay`` once the current Django transaction commits (Celery 5.4+); needs
        ``celeriac[django]``. Returns None: nothing is sent yet."""
        from .contrib.django.transactions import on_commit

        on_commit(self.delay, args, kwargs)

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async`` once the current Django transaction commits (Celery 5.4+)."""
        from .contrib.django.transactions import on_commit

        on_commit(self.apply_async, args, kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` for asyncio code: the message is sent off the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                           **options: Any) -> AsyncResult[R]:
        """``apply_async`` for asyncio code: the message is sent off the event loop.

        A publish is one quick round trip, but a broker that is slow or down (retried
        per ``task_publish_retry_policy``) would stall every request the loop serves.
        """
        import asyncio

        return await asyncio.to_thread(self.apply_async, args, kwargs, **options)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, link: Any = None, link_error: Any = None,
                    shadow: str | None = None, **options: Any) -> AsyncResult[R]:
        """Send the task to a worker, with Celery's options.

        Args:
            args: positional arguments of the task.
            kwargs: keyword arguments of the task.
            task_id: the id to use (default: a new uuid4).
            link: signature(s) to call with the result when the task succeeds.
            link_error: signature(s) to call when the task fails.
            shadow: another name to show in logs.
            **options: ``countdown``, ``eta``, ``expires``, ``queue``, ``priority``,
                ``ignore_result``, ``retry``, ``retry_policy``, ``headers`` ... (see
                ``Celery.send_task``); one celeriac does not use is warned about.

        Returns:
            The ``AsyncResult`` (an ``EagerResult`` under ``task_always_eager``).
        """
        app = self.app
        app.ensure_annotated(self)
        if app.conf.task_always_eager:
            if options:
                app._warn_unused_options(options)
            return self.apply(args, kwargs, task_id=task_id, link=link,
                              link_error=link_error, shadow=shadow, **options)
        for key in ("time_limit", "soft_time_limit", "priority", "serializer", "compression"):
            if options.get(key) is None:
                value = getattr(self, key, None)
                if value is not None:
                    options[key] = value
        if options.get("expires") is None and self.expires is not None:
            options["expires"] = self.expires
        if options.get("ignore_result") is None:
            options["ignore_result"] = bool(self.ignore_result if self.ignore_result is not None
                                            else app.conf.task_ignore_result)
        return app.send_task(self.name, args, kwargs, task_id=task_id, link=link,
                             link_error=link_error, shadow=shadow, task=self, **options)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              task_id: str | None = None, link: Any = None, link_error: Any = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> EagerResult[R]:
        """Run the task here and now, as a worker would, and return an ``EagerResult``.

        Handlers, signals and ``link``/``link_error`` run as in a worker. A retry runs
        the task again at once (countdowns are not waited for) until it succeeds or
        its retries are used up. Nothing is stored unless ``task_store_eager_result``.

        Args:
            throw: raise the task's exception instead of returning it in the result
                (default: ``task_eager_propagates``).
        """
        self.app.ensure_annotated(self)
        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        return run_eagerly(self, args, kwargs, task_id=task_id, retries=retries, link=link,
                           link_error=link_error, throw=throw, options=options)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[R]:  # noqa: N802
        return self.app.AsyncResult(task_id, task_name=self.name, **kwargs)

    def signature(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Signature:
        from .canvas import Signature

        return Signature(self.name, args, kwargs, options, app=self._bound_app or type(self)._app)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """An immutable signature: called with exactly these arguments, so they are
        checked against the task's (``s()`` takes some now and the rest later)."""
        sig = self.signature(args, kwargs)
        sig["immutable"] = True
        return sig

    # -- inside a running task --------------------------------------------------------
    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Record a state (often a custom one like ``PROGRESS``) with ``meta`` as info."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state needs a task_id outside a running task")
        self.backend.store_result(task_id, meta, state or states.PENDING,
                                  request=self.request)

    def replace(self, sig: Any) -> Any:
        """Replace the running task by ``sig``, which takes over its id and its place.

        The replacement is sent with this task's id, so whoever waits on this task's
        result gets the replacement's; it also takes over the rest of this task's chain,
        its callbacks and errbacks, and its place in a group or chord. A group is
        replaced by a chord that gathers the group's results into one list. Use it as
        ``raise self.replace(sig)`` (or ``return``) in a bound task.

        Raises:
            Ignore: in a worker, always: this run records nothing and sends nothing on.
            RuntimeError: called outside a running task.
        """
        from .canvas import _chain, chain, chord, group, signature

        request = self.request
        if request.called_directly or request.id is None:
            raise RuntimeError("replace() works only inside a running task")
        sig = signature(sig, app=self.app).clone()
        if request.is_eager:
            return sig.apply().get(disable_sync_subtasks=False)
        if isinstance(sig, group):
            sig = chord(sig, self.app.signature("celery.accumulate", kwargs={"index": 0}))
        steps = sig.tasks if isinstance(sig, _chain) else [sig]
        # What this task would have triggered, the replacement's last step triggers.
        for callback in request.callbacks or ():
            steps[-1].link(signature(callback, app=self.app))
        for errback in request.errbacks or ():
            for step in steps:
                step.link_error(signature(errback, app=self.app))
        sig.freeze(request.id)
        steps = sig.tasks if isinstance(sig, _chain) else [sig]
        # A chord's result is its body's: that is what takes this task's place.
        placed = steps[-1].body if isinstance(steps[-1], chord) else steps[-1]
        assert placed is not None
        placement = {"chord": request.chord, "group_id": request.group,
                     "group_index": request.group_index}
        placed.options.update({key: value for key, value in placement.items()
                               if value is not None})
        if isinstance(steps[-1], chord):
            steps[-1].kwargs["body"] = placed
        rest = [signature(step, app=self.app) for step in reversed(request.chain or ())]
        chain(*steps, *rest, app=self.app).apply_async(root_id=request.root_id)
        raise Ignore("replaced by a new task")

    def add_to_chord(self, sig: Any, lazy: bool = False) -> Any:
        """Add ``sig`` to the header of the chord this task belongs to: the body waits
        for it too and gets its result last.

        Returns:
            The added task's result, or with ``lazy=True`` the prepared signature, which
            the caller then sends with ``.delay()``.

        Raises:
            ValueError: this task is not a chord header task.
        """
        from .canvas import signature

        request = self.request
        if not request.group or not request.chord:
            raise ValueError("add_to_chord() works only in a task of a chord header")
        sig = signature(sig, app=self.app).clone()
        size = self.backend.add_to_chord(request.group)
        sig.freeze(group_id=request.group, group_index=size - 1)
        sig.set(chord=request.chord, root_id=request.root_id)
        return sig if lazy else sig.apply_async()

    def retry(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True,
              eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Send this task again (same id, ``request.retries`` + 1) and raise ``Retry``.

        Use it as ``raise self.retry(exc=exc, countdown=5)`` in a bound task. The task
        state is RETRY (with ``exc`` as its info) until the next run.

        Args:
            args: new positional arguments (default: the current ones).
            kwargs: new keyword arguments (default: the current ones).
            exc: the error that caused the retry; raised as the task's own error once
                the retries are used up.
            throw: raise ``Retry`` (default); with False, return it and let the task go on.
            eta: when to run again (a datetime).
            countdown: seconds to wait before running again (default:
                ``default_retry_delay``).
            max_retries: overrides the task's ``max_retries`` for this call.
            **options: more ``apply_async`` options for the new message (``queue`` ...).

        Returns:
            The ``Retry`` exception, when ``throw`` is false.

        Raises:
            Retry: the task will run again.
            MaxRetriesExceededError: the retries are used up and no ``exc`` was given.
            Exception: ``exc`` itself when the retries are used up, or at once when the
                task was called directly (not by a worker nor ``apply()``).
            Reject: the new message could not be sent; the worker sets this one aside.
        """
        request = self.request
        retries = (request.retries or 0) + 1
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            # Not run by a worker nor apply(): nothing can run it again.
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        if limit is not None and retries > limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}", task_args=request.args, task_kwargs=request.kwargs)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        new_args = request.args if args is None else args
        new_kwargs = request.kwargs if kwargs is None else kwargs
        err = Retry(exc=exc, when=eta if eta is not None else countdown,
                    is_eager=bool(request.is_eager))
        if request.is_eager:
            # apply() runs the signature again in this process, at once.
            err.sig = self.signature(new_args, new_kwargs, retries=retries)
        else:
            TaskEnd(self.app).retrying(self, request, exc if exc is not None else err)
            err.stored = True
            if eta is None and countdown is not None:
                eta = datetime.now(timezone.utc) + timedelta(seconds=countdown)
            send = resend_options(request)
            if "queue" in options:  # a new queue: forget the old exchange and key too
                for key in ("queue", "exchange", "routing_key"):
                    send.pop(key, None)
            send.update(options)
            try:
                self.app.send_task(self.name, new_args, new_kwargs, retries=retries, eta=eta,
                                   task=self, **send)
            except Exception as send_exc:
                # The retry cannot be sent: set the message aside rather than lose it.
                raise Reject(send_exc, requeue=False) from send_exc
        if throw:
            raise err
        return err

    # -- handlers (no-ops unless overridden) -------------------------------------------
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker when the task returned."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """Called in the worker when the task raised."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        """Called in the worker when the task asked to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Called in the worker after the task finished, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def make_task(app: Celery | None, fun: Callable[..., Any], base: type[Task[Any, Any]],
              name: str | None, bind: bool, options: dict[str, Any]) -> Task[Any, Any]:
    """Build the singleton task for ``fun`` as an instance of a fresh ``base`` subclass."""
    task_name = name or _default_name(app, fun)
    if "once" in options:
        # @app.task(once=...) makes a QueueOnce task. contrib/once builds on this module,
        # so it is found by name when used, and the imports run one way.
        base = importlib.import_module("celeriac.contrib.once").once_base(base, options)
    run = fun if bind else staticmethod(fun)
    attrs: dict[str, Any] = {
        "name": task_name, "run": run, "_app": app, "abstract": False,
        "__doc__": fun.__doc__, "__module__": fun.__module__, "__wrapped__": fun,
        "__qualname__": getattr(fun, "__qualname__", task_name),
    }
    for key in ("autoretry_for", "dont_autoretry_for", "throws"):
        if key in options:
            options[key] = tuple(options[key])
    attrs.update(options)
    cls = type(fun.__name__, (base,), attrs)
    task = cls()
    install_autoretry(task)
    return task


def annotate(task: Task[Any, Any], annotations: Any) -> None:
    """Apply ``task_annotations`` to ``task``: set the attributes they give it.

    ``annotations`` is one entry or a list of them; an entry is a dict (task name or
    ``'*'`` to a dict of attributes), an object with ``annotate(task)`` returning such a
    dict (or None), a function of the task, or the dotted name of one of these. The
    ``'*'`` attributes are set first, then those for the task's own name, so the more
    specific entry wins. Attributes are set on the task's class so that handlers given
    as functions (``on_failure``) are methods; a key starting with ``@`` wraps the
    method it names: ``around(original_method)`` returns the replacement.
    """
    if not annotations:
        install_autoretry(task)  # a class-based task may set autoretry_for itself
        return
    if isinstance(annotations, (dict, str)) or not isinstance(annotations, (list, tuple)):
        annotations = [annotations]
    named: dict[str, Any] | None = None
    any_task: dict[str, Any] | None = None
    for entry in annotations:
        if isinstance(entry, str):
            from .utils.imports import symbol_by_name

            entry = symbol_by_name(entry)
        if isinstance(entry, dict):
            if named is None and task.name in entry:
                named = entry[task.name]
            if any_task is None and "*" in entry:
                any_task = entry["*"]
        elif hasattr(entry, "annotate"):
            if named is None:
                named = entry.annotate(task)
            if any_task is None and hasattr(entry, "annotate_any"):
                any_task = entry.annotate_any()
        elif callable(entry) and named is None:
            named = entry(task)
    cls = type(task)
    for found in (any_task, named):
        for key, value in (found or {}).items():
            if key.startswith("@"):
                attr = key[1:]
                # Annotating again replaces an earlier wrapper instead of stacking on it.
                orig = getattr(cls, attr)
                orig = getattr(orig, "_celeriac_around_of", orig)
                method = value(orig)
                method._celeriac_around_of = orig
                setattr(cls, attr, method)
            else:
                if key in ("autoretry_for", "dont_autoretry_for", "throws"):
                    value = tuple(value)
                setattr(cls, key, value)
    install_autoretry(task)


def _default_name(app: Celery | None, fun: Callable[..., Any]) -> str:
    module = fun.__module__
    if module == "__main__" and app is not None and app.main:
        module = app.main
    # Celery names a task by its module and function name (not the qualified name),
    # and the names must agree for the two to call each other's tasks.
    return f"{module}.{fun.__name__}"


@overload
def shared_task(fun: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(*, bind: Literal[True], **options: Any
                ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...


@overload
def shared_task(*, bind: Literal[False] = ..., **options: Any
                ) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(*args: Any, **options: Any) -> Any:
    """Declare a task that belongs to whichever app is current when it is used.

    Django's reusable apps use this: the task module need not import the project's app.
    """
    def create(fun: Callable[..., Any]) -> Task[Any, Any]:
        rest = dict(options)
        base = rest.pop("base", None)
        name = rest.pop("name", None)
        bind = rest.pop("bind", False)
        task = make_task(None, fun, base or Task, name, bind, dict(rest))
        if base is None:
            # what an app with a Task class of its own needs to build its copy
            # (TaskRegistry), as Celery builds each app's shared tasks on its app.Task
            task._shared_spec = (fun, task.name, bind, rest)  # type: ignore[attr-defined]
        _state.shared_tasks[task.name] = task
        return task

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    return create
