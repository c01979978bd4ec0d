"""Find the app named by ``-A``, the way Celery does."""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

from ..app import Celery
from ..utils.imports import symbol_by_name


class AppNotFound(AttributeError):
    """``-A`` led to a module or an object, but to no Celery app."""


def find_app(name: str) -> Celery:
    """Resolve ``proj``, ``proj.celery``, ``proj:app`` or ``proj.celery.app`` to an app.

    A module is searched for an ``app`` attribute, then ``celery``, then (for a package)
    its ``celery`` submodule, then any ``Celery`` instance it holds.

    Raises:
        AppNotFound: the module holds no app (the message says what was tried).
        Exception: whatever importing the user's module raised.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    found = symbol_by_name(name)
    if isinstance(found, ModuleType) and ":" not in name:
        return _search_module(found, name)
    if isinstance(found, Celery):
        return found
    raise AppNotFound(f"-A {name!r} names {found!r}, which is not a Celery app")


def _search_module(module: ModuleType, name: str) -> Celery:
    for attr in ("app", "celery"):
        value: Any = getattr(module, attr, None)
        if isinstance(value, Celery):
            return value
    if getattr(module, "__path__", None):
        try:
            return find_app(f"{name}.celery")
        except ImportError as exc:
            if exc.name not in (f"{name}.celery", None):
                raise
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    raise AppNotFound(
        f"module {name!r} has no Celery app: define 'app = Celery(...)' in it, or pass "
        f"-A {name}:<attribute>")
