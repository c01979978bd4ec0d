"""``DjangoTask``: the default task class of an app set up for Django, as in Celery."""

from __future__ import annotations

from ...task import Task


class DjangoTask(Task):  # type: ignore[type-arg]
    """Celery's ``celery.contrib.django.task.DjangoTask``. ``delay_on_commit`` and
    ``apply_async_on_commit`` (see ``transactions``) live on ``Task`` itself, so
    ``shared_task``s have them too; this name is kept for code that names it as a base
    or as ``task_cls``."""
