"""Flask: ``celery_init_app(app)``, the shape the current Flask docs give, and ``FlaskTask``.

    from flask import Flask
    from celeriac.contrib.flask import celery_init_app

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_mapping(CELERY={"broker_url": "redis://localhost",
                                        "result_backend": "redis://localhost",
                                        "task_ignore_result": True})
        celery_init_app(app)
        return app

Tasks then run inside the Flask app's context (``current_app``, extensions, the
database session), in the worker as in eager mode. ``app.extensions["celery"]`` is the
celeriac app; the worker finds it through a module that builds the Flask app
(``celeriac -A make_celery worker``, see docs/flask.md). Needs the ``flask`` extra:
``pip install 'celeriac[flask]'``.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import signals
from ..app import Celery
from ..exceptions import ImproperlyConfigured, MissingDependency
from ..task import Task

try:
    import flask
except ImportError as exc:
    if exc.name != "flask":
        raise  # installed, but broken: its own error says more
    raise MissingDependency("flask", "flask", "celeriac.contrib.flask") from exc

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["FlaskTask", "celery_init_app"]


class FlaskTask(Task[Any, Any]):
    """A task that runs inside its Flask app's application context.

    A task called while that app's context is already active (a direct call from a
    view) runs in it as it is, so it sees the request's ``g``; otherwise a context is
    pushed for the run and popped after it. An ``async def`` task gets its context
    around the whole coroutine. The Flask app is ``flask_app``, else the one
    ``celery_init_app`` made this task's app for.
    """

    #: the Flask app whose context the task runs in (set by ``celery_init_app``)
    flask_app: Flask | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flask_app = self.flask_app or _flask_apps.get(self.app)
        if flask_app is None or _in_context_of(flask_app):
            return super().__call__(*args, **kwargs)
        if inspect.iscoroutinefunction(self.run):
            return self._call_async(flask_app, args, kwargs)
        with flask_app.app_context():
            return super().__call__(*args, **kwargs)

    async def _call_async(self, flask_app: Flask, args: Any, kwargs: Any) -> Any:
        with flask_app.app_context():
            return await super().__call__(*args, **kwargs)


def celery_init_app(app: Flask, config_key: str = "CELERY",
                    task_cls: type[FlaskTask] = FlaskTask, **options: Any) -> Celery:
    """Make the celeriac app of a Flask app, as the Flask docs' ``celery_init_app``.

    The app is named after the Flask app, configured from ``app.config[config_key]``
    (a dict of lowercase settings: ``broker_url``, ``result_backend`` ...; missing is
    an empty configuration), made the current app (so ``shared_task`` and
    ``AsyncResult(id)`` find it) and stored in ``app.extensions["celery"]``. Every
    task it runs, in a worker or eagerly, runs in the Flask app's context: its own
    tasks as ``FlaskTask``, and ``@shared_task`` ones too (whose base is ``Task``).

    Args:
        app: the Flask app.
        config_key: the key of ``app.config`` holding the settings.
        task_cls: the base class of the app's tasks; a subclass of ``FlaskTask``.
        **options: more ``Celery(...)`` arguments (``include=[...]`` ...).

    Returns:
        The celeriac app.
    """
    bound = type(task_cls.__name__, (task_cls,),
                 {"flask_app": app, "__module__": task_cls.__module__})
    celery_app = Celery(app.name, task_cls=bound, **options)
    celery_app.config_from_object(app.config.get(config_key) or {})
    _flask_apps[celery_app] = app
    if not _connected:
        _connect()
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


# The Flask app of each celeriac app made by celery_init_app; weak, so that the many
# apps a test suite makes do not pile up.
_flask_apps: weakref.WeakKeyDictionary[Celery, Flask] = weakref.WeakKeyDictionary()
# App contexts pushed for runs, by (task id, thread): popped when that run ends.
_pushed: dict[tuple[str | None, int], Any] = {}
_connected = False


def _in_context_of(flask_app: Flask) -> bool:
    if not flask.has_app_context():
        return False
    current = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    return bool(current is flask_app)


def _enter(sender: Task[Any, Any], task_id: str | None = None, **_: Any) -> None:
    # task_prerun: a shared task's class is plain Task, so the context comes from here
    try:
        flask_app = _flask_apps.get(sender.app)
    except ImproperlyConfigured:  # a shared task with no app: not ours
        return
    if flask_app is None or _in_context_of(flask_app):
        return
    context = flask_app.app_context()
    context.push()
    _pushed[(task_id, threading.get_ident())] = context


def _leave(sender: Task[Any, Any], task_id: str | None = None, **_: Any) -> None:
    context = _pushed.pop((task_id, threading.get_ident()), None)
    if context is not None:
        context.pop()


def _connect() -> None:
    global _connected
    signals.task_prerun.connect(_enter)
    signals.task_postrun.connect(_leave)
    _connected = True
