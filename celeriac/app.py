"""``Celery`` (alias ``App``): configuration, the task registry, sending, results."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
import uuid
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import (TYPE_CHECKING, Any, Callable, Concatenate, Iterable, Iterator, Literal,
                    ParamSpec, TypeVar, overload)

from . import _state, messages, signals
from .backends import Backend, BackendOptions
from .backends import connect as connect_backend
from .brokers import Broker, Outgoing
from .brokers import connect as connect_broker
from .config import IgnoredSettingWarning, Settings, seconds
from .control import Control
from .events import EventDispatcher, Events, LamportClock
from .exceptions import ImproperlyConfigured, NotRegistered
from .result import AsyncResult
from .routing import TaskRouter
from .retries import call_with_retry
from .task import Task, annotate, make_task
from .utils.pid import current_pid
from .utils.redis import split_failover
from .utils.urls import mask_password, scheme_of

if TYPE_CHECKING:
    from .canvas import Signature
    from .cli.programmatic import AppWorker

logger = logging.getLogger("celeriac.app")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SQLITE_FILE = "celeriac.sqlite3"
_UNSET = object()
# Brokers that take a list of URLs, and those broker_use_ssl applies to. A sentinel://
# list is not a fail-over list: it names the sentinels, which name the master.
_AMQP_SCHEMES = frozenset({"amqp", "pyamqp", "amqps", "pyamqps"})
_FAILOVER_SCHEMES = frozenset({"redis", "rediss", "sentinel"}) | _AMQP_SCHEMES
_TLS_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"}) | _AMQP_SCHEMES


class IgnoredOptionWarning(UserWarning):
    """A calling option (``apply_async``, ``send_task``) that has no effect in celeriac.

    Celery passes options it does not know on to the message properties, where nothing
    reads them, so a misspelt ``countdwn=10`` or a ``callback=`` meant as ``link=`` is
    silently lost there. celeriac warns, once per option name and process.
    """


# What send_task reads from its ``**options`` besides its named parameters: the
# router's keys and the publish retry settings.
_READ_OPTIONS = frozenset({
    "queue", "exchange", "routing_key", "exchange_type", "retry", "retry_policy",
})
_OWN_CONNECTION = "celeriac publishes on the app's own broker connection, one per process"
_AMQP_ONLY = "an AMQP publish setting that celeriac's transports do not use"
# Options Celery's apply_async and send_task take (some only as kombu publish arguments
# or AMQP message properties) that celeriac accepts and does not use, with why.
_IGNORED_OPTIONS: dict[str, str] = {
    "producer": _OWN_CONNECTION, "publisher": _OWN_CONNECTION,
    "connection": _OWN_CONNECTION,
    "router": "routing follows task_routes and the queue, exchange and routing_key options",
    "declare": "queues are created when first used (task_create_missing_queues)",
    "delivery_mode": "every celeriac transport keeps a message until it is acked",
    "mandatory": _AMQP_ONLY, "immediate": _AMQP_ONLY, "user_id": _AMQP_ONLY,
    "app_id": _AMQP_ONLY, "cluster_id": _AMQP_ONLY, "type": _AMQP_ONLY,
    "message_id": _AMQP_ONLY, "timestamp": _AMQP_ONLY,
    "timeout": "publish retries follow the retry and retry_policy options",
    "confirm_timeout": "publish retries follow the retry and retry_policy options",
    "content_type": "the body is encoded with the serializer option",
    "content_encoding": "the body is encoded with the serializer option",
    "expiration": "the message expiration is derived from the expires option",
    "correlation_id": "the correlation id is the task id, as Celery sets it",
    "stamped_headers": "celeriac does not implement Celery's stamping",
    "stamps": "celeriac does not implement Celery's stamping",
    "replaced_task_nesting": "it is internal to Celery's Task.replace",
    "origin": "the origin header always names the sending host",
    "now": "countdown and expires count from the current time",
    "timezone": "countdown and expires count from the current time",
}
# Names people write for an option that has another name.
_MEANT = {"callback": "link", "callbacks": "link", "errback": "link_error",
          "errbacks": "link_error", "on_error": "link_error"}
_warned_options: set[str] = set()
_PACKAGE_PREFIX = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_unused_options(options: Iterable[str]) -> None:
    """Warn (``IgnoredOptionWarning``, once per name) about calling options among
    ``options`` that celeriac does not read: unknown ones, and Celery's that it ignores.
    """
    for name in options:
        if name in _READ_OPTIONS or name in _warned_options or name in _SEND_TASK_PARAMS:
            continue
        _warned_options.add(name)
        reason = _IGNORED_OPTIONS.get(name)
        if reason is not None:
            text = f"calling option {name!r} has no effect in celeriac: {reason}"
        else:
            import difflib

            meant = _MEANT.get(name) or next(iter(difflib.get_close_matches(
                name, sorted(_SEND_TASK_PARAMS | _READ_OPTIONS), n=1)), None)
            text = (f"unknown calling option {name!r} has no effect (Celery would pass it "
                    "on to the message properties, where nothing reads it)")
            if meant:
                text += f"; did you mean {meant!r}?"
        warnings.warn(IgnoredOptionWarning(text), stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    # Point the warning at the caller's line, however many celeriac frames (delay,
    # signatures, canvas) lie between it and here.
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_PREFIX):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level

def _import_task_module(name: str) -> Any:
    """Import a task module; one that fails is said, naming its file, and skipped.

    A worker serves the tasks of the modules that import: one broken module (a syntax
    error, a missing dependency) must not take every other task down with it. Its own
    tasks are unregistered, so their messages fail with NotRegistered, which the callers
    learn.
    """
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any error of the module's own code
        where = ""
        try:
            spec = importlib.util.find_spec(name)
            where = f" ({spec.origin})" if spec is not None and spec.origin else ""
        except Exception:  # noqa: BLE001 - its package failed to import as well
            pass
        logger.error("Task module %r%s failed to import: %s: %s; its tasks are not "
                     "served, the others are", name, where, type(exc).__name__, exc,
                     exc_info=exc)
        return None


# Messages sent inside ``App.batch_publish()`` wait here until the block ends.
_PUBLISH_BATCH: ContextVar[_PublishBatch | None] = ContextVar("celeriac_publish_batch",
                                                              default=None)


class TaskRegistry(dict):  # type: ignore[type-arg]
    """Tasks by name; shared tasks are found too, and a miss says what to check."""

    def __init__(self, app: Celery | None = None) -> None:
        super().__init__()
        self.app = app

    def __missing__(self, name: str) -> Task[Any, Any]:
        task = _state.shared_tasks.get(name)
        if task is None:
            raise NotRegistered(name)
        spec = getattr(task, "_shared_spec", None)
        app = self.app
        if spec is not None and app is not None and app.Task is not Task:
            # A shared task declared without a base runs as the app's Task class here
            # (its on_failure, after_return... hooks), as in Celery.
            fun, task_name, bind, options = spec
            task = make_task(app, fun, app.Task, task_name, bind, dict(options))
            self[name] = task
        return task

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except NotRegistered:
            return default

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in _state.shared_tasks

    def names(self) -> list[str]:
        return sorted(set(self) | set(_state.shared_tasks))


class _PerProcess:
    """A value created on first use in each process (connections do not survive fork)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._pid = -1
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        pid = current_pid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._value = self._factory()
                    self._pid = pid
        return self._value

    def reset(self) -> None:
        self._pid = -1
        self._value = None


class Celery:
    """The application: holds the configuration and the tasks.

    Args:
        main: name of the main module, used to name tasks defined in ``__main__``.
        broker: broker URL (default: an SQLite file in the working directory).
        backend: result backend URL (default: the same SQLite file, when the broker is
            the default one).
        include: modules to import when a worker starts.
        task_cls: base class for ``@app.task`` (also settable later as ``app.Task``).
        **settings: any setting, by its new or old name.
    """

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, include: Iterable[str] | None = None,
                 *, config_source: Any = None, task_cls: type[Task[Any, Any]] | str | None = None,
                 set_as_current: bool = True, namespace: str | None = None,
                 autofinalize: bool = True, **settings: Any) -> None:
        self.main = main
        self.conf = Settings()
        self.namespace = namespace
        self.autofinalize = autofinalize
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(include)
        if settings:
            self.conf.update(settings)
        if config_source is not None:
            self.config_from_object(config_source)
        if isinstance(task_cls, str):
            from .utils.imports import symbol_by_name

            task_cls = symbol_by_name(task_cls)
        self.Task: type[Task[Any, Any]] = task_cls or Task  # type: ignore[assignment]
        self._maybe_fixup(config_source)
        self.tasks = TaskRegistry(self)
        from .canvas import register_builtins

        register_builtins(self)
        self._finalized = False
        self._autodiscover: list[tuple[Any, str]] = []
        self._producer = _PerProcess(self._new_producer)
        self._backend = _PerProcess(self._new_backend)
        self._router: TaskRouter | None = None
        #: this process's Lamport clock: events and remote control stamp their messages
        self.clock = LamportClock()
        self._events: Events | None = None
        # task_send_sent_event's sender, per process: its node name has the pid in it
        self._sent_events = _PerProcess(lambda: EventDispatcher(self))
        self.on_configure = signals.Signal("on_configure")
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._configured = False
        if set_as_current:
            self.set_current()

    # -- configuration -----------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Load settings from a module (or its name), a class, an object or a dict."""
        self._maybe_fixup(obj)
        self.conf.config_from_object(obj, namespace=namespace or self.namespace, silent=silent)
        self._router = None

    def _maybe_fixup(self, source: Any = None) -> None:
        # Celery's Django fix-up (django.setup() at finalize, connections closed around
        # tasks), for a project that names its settings module or configures from it;
        # the module it lives in imports no Django until it applies.
        from .contrib.django.fixup import maybe_install

        maybe_install(self, source)

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> bool:
        return self.conf.config_from_envvar(variable_name, silent=silent)

    def add_defaults(self, mapping: Any) -> None:
        for key, value in dict(mapping).items():
            self.conf.setdefault(key, value)

    def set_current(self) -> None:
        _state.set_default_app(self)

    set_default = set_current

    @property
    def broker_url(self) -> str:
        """The broker URL in force; a fail-over list as one ``;``-separated string."""
        url = _one_string(self.conf.resolved_broker_url())
        if not url:
            url = f"sqlite:///{os.path.abspath(DEFAULT_SQLITE_FILE)}"
        return url

    @property
    def broker_read_url(self) -> str:
        """The URL consumers connect to (``broker_read_url``, else ``broker_url``)."""
        return _one_string(self.conf.resolved_broker_read_url()) or self.broker_url

    @property
    def broker_write_url(self) -> str:
        """The URL producers connect to (``broker_write_url``, else ``broker_url``)."""
        return _one_string(self.conf.resolved_broker_write_url()) or self.broker_url

    @property
    def result_backend_url(self) -> str:
        url = self.conf.resolved_result_backend()
        if url:
            return url
        broker = self.broker_url
        scheme = broker.split("://", 1)[0]
        # The embedded default keeps results beside the messages; an in-process broker
        # keeps them in-process. Any other broker needs an explicit backend, as in Celery.
        if scheme in ("sqlite", "sqla+sqlite"):
            return "sqlite://" + broker.split("://", 1)[1]
        if scheme == "memory":
            return "memory://"
        return "disabled://"

    def _configure(self) -> None:
        if not self._configured:
            self._configured = True
            self.on_configure.send(sender=self)
            self.on_after_configure.send(sender=self, source=self.conf)

    # -- tasks ------------------------------------------------------------------------
    # The overloads keep the function's signature and return type on the task, so a type
    # checker checks ``add.delay(...)`` against ``add`` and knows what ``get()`` returns.
    @overload
    def task(self, fun: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, bind: Literal[True], **opts: Any
             ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(self, *, bind: Literal[False] = ..., **opts: Any
             ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, *args: Any, **opts: Any) -> Any:
        """Decorator that registers a function as a task: ``@app.task`` or ``@app.task(...)``."""
        def create(fun: Callable[..., Any]) -> Task[Any, Any]:
            base = opts.pop("base", None) or self.Task
            name = opts.pop("name", None)
            bind = opts.pop("bind", False)
            opts.pop("shared", None)
            opts.pop("lazy", None)
            task = make_task(self, fun, base, name, bind, dict(opts))
            self._annotate(task)
            self.tasks[task.name] = task
            return task

        if len(args) == 1 and callable(args[0]):
            return create(args[0])
        if args:
            raise TypeError("@app.task() takes only keyword arguments")
        return create

    def register_task(self, task: Task[Any, Any] | type[Task[Any, Any]]) -> Task[Any, Any]:
        """Register a class-based task (``class MyTask(Task): name = ...; def run(...)``)."""
        if isinstance(task, type):
            task = task()
        if not task.name:
            task.name = f"{type(task).__module__}.{type(task).__name__}"
        task.bind(self)
        self._annotate(task)
        self.tasks[task.name] = task
        return task

    def _annotate(self, task: Task[Any, Any]) -> None:
        annotations = self.conf.task_annotations
        task.__dict__["_celeriac_annotations"] = annotations
        annotate(task, annotations)

    def ensure_annotated(self, task: Task[Any, Any]) -> None:
        """Apply ``task_annotations`` to ``task`` if they changed since it was annotated.

        Annotations are applied when a task is registered, again to every task at
        ``finalize()`` (worker start-up), and here at each call, so annotations
        configured after the task was defined still count. A change is noticed when
        the setting is assigned a new value, not when its dict is edited in place.
        """
        if task.__dict__.get("_celeriac_annotations", _UNSET) is not \
                self.conf.task_annotations:
            self._annotate(task)

    def finalize(self, auto: bool = False) -> None:
        """Import ``include``/``imports`` and autodiscovered modules (worker start-up)."""
        if self._finalized:
            return
        self._finalized = True
        self._configure()
        fixup = self.__dict__.get("_django_fixup")
        if fixup is not None:  # django.setup() before any task module is imported
            fixup.setup()
        self.loader_import_default_modules()
        for packages, related_name in self._autodiscover:
            self._discover(packages, related_name)
        for task in list(self.tasks.values()):
            self.ensure_annotated(task)
        self.on_after_finalize.send(sender=self)

    def loader_import_default_modules(self) -> list[Any]:
        names = list(self.conf.imports or ()) + list(self.conf.include or ())
        signals.import_modules.send(sender=self)
        modules = (_import_task_module(name) for name in names)
        return [module for module in modules if module is not None]

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.<related_name>`` for each package (Django: INSTALLED_APPS).

        ``packages`` may be a callable, called when discovery runs (worker start-up, or
        now with ``force=True``). With no packages, the installed apps of the Django
        project are searched (when the Django fix-up applies, see contrib/django).
        """
        if force:
            self._discover(packages, related_name)
        else:
            self._autodiscover.append((packages, related_name))

    def _discover(self, packages: Any, related_name: str) -> None:
        if packages is None:
            # Celery's rule: no packages means the Django project's installed apps
            packages = []
            if self.__dict__.get("_django_fixup") is not None:
                from .contrib.django.fixup import installed_app_packages

                packages = installed_app_packages()
        if callable(packages):
            packages = packages()
        for package in packages:
            name = f"{package}.{related_name}"
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                found = False  # the package is not there: nothing to discover
            except Exception:  # noqa: BLE001 - its __init__ failed: the import says so
                found = True
            if found:  # a package without a tasks module has nothing to discover
                _import_task_module(name)

    # -- periodic tasks ---------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                          name: str | None = None, **opts: Any) -> str:
        """Add an entry to ``beat_schedule``: send ``sig`` on ``schedule``.

        Args:
            schedule: seconds, a timedelta, or a ``crontab``/``schedule``/``solar``.
            sig: a signature (``add.s(2, 2)``) or a task name.
            args, kwargs: arguments, when ``sig`` is a name.
            name: the entry's key (default: the task's name and arguments).
            **opts: ``apply_async`` options (``queue``, ``expires``, ``priority``...);
                ``relative=True`` rounds interval schedules.

        Returns:
            The entry's key.
        """
        if isinstance(sig, str):
            task, call_args, call_kwargs, options = sig, list(args or ()), dict(kwargs or {}), {}
        else:
            task = sig["task"] if isinstance(sig, dict) else sig.name
            call_args = list(sig.get("args") or ()) if isinstance(sig, dict) else []
            call_kwargs = dict(sig.get("kwargs") or {}) if isinstance(sig, dict) else {}
            options = dict(sig.get("options") or {}) if isinstance(sig, dict) else {}
        relative = bool(opts.pop("relative", False))
        options.update(opts)
        key = name or f"{task}({call_args!r}, {call_kwargs!r})"
        entries = dict(self.conf.beat_schedule or {})
        entries[key] = {"task": task, "schedule": schedule, "args": tuple(call_args),
                        "kwargs": call_kwargs, "options": options, "relative": relative}
        self.conf.beat_schedule = entries
        return key

    # -- sending ----------------------------------------------------------------------
    @property
    def router(self) -> TaskRouter:
        if self._router is None:
            conf = self.conf
            self._router = TaskRouter(conf.task_routes, conf.task_queues,
                                      conf.task_default_queue,
                                      bool(conf.task_create_missing_queues))
        return self._router

    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """``app.signature('tasks.add', args=(2, 2))``: a signature by task name."""
        from .canvas import signature

        kwargs.setdefault("app", self)
        return signature(*args, **kwargs)

    @contextmanager
    def batch_publish(self) -> Iterator[None]:
        """Send the messages of every call made inside the block together.

        ``with app.batch_publish(): for x in xs: task.delay(x)`` puts the messages on the
        broker in one round trip (Redis: a pipeline; SQLite: one transaction) per
        thousand, when the block ends, instead of one each. Groups and chord headers are
        sent this way. The results are returned at once as usual; the messages leave
        when the block ends, even if it ends with an exception. Publish retries follow
        ``task_publish_retry`` and ``task_publish_retry_policy`` for the whole batch.
        """
        if _PUBLISH_BATCH.get() is not None:
            yield  # an outer block sends them
            return
        batch = _PublishBatch(self)
        token = _PUBLISH_BATCH.set(batch)
        try:
            yield
        finally:
            _PUBLISH_BATCH.reset(token)
            batch.flush()

    def producer_broker(self) -> Broker:
        """This process's broker connection for publishing."""
        return self._producer.get()

    def _broker_options(self) -> dict[str, Any]:
        """``broker_transport_options`` plus the settings the transports read.

        A transport option wins over the setting it overlaps: ``socket_connect_timeout``
        over ``broker_connection_timeout``, ``ssl`` over ``broker_use_ssl`` and
        ``failover_strategy`` over ``broker_failover_strategy``.
        """
        conf = self.conf
        options = dict(conf.broker_transport_options or {})
        options.setdefault("dead_letter_queue", conf.broker_dead_letter_queue)
        options.setdefault("lost_timeout", conf.worker_lost_timeout)
        options.setdefault("max_redeliveries", conf.broker_max_redeliveries)
        timeout = conf.broker_connection_timeout
        if timeout is not None:
            options.setdefault("socket_connect_timeout", seconds(timeout))
        if conf.broker_use_ssl:
            options.setdefault("ssl", conf.broker_use_ssl)
        if conf.broker_failover_strategy is not None:
            options.setdefault("failover_strategy", conf.broker_failover_strategy)
        return options

    def _amqp_options(self, options: dict[str, Any]) -> None:
        """What the RabbitMQ transport declares queues by (the topology)."""
        conf = self.conf
        options.setdefault("heartbeat", conf.broker_heartbeat)
        if conf.broker_login_method:
            options.setdefault("login_method", conf.broker_login_method)
        options["topology"] = {
            "queues": dict(self.router.queues),
            "default_queue": conf.task_default_queue,
            "default_queue_type": conf.task_default_queue_type,
            "missing_queue_type": conf.task_create_missing_queue_type,
            "max_priority": conf.task_queue_max_priority,
            "create_missing": conf.task_create_missing_queues,
            "delayed_queue_type": conf.broker_native_delayed_delivery_queue_type,
            "default_exchange": conf.task_default_exchange,
            "default_exchange_type": conf.task_default_exchange_type,
            "default_routing_key": conf.task_default_routing_key,
            "event_queue": {"prefix": conf.event_queue_prefix, "ttl": conf.event_queue_ttl,
                            "expires": conf.event_queue_expires},
            "control_queue": {"ttl": conf.control_queue_ttl,
                              "expires": conf.control_queue_expires},
        }

    def _connect_broker_at(self, url: str) -> Broker:
        options = self._broker_options()
        scheme = scheme_of(url)
        if len(split_failover(url)) > 1 and scheme not in _FAILOVER_SCHEMES:
            raise ImproperlyConfigured(
                f"broker_url is a fail-over list ({mask_password(url)}), which celeriac "
                f"supports on Redis only (redis://, rediss://), not on {scheme}://; give "
                "one URL")
        if options.get("ssl") and scheme not in _TLS_SCHEMES:
            warnings.warn(IgnoredSettingWarning(
                f"broker_use_ssl has no effect on the {scheme}:// broker: celeriac "
                "applies it to Redis brokers only"), stacklevel=3)
            options.pop("ssl")
        if scheme in _AMQP_SCHEMES:
            self._amqp_options(options)
        return connect_broker(url, options)

    def _new_producer(self) -> Broker:
        return self._connect_broker_at(self.broker_write_url)

    def connect_broker(self) -> Broker:
        """A new broker connection (one per consumer)."""
        return self._connect_broker_at(self.broker_read_url)

    def connection(self, url: str | None = None) -> Connection:
        """A broker connection, as Celery's ``app.connection()`` (a context manager):
        what ``app.events.Receiver(conn)`` and ``app.events.Dispatcher(conn)`` take."""
        return Connection(self, url or self.broker_read_url)

    def connection_for_read(self, url: str | None = None) -> Connection:
        return Connection(self, url or self.broker_read_url)

    def connection_for_write(self, url: str | None = None) -> Connection:
        return Connection(self, url or self.broker_write_url)

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None,
                  countdown: float | None = None, eta: datetime | None = None,
                  task_id: str | None = None, expires: Any = None, link: Any = None,
                  link_error: Any = None, group_id: str | None = None,
                  group_index: int | None = None, retries: int = 0, chord: Any = None,
                  reply_to: str | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None, root_id: str | None = None,
                  parent_id: str | None = None, shadow: str | None = None,
                  chain: Any = None, task: Task[Any, Any] | None = None,
                  ignore_result: bool | None = None, priority: int | None = None,
                  serializer: str | None = None, compression: str | None = None,
                  headers: dict[str, Any] | None = None, add_to_parent: bool = True,
                  result_cls: type[AsyncResult] | None = None, route_name: str | None = None,
                  task_type: Task[Any, Any] | None = None, argsrepr: str | None = None,
                  kwargsrepr: str | None = None, **options: Any) -> AsyncResult:
        """Send a task by name; the task need not be registered in this process.

        Takes ``apply_async``'s options. ``retry`` (default ``task_publish_retry``) and
        ``retry_policy`` (default ``task_publish_retry_policy``) say how a publish that
        fails for want of a broker connection is tried again before the error is raised.
        ``add_to_parent=False`` keeps a task sent from a running task out of that task's
        ``children``; ``route_name`` is the name ``task_routes`` match instead of
        ``name``; ``argsrepr``/``kwargsrepr`` replace the arguments as logs and monitors
        show them (to hide secrets). An option celeriac does not use, unknown or
        Celery's, is warned about (``IgnoredOptionWarning``).

        Returns:
            The task's ``AsyncResult`` (a ``result_cls`` if given); with
            ``ignore_result=True`` its ``get()`` returns None at once, since nothing
            will be stored.
        """
        if options:
            warn_unused_options(options)
        task = task or task_type
        conf = self.conf
        task_id = task_id or str(uuid.uuid4())
        args = list(args or ())
        kwargs = dict(kwargs or {})
        now = datetime.now(timezone.utc)
        if countdown is not None:
            eta = now + timedelta(seconds=countdown)
        elif eta is not None and eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        expires_at: datetime | None = None
        expiration_ms = None
        if expires is not None:
            if isinstance(expires, datetime):
                expires_at = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            else:
                expires_at = now + timedelta(seconds=seconds(expires) or 0)
            expiration_ms = max(0, int((expires_at - now).total_seconds() * 1000))
        retry = options.pop("retry", None)
        retry_policy = options.pop("retry_policy", None)
        parent_task = _state.current_task.get()
        if parent_task is not None and parent_id is None:
            req = parent_task.request
            if req.id != task_id:  # a task sending itself again (retry) is not its child
                parent_id = req.id
                root_id = root_id or req.root_id or req.id
        route = self.router.route(route_name or name, args, kwargs, options, task)
        if reply_to is None and scheme_of(self.result_backend_url) == "rpc":
            # rpc:// results come back on a reply queue, declared before the task leaves
            reply_to = self.backend.reply_to(
                parent_task.request if parent_task is not None else None, ignore_result)
        if priority is None:
            priority = route.options.get("priority")
            if priority is None and parent_task is not None \
                    and conf.task_inherit_parent_priority:
                priority = _priority_of(parent_task.request)
            if priority is None:
                priority = conf.task_default_priority
        message = messages.task_message(
            name, task_id, args, kwargs,
            queue=route.queue, exchange=route.exchange, routing_key=route.routing_key,
            eta=eta, expires=expires_at, retries=retries, group_id=group_id,
            group_index=group_index, root_id=root_id, parent_id=parent_id,
            time_limit=time_limit, soft_time_limit=soft_time_limit, shadow=shadow,
            ignore_result=ignore_result, priority=priority, reply_to=reply_to or "",
            callbacks=_sig_list(link), errbacks=_sig_list(link_error), chain=chain,
            chord=chord, headers=headers, serializer=serializer or conf.task_serializer,
            compression=compression or conf.task_compression, expiration_ms=expiration_ms,
            argsrepr=argsrepr if argsrepr is not None else
            safe_repr(tuple(args), conf.task_repr_maxlevels),
            kwargsrepr=kwargsrepr if kwargsrepr is not None else
            safe_repr(kwargs, conf.task_repr_maxlevels),
        )
        if retry is None:
            retry = conf.task_publish_retry
        policy = (retry_policy if retry_policy is not None
                  else conf.task_publish_retry_policy) if retry else None
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=name, body=message.body, exchange=route.exchange,
                routing_key=route.routing_key, headers=message.headers,
                properties=message.properties, declare=[], retry_policy=policy)
        due = eta.timestamp() if eta is not None and eta > now else None
        outgoing = Outgoing(route.queue, messages.encode_envelope(message), priority or 0, due)
        # Built only for someone listening: sending is the producer's hot path.
        published = dict(sender=name, body=message.body, headers=message.headers,
                         exchange=route.exchange, routing_key=route.routing_key,
                         ) if signals.after_task_publish.receivers else None
        batch = _PUBLISH_BATCH.get()
        if batch is not None and batch.app is self:
            batch.add(outgoing, published)
        else:
            broker = self.producer_broker()
            if retry:
                call_with_retry(lambda: broker.publish(outgoing.queue, outgoing.payload,
                                                       outgoing.priority, eta=due),
                                policy, what=f"publishing {name}[{task_id}]")
            else:
                broker.publish(outgoing.queue, outgoing.payload, outgoing.priority, eta=due)
            if published is not None:
                signals.after_task_publish.send(**published)
        if conf.task_send_sent_event:
            # sent at once, not batched (a client has no loop to flush a buffer from);
            # from Celery's client node name, gen<pid>@<host>
            headers = message.headers
            self._sent_events.get().send(
                "task-sent", uuid=task_id, root_id=headers.get("root_id"),
                parent_id=parent_id, name=name, args=headers.get("argsrepr"),
                kwargs=headers.get("kwargsrepr"), retries=retries, eta=headers.get("eta"),
                expires=headers.get("expires"), queue=route.queue, exchange=route.exchange,
                routing_key=route.routing_key)
        result = (result_cls or AsyncResult)(task_id, task_name=name, app=self)
        result.ignored = bool(ignore_result)
        if (add_to_parent and parent_task is not None and group_id is None
                and parent_task.trail and parent_id == parent_task.request.id):
            # Recorded in the sender's result (Celery's ``trail``) so that
            # ``AsyncResult.children`` and ``collect()`` can follow it; group members
            # are recorded as their group.
            parent_task.request.add_child(result)
        return result

    # -- results ----------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """This process's result backend."""
        return self._backend.get()

    def _new_backend(self) -> Backend:
        url = self.result_backend_url
        options = BackendOptions.from_conf(self.conf)
        if scheme_of(url) == "rpc":
            # rpc:// results travel over the broker, with the settings producers use
            options.broker_url = self.broker_write_url
            options.broker_options = self._broker_options()
            if self.conf.broker_login_method:
                options.broker_options.setdefault("login_method", self.conf.broker_login_method)
        return connect_backend(url, options)

    def _warn_unused_options(self, options: Iterable[str]) -> None:
        """``warn_unused_options``, for callers that hold an app but not this module."""
        warn_unused_options(options)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, app=self, **kwargs)

    # -- the program, from Python -----------------------------------------------------
    def start(self, argv: list[str] | None = None) -> int:
        """Run the ``celeriac`` program on this app: ``app.start(["worker", "-l", "info"])``,
        or ``app.start()`` under ``if __name__ == "__main__":`` to take the command line
        (``python tasks.py worker``). Returns the command's exit code."""
        return int(_program().start(self, argv))

    def worker_main(self, argv: list[str] | None = None) -> int:
        """``start(argv)`` for a command line that must run the worker (``ValueError``
        without the ``worker`` command). Returns the worker's exit code."""
        return int(_program().worker_main(self, argv))

    @property
    def Worker(self) -> type[AppWorker]:  # noqa: N802 - Celery's name
        """The worker class bound to this app: ``app.Worker(loglevel="INFO").start()``
        runs a worker in this process until it is shut down."""
        worker = self.__dict__.get("_worker_class")
        if worker is None:
            worker = self.__dict__["_worker_class"] = _program().worker_class(self)
        return worker  # type: ignore[no-any-return]

    # -- misc ---------------------------------------------------------------------------
    @property
    def events(self) -> Events:
        """Events: ``app.events.Receiver(conn, handlers={...})``, ``app.events.State()``,
        ``app.events.Dispatcher(conn)``."""
        if self._events is None:
            self._events = Events(self)
        return self._events

    @property
    def control(self) -> Control:
        """Remote control: ``app.control.revoke(task_id, terminate=False)``."""
        return Control(self)

    def close(self) -> None:
        """Close this process's connections."""
        for holder in (self._producer, self._backend):
            if holder._pid == os.getpid() and holder._value is not None:
                holder._value.close()
            holder.reset()

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"


#: longest argsrepr/kwargsrepr header a message gets (Celery's limit)
REPR_MAXSIZE = 1024
_SCALARS = (str, int, float, bool, type(None), bytes)
_reprs: dict[int, Any] = {}


def safe_repr(value: Any, maxlevels: int | None = 3, maxsize: int = REPR_MAXSIZE) -> str:
    """``repr(value)`` for the ``argsrepr``/``kwargsrepr`` headers, as Celery makes them:
    containers nested deeper than ``maxlevels`` (``task_repr_maxlevels``) shown as
    ``[...]``, and the whole cut to ``maxsize`` characters."""
    items = value.values() if isinstance(value, dict) else value
    if all(type(item) in _SCALARS for item in items):
        text = repr(value)  # the usual case, and the fast one: nothing nested
    else:
        levels = 3 if maxlevels is None else max(int(maxlevels), 1)
        shower = _reprs.get(levels)
        if shower is None:
            import reprlib

            shower = reprlib.Repr()
            shower.maxlevel = levels
            big = sys.maxsize
            shower.maxtuple = shower.maxlist = shower.maxarray = shower.maxdict = big
            shower.maxset = shower.maxfrozenset = shower.maxdeque = big
            shower.maxstring = shower.maxlong = shower.maxother = big
            _reprs[levels] = shower
        try:
            text = shower.repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not stop the send
            text = object.__repr__(value)
    if len(text) > maxsize:
        text = text[:maxsize - 3] + "..."
    return text


class Connection:
    """What ``app.connection()`` returns: a broker connection, opened on first use and
    closed at the end of a ``with`` block (Celery's is a kombu ``Connection``)."""

    def __init__(self, app: Celery, url: str) -> None:
        self.app = app
        self.url = url
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = self.app._connect_broker_at(self.url)
        return self._broker

    def as_uri(self) -> str:
        return mask_password(self.url)

    def close(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.close()

    release = close

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _program() -> Any:
    # The CLI is a layer above the app (it imports this module): found by name when
    # app.start(), worker_main() or Worker is used, so that the imports run one way.
    return importlib.import_module("celeriac.cli.programmatic")


def _one_string(url: Any) -> Any:
    # A fail-over list given as a list is one ';'-separated string to the transports.
    if isinstance(url, (list, tuple)):
        return ";".join(str(u) for u in url)
    return url


def _priority_of(request: Any) -> int | None:
    """The priority of the message a running task came in (None: not run by a worker,
    or sent with none): what ``task_inherit_parent_priority`` passes on."""
    if request.called_directly:
        return None
    priority = request.priority
    if priority is None:
        priority = (request.delivery_info or {}).get("priority")
    return priority if isinstance(priority, int) else None


def _sig_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return [dict(value)]
    return [dict(v) for v in value]


App = Celery

# The options send_task (and so apply_async) takes by name.
_SEND_TASK_PARAMS = frozenset(inspect.signature(Celery.send_task).parameters) - {
    "self", "name", "args", "kwargs", "options"}


class _PublishBatch:
    """Messages waiting to be published together, and their after-publish signals."""

    #: messages per broker round trip
    LIMIT = 1000

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.messages: list[Outgoing] = []
        self.published: list[dict[str, Any]] = []  # signal arguments, when listened to

    def add(self, message: Outgoing, published: dict[str, Any] | None) -> None:
        self.messages.append(message)
        if published is not None:
            self.published.append(published)
        if len(self.messages) >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        if not self.messages:
            return
        batch, self.messages = self.messages, []
        published, self.published = self.published, []
        conf = self.app.conf
        broker = self.app.producer_broker()
        if conf.task_publish_retry:
            call_with_retry(lambda: broker.publish_many(batch),
                            conf.task_publish_retry_policy,
                            what=f"publishing {len(batch)} messages")
        else:
            broker.publish_many(batch)
        for kwargs in published:
            signals.after_task_publish.send(**kwargs)
