"""Celery's Django fix-up: what a worker (and beat) does for a Django project.

``maybe_install(app)`` is called by the app when it is created and when it is configured
from ``django.conf:settings``. When ``DJANGO_SETTINGS_MODULE`` is set (or the settings
are the source), it installs ``DjangoFixup`` once per app:

- ``app.finalize()`` (worker, beat and shell start-up, before any task module is
  imported) calls ``django.setup()`` unless Django is set up already, then Django's
  system checks, logging the errors (skipped with ``CELERY_SKIP_CHECKS=1``, as in
  Celery); a settings module that cannot be loaded, or apps that cannot be set up,
  stop the start-up with an error naming the settings module;
- ``app.autodiscover_tasks()`` without packages looks in every installed Django app;
- at worker start (``worker_init``: after the start-up checks, before the pool forks)
  the connections the start-up opened are closed, so no pool process shares a socket
  with its parent; a new pool process drops any it inherited without touching them;
  before and after each task the running thread calls ``close_old_connections()``
  (connections past ``CONN_MAX_AGE`` or broken are closed) and the caches are closed,
  so ORM tasks work in every pool.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

from ... import signals
from ...exceptions import ImproperlyConfigured, MissingDependency

if TYPE_CHECKING:
    from ...app import Celery

logger = logging.getLogger("celeriac.contrib.django")

ENV = "DJANGO_SETTINGS_MODULE"
#: connections a pool process inherited: kept referenced, never closed, because closing
#: one would end the parent's session (a terminate message on the shared socket, or
#: SQLite's file locks released)
_inherited: list[Any] = []


def wanted(source: Any = None) -> bool:
    """Whether the fix-up applies: the settings module is named in the environment, or
    ``source`` (what ``config_from_object`` got) is Django's settings."""
    if os.environ.get(ENV):
        return True
    if isinstance(source, str):
        return source.replace(":", ".") == "django.conf.settings"
    return type(source).__module__ == "django.conf"


def maybe_install(app: Celery, source: Any = None) -> DjangoFixup | None:
    """Install the fix-up on ``app`` if it applies and is not installed yet.

    Django wanted (``DJANGO_SETTINGS_MODULE`` set) but not installed is a warning that
    names the extra, as Celery warns: the app still works without the fix-up.
    """
    if not wanted(source):
        return None
    if source is not None:
        load_settings()
    existing = app.__dict__.get("_django_fixup")
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    try:
        import django  # noqa: F401
    except ImportError:
        missing = MissingDependency("django", "django",
                                    f"{ENV} is set: the Django fix-up")
        warnings.warn(f"{missing}; running without it", RuntimeWarning, stacklevel=3)
        return None
    fixup = DjangoFixup(app)
    app.__dict__["_django_fixup"] = fixup
    fixup.install()
    return fixup


def load_settings() -> None:
    """Import Django's settings module now, so that an error in it names the module.

    Raises:
        ImproperlyConfigured: the settings module cannot be imported.
    """
    try:
        from django.conf import settings
    except ImportError:
        return  # Django is missing: maybe_install warns
    try:
        settings.INSTALLED_APPS
    except Exception as exc:
        name = os.environ.get(ENV) or "django.conf.settings"
        raise ImproperlyConfigured(
            f"Django settings module {name!r} cannot be loaded: "
            f"{type(exc).__name__}: {exc}") from exc


def installed_app_packages() -> list[str]:
    """The packages of Django's installed apps (``AppConfig.name``): what
    ``autodiscover_tasks()`` searches. INSTALLED_APPS may name ``AppConfig`` classes,
    so the names are read from the app registry, set up first if need be."""
    setup_django()
    from django.apps import apps

    return [config.name for config in apps.get_app_configs()]


def setup_django() -> bool:
    """``django.setup()``, unless Django is set up (or being set up) already.

    Returns:
        Whether it was called here.

    Raises:
        ImproperlyConfigured: the settings module cannot be imported, or setting up the
            apps failed; the message names the settings module.
    """
    from django.apps import apps

    if apps.ready or apps.loading:
        return False
    import django

    name = os.environ.get(ENV) or "django.conf.settings"
    try:
        django.setup()
    except Exception as exc:
        raise ImproperlyConfigured(
            f"Django could not be set up with settings {name!r}: "
            f"{type(exc).__name__}: {exc}") from exc
    return True


class DjangoFixup:
    """The receivers that make one app's worker ORM-safe; see the module docstring."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def install(self) -> None:
        from .task import DjangoTask
        from ...task import Task

        if self.app.Task is Task:  # as Celery: a custom task class is left alone
            self.app.Task = DjangoTask
        signals.worker_init.connect(self.on_worker_init)

    def setup(self) -> None:
        """Called by ``app.finalize()`` before it imports task modules; an error stops
        the start-up (a signal receiver's would only be logged).

        Raises:
            ImproperlyConfigured: Django cannot be set up (the message names the
                settings module).
        """
        if setup_django() and os.environ.get("CELERY_SKIP_CHECKS") != "1":
            self._run_checks()

    def _run_checks(self) -> None:
        from django.core import checks

        for message in checks.run_checks():
            if message.is_serious() and not message.is_silenced():
                logger.warning("Django system check: %s", message)

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return  # another app's worker in this process
        signals.worker_process_init.connect(self.on_worker_process_init)
        signals.task_prerun.connect(self.on_task_boundary)
        signals.task_postrun.connect(self.on_task_boundary)
        signals.beat_embedded_init.connect(self.close_database)
        self.close_database()
        self.close_caches()

    def on_worker_process_init(self, **_: Any) -> None:
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            if conn.connection is not None:
                _inherited.append(conn.connection)
                conn.connection = None
        self.close_caches()

    def on_task_boundary(self, sender: Any = None, **_: Any) -> None:
        if getattr(getattr(sender, "request", None), "is_eager", False):
            return  # an eager call runs inside the caller's transaction: leave it be
        from django.db import close_old_connections

        close_old_connections()
        self.close_caches()

    def close_database(self, **_: Any) -> None:
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            conn.close()

    def close_caches(self) -> None:
        from django.core.cache import close_caches

        close_caches()
