"""``QueueOnce``: a task that cannot be queued twice with the same arguments (celery_once).

    from celeriac.contrib.once import QueueOnce

    app.conf.ONCE = {"backend": "celeriac.contrib.once.Redis",
                     "settings": {"url": "redis://localhost:6379/0", "default_timeout": 3600}}

    @app.task(base=QueueOnce, once={"keys": ["user_id"], "graceful": True})
    def sync_user(user_id, full=False): ...

    @app.task(once=True)          # the same, spelled as an option of any task
    def rebuild_index(): ...

``delay``/``apply_async`` take a lock named after the task and its arguments (``keys``
restricts which) before sending; a second send while it is held raises ``AlreadyQueued``
(or, with ``graceful``, returns a result in state ``REJECTED`` whose value is None). The
lock is released when the task ends, whatever the outcome (a retry keeps it), or before
it starts with ``unlock_before_run``; a lock nobody releases (a killed worker) expires
after ``timeout`` seconds. Calling the task directly takes no lock.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any, ParamSpec, TypeVar

from ... import states
from ...exceptions import ImproperlyConfigured
from ...result import AsyncResult, EagerResult
from ...task import Task
from .backends import (
    ALIASES,
    DEFAULT_TIMEOUT,
    AlreadyQueued,
    File,
    LockBackend,
    LockBackendError,
    Memory,
    Redis,
    SQLite,
    default_settings,
)

__all__ = ["QueueOnce", "AlreadyQueued", "LockBackendError", "LockBackend", "Redis",
           "SQLite", "File", "Memory", "queue_once_key", "once_base"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("celeriac.once")

#: message header carrying ``[key, token]`` of the lock a send took, so the run that
#: ends releases that lock (and no newer one), even after a retry with other arguments
HEADER = "celeriac_once"
_TASK_OPTIONS = frozenset({"graceful", "keys", "timeout", "unlock_before_run"})
# celery_once reads these two at send time; unlock_before_run and keys only from the task.
_CALL_OPTIONS = frozenset({"graceful", "timeout"})


def queue_once_key(name: str, arguments: dict[str, Any], keys: Any = None) -> str:
    """The lock's name, as celery_once makes it: ``qo_<task>_<arg>-<value>_...``.

    Arguments are sorted by name; ``keys`` (a list of argument names) keeps only those.
    The same layout as celery_once's, so both dedupe each other on a shared Redis.

    Raises:
        ImproperlyConfigured: ``keys`` names an argument the task does not have.
    """
    if keys is not None:
        missing = [k for k in keys if k not in arguments]
        if missing:
            raise ImproperlyConfigured(
                f"once={{'keys': ...}} of {name} names {missing!r}, which the call did not "
                f"pass (it passed: {sorted(arguments)})")
        arguments = {k: arguments[k] for k in keys}
    parts = ["qo", name] + [f"{k}-{v}" for k, v in sorted(arguments.items(),
                                                            key=lambda kv: str(kv[0]))]
    return "_".join(parts)


class QueueOnce(Task[P, R]):
    """A task queued at most once at a time per lock key (celery_once's ``QueueOnce``).

    Options, in ``once={...}`` on the task (``graceful`` and ``timeout`` also on
    ``apply_async``): ``graceful`` (return a REJECTED result instead of raising),
    ``keys`` (the argument names the lock is made of; ``[]``: one lock for the task),
    ``timeout`` (seconds the lock lasts at most; default ``ONCE['settings']
    ['default_timeout']``, else an hour), ``unlock_before_run`` (release the lock when
    the task starts rather than when it ends).
    """

    abstract = True
    once: dict[str, Any] = {"graceful": False, "unlock_before_run": False}
    AlreadyQueued = AlreadyQueued

    # -- configuration -----------------------------------------------------------------
    @property
    def once_config(self) -> dict[str, Any] | None:
        return self.app.conf.once

    @property
    def once_backend(self) -> Any:
        """The app's lock backend, built once per app (and per ``ONCE`` value)."""
        app = self.app
        config = self.once_config
        cached = app.__dict__.get("_celeriac_once_backend")
        if cached is not None and cached[0] is config:
            return cached[1]
        backend = _build_backend(config, app.broker_url)
        app.__dict__["_celeriac_once_backend"] = (config, backend)
        return backend

    @property
    def default_timeout(self) -> float:
        settings = (self.once_config or {}).get("settings") or {}
        return float(settings.get("default_timeout", DEFAULT_TIMEOUT))

    def _options(self) -> dict[str, Any]:
        once = self.once if isinstance(self.once, dict) else {}
        unknown = sorted(set(once) - _TASK_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"once={{...}} of {self.name} has {unknown!r}; it takes "
                f"{sorted(_TASK_OPTIONS)}")
        return once

    def unlock_before_run(self) -> bool:
        return bool(self._options().get("unlock_before_run", False))

    def get_key(self, args: Any = None, kwargs: dict[str, Any] | None = None) -> str:
        """The lock key of a call with these arguments (task name + bound arguments)."""
        signature = self.__dict__.get("_celeriac_once_signature")
        if signature is None:
            signature = self.__dict__["_celeriac_once_signature"] = inspect.signature(self.run)
        bound = signature.bind(*(args or ()), **(kwargs or {}))
        return queue_once_key(self.name, dict(bound.arguments), self._options().get("keys"))

    # -- sending -------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, link: Any = None, link_error: Any = None,
                    shadow: str | None = None, **options: Any) -> AsyncResult:
        """Take the lock, then send; see ``Task.apply_async`` for the options.

        Args:
            **options: also ``once={'graceful': bool, 'timeout': seconds}`` for this send.

        Raises:
            AlreadyQueued: the lock is held (and ``graceful`` is not set).
            LockBackendError: the lock backend is unreachable; nothing was sent.
        """
        call = options.pop("once", None) or {}
        unknown = sorted(set(call) - _CALL_OPTIONS)
        if unknown:
            raise TypeError(f"apply_async(once=...) takes {sorted(_CALL_OPTIONS)}, not "
                            f"{unknown!r} (set them on the task)")
        if options.get("retries") or self._disabled():
            return super().apply_async(args, kwargs, task_id=task_id, link=link,
                                       link_error=link_error, shadow=shadow, **options)
        own = self._options()
        graceful = call.get("graceful", own.get("graceful", False))
        timeout = float(call.get("timeout", own.get("timeout", self.default_timeout)))
        key = self.get_key(args, kwargs)
        backend = self.once_backend
        try:
            token = backend.raise_or_lock(key, timeout=timeout)
        except AlreadyQueued:
            if graceful:
                return EagerResult(task_id or "", None, states.REJECTED, name=self.name)
            raise
        headers = dict(options.pop("headers", None) or {})
        headers[HEADER] = [key, token if isinstance(token, str) else None]
        try:
            return super().apply_async(args, kwargs, task_id=task_id, link=link,
                                       link_error=link_error, shadow=shadow,
                                       headers=headers, **options)
        except BaseException:
            _release(backend, key, token, self.name)  # not sent: nothing will release it
            raise

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              task_id: str | None = None, link: Any = None, link_error: Any = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> EagerResult:
        if options.pop("once", None) is not None:
            warnings.warn("the once option has no effect on apply(): it runs the task here "
                          "and now and takes no lock (apply_async and delay do)",
                          stacklevel=2)
        return super().apply(args, kwargs, task_id=task_id, link=link,
                             link_error=link_error, retries=retries, throw=throw, **options)

    def _disabled(self) -> bool:
        return self.once is False or self.once is None

    # -- running -------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if not self.request.called_directly and self.unlock_before_run():
            self._release_own_lock(args, kwargs)
        return super().__call__(*args, **kwargs)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Release the lock once the task has ended (not on a retry: it goes on)."""
        if status != states.RETRY and not self.unlock_before_run():
            self._release_own_lock(args, kwargs)
        super().after_return(status, retval, task_id, args, kwargs, einfo)

    def _release_own_lock(self, args: Any, kwargs: Any) -> None:
        if self._disabled():
            return
        request = self.request
        held = (request.headers or {}).get(HEADER)
        if held:
            key, token = held[0], held[1]
        elif request.is_eager:
            return  # apply() took no lock: one a queued message holds is not ours
        else:
            # Sent by celery_once (a Celery client): its lock has no token.
            key, token = self.get_key(args, kwargs), None
        _release(self.once_backend, key, token, self.name)


def _release(backend: Any, key: str, token: Any, name: str) -> None:
    try:
        if isinstance(backend, LockBackend):
            backend.clear_lock(key, token)
        else:
            backend.clear_lock(key)  # celery_once's contract: no token
    except LockBackendError as exc:
        logger.warning("%s: could not release its QueueOnce lock %r (%s); it expires by "
                       "itself after its timeout", name, key, exc)


def _build_backend(config: Any, broker_url: str) -> Any:
    if not config:
        cls, settings = default_settings(broker_url)
        return cls(settings)
    if not isinstance(config, dict) or "backend" not in config:
        raise ImproperlyConfigured(
            "ONCE must be a dict like {'backend': 'celeriac.contrib.once.Redis', "
            f"'settings': {{...}}}}, not {config!r}")
    unknown = sorted(set(config) - {"backend", "settings"})
    if unknown:
        raise ImproperlyConfigured(f"ONCE has {unknown!r}; it takes 'backend' and 'settings'")
    backend = config["backend"]
    if isinstance(backend, str):
        from ...utils.imports import symbol_by_name

        backend = ALIASES.get(backend) or symbol_by_name(backend)
    return backend(dict(config.get("settings") or {}))


_ONCE_BASES: dict[type, type] = {}


def once_base(base: type[Task[Any, Any]], options: dict[str, Any]) -> type[Task[Any, Any]]:
    """The base class for a task declared with the ``once`` option (``@app.task(once=...)``).

    ``once=True`` means celery_once's defaults; a dict gives the options; the base gets
    ``QueueOnce`` mixed in when it does not have it already.

    Raises:
        TypeError: ``once`` is neither a bool nor a dict.
    """
    once = options["once"]
    if once is True:
        options["once"] = dict(QueueOnce.once)
    elif once is False:
        if not issubclass(base, QueueOnce):
            del options["once"]
        return base
    elif not isinstance(once, dict):
        raise TypeError(f"the once option takes True or a dict of {sorted(_TASK_OPTIONS)}, "
                        f"not {once!r}")
    if issubclass(base, QueueOnce):
        return base
    mixed = _ONCE_BASES.get(base)
    if mixed is None:
        mixed = _ONCE_BASES[base] = type(f"QueueOnce{base.__name__}", (QueueOnce, base), {})
    return mixed
