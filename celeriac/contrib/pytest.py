"""pytest fixtures for celeriac apps: Celery's ``celery.contrib.pytest``, for celeriac.

Off unless a project turns it on, as Celery's is, in one of these ways:

* ``pytest -p celeriac.contrib.pytest``, or ``pytest_plugins = ["celeriac.contrib.pytest"]``
  in the root ``conftest.py`` (Celery's spellings, with celeriac's module);
* ``celeriac_plugin = true`` in the pytest configuration (``[tool.pytest.ini_options]``):
  the ``pytest11`` entry point celeriac installs reads it (it plays the part of Celery's
  ``celery[pytest]`` extra, which installs an entry point that turns Celery's on).

Fixtures: ``celery_app`` (a fresh app per test: ``memory://`` broker and results unless
``celery_config`` or ``@pytest.mark.celery(...)`` say otherwise), ``celery_worker`` (an
embedded worker serving it in a thread), their session-wide twins
``celery_session_app``/``celery_session_worker``, and the fixtures a project overrides
to configure them: ``celery_config``, ``celery_parameters``, ``celery_includes``,
``celery_class_tasks``, ``celery_worker_pool``, ``celery_worker_parameters``,
``celery_enable_logging``, ``use_celery_app_trap``. ``NO_WORKER=1`` in the environment
makes the worker fixtures start nothing, as in Celery.

Celery's plugin defines fixtures of the same names; the two cannot be on together (the
one registered last would silently win), so enabling both is a usage error.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pytest

if TYPE_CHECKING:
    from ..app import Celery
    from .testing import TestWorker

__all__ = ["switch"]

PLUGIN = __name__
CELERY_PLUGIN = "celery.contrib.pytest"
INI_NAME = "celeriac_plugin"


class _Switch:
    """What the ``pytest11`` entry point loads: turns the fixtures on when asked to."""

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        parser.addini(INI_NAME, type="bool", default=False,
                      help="enable celeriac's pytest fixtures (celeriac.contrib.pytest)")

    def pytest_configure(self, config: pytest.Config) -> None:
        manager = config.pluginmanager
        if config.getini(INI_NAME) and not manager.has_plugin(PLUGIN):
            manager.register(sys.modules[PLUGIN], PLUGIN)


#: the object the ``pytest11`` entry point names
switch = _Switch()


# -- hooks (once the fixtures are on) ---------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "celery(**overrides): override the celeriac app's configuration for a test")


def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    # Historic: called for the plugins registered before this one too.
    if getattr(plugin, "__name__", None) == CELERY_PLUGIN:
        raise pytest.UsageError(
            f"{CELERY_PLUGIN} (Celery's pytest plugin) and {PLUGIN} (celeriac's) are both "
            "enabled; they define the same fixtures (celery_app, celery_worker ...), so "
            "enable only one of them")


# -- building apps ----------------------------------------------------------------------------
def _config(request: pytest.FixtureRequest, celery_config: Mapping[str, Any]) -> dict[str, Any]:
    mark = request.node.get_closest_marker("celery")
    return dict(celery_config, **(mark.kwargs if mark else {}))


def _create_app(config: Mapping[str, Any], parameters: Mapping[str, Any],
                enable_logging: bool, use_trap: bool) -> Any:
    from .testing import TestApp, setup_default_app

    app = TestApp(config=config, enable_logging=enable_logging, set_as_current=False,
                  **dict(parameters))
    return app, setup_default_app(app, use_trap=use_trap)


def _no_worker() -> bool:
    return bool(os.environ.get("NO_WORKER"))


# -- fixtures a project overrides -------------------------------------------------------------
@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True: code that falls back to the current app then raises."""
    return False


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Override to return True: the embedded worker then sets up logging as a worker does."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override with the modules (tasks, signal handlers) to import before a worker starts."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Override to choose the embedded worker's pool: ``solo`` (default), ``threads``,
    ``asyncio``."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override with the settings of the test app (``broker_url``, ``result_backend`` ...)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override with the arguments the test app is built with (``Celery(**parameters)``)."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override with ``start_worker`` options (``queues``, ``concurrency``, ``shutdown_timeout``
    ...)."""
    return {}


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Override with class-based tasks to register on the session app."""
    return []


# -- apps and workers -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
                       use_celery_app_trap: bool) -> Iterator[Celery]:
    """One app for the whole session, made the current app (unless the trap is on)."""
    app, scope = _create_app(_config(request, celery_config), celery_parameters,
                             celery_enable_logging, use_celery_app_trap)
    with scope:
        if not use_celery_app_trap:
            app.set_current()
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Celery, celery_includes: Sequence[str],
                          celery_class_tasks: Sequence[Any], celery_worker_pool: str,
                          celery_worker_parameters: Mapping[str, Any]
                          ) -> Iterator[TestWorker | None]:
    """An embedded worker serving ``celery_session_app`` for the whole session."""
    if _no_worker():
        yield None
        return
    import importlib

    from .testing import start_worker

    for module in celery_includes:
        importlib.import_module(module)
    for task in celery_class_tasks:
        celery_session_app.register_task(task)
    with start_worker(celery_session_app, pool=celery_worker_pool,
                      **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Iterator[Celery]:
    """A fresh app for this test; ``@pytest.mark.celery(**settings)`` adds settings."""
    app, scope = _create_app(_config(request, celery_config), celery_parameters,
                             celery_enable_logging, use_celery_app_trap)
    with scope:
        yield app


@pytest.fixture()
def celery_worker(celery_app: Celery, celery_includes: Sequence[str], celery_worker_pool: str,
                  celery_worker_parameters: Mapping[str, Any]) -> Iterator[TestWorker | None]:
    """An embedded worker serving ``celery_app`` while the test runs."""
    if _no_worker():
        yield None
        return
    import importlib

    from .testing import start_worker

    for module in celery_includes:
        importlib.import_module(module)
    with start_worker(celery_app, pool=celery_worker_pool,
                      **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def depends_on_current_app(celery_app: Celery) -> None:
    """Makes ``celery_app`` the current app, for code that uses the current app."""
    celery_app.set_current()
