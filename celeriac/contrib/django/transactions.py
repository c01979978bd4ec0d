"""Sending a task once the current database transaction commits (Celery 5.4+).

``add.delay_on_commit(2, 2)`` inside ``transaction.atomic()`` sends nothing until the
block commits, and nothing at all if it rolls back, so a worker never looks for a row
the web request has not committed yet. Outside a transaction it sends at once. As in
Celery, both return None: the task id is not known until the message is sent.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ...exceptions import MissingDependency


def on_commit(send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              using: str | None = None) -> None:
    """Call ``send(*args, **kwargs)`` when the transaction on ``using`` commits.

    Raises:
        MissingDependency: Django is not installed.
    """
    try:
        from django.db import transaction
    except ImportError as exc:
        raise MissingDependency("django", "django", "delay_on_commit()") from exc
    transaction.on_commit(functools.partial(send, *args, **kwargs), using=using)
