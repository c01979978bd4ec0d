"""``TaskResult`` and ``GroupResult``, with django-celery-results' field names.

``result`` and ``meta`` hold text in the result serializer's format (``content_type``
and ``content_encoding`` say which; binary formats are base64 text).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from .... import states

STATE_CHOICES = sorted((state, state) for state in states.ALL_STATES)


class TaskResult(models.Model):
    """The state and result of one task."""

    task_id = models.CharField("task id", max_length=255, unique=True)
    periodic_task_name = models.CharField("periodic task name", max_length=255, null=True)
    task_name = models.CharField("task name", max_length=255, null=True, db_index=True)
    task_args = models.TextField("task positional arguments", null=True)
    task_kwargs = models.TextField("task named arguments", null=True)
    status = models.CharField("task state", max_length=50, default=states.PENDING,
                              choices=STATE_CHOICES, db_index=True)
    worker = models.CharField("worker", max_length=100, null=True, default=None,
                              db_index=True)
    content_type = models.CharField("result content type", max_length=128)
    content_encoding = models.CharField("result encoding", max_length=64)
    result = models.TextField("result data", null=True, default=None, editable=False)
    date_created = models.DateTimeField("created", auto_now_add=True, db_index=True)
    date_started = models.DateTimeField("started", null=True, default=None)
    date_done = models.DateTimeField("completed", auto_now=True, db_index=True)
    traceback = models.TextField("traceback", blank=True, null=True)
    meta = models.TextField("task meta", null=True, default=None, editable=False)

    class Meta:
        ordering = ["-date_done"]
        verbose_name = "task result"
        verbose_name_plural = "task results"

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in self._meta.fields}

    def __str__(self) -> str:
        return f"<Task: {self.task_id} ({self.status})>"


class GroupResult(models.Model):
    """A saved group (``GroupResult.save()``): the ids of its results."""

    group_id = models.CharField("group id", max_length=255, unique=True)
    date_created = models.DateTimeField("created", auto_now_add=True, db_index=True)
    date_done = models.DateTimeField("completed", auto_now=True, db_index=True)
    content_type = models.CharField("result content type", max_length=128)
    content_encoding = models.CharField("result encoding", max_length=64)
    result = models.TextField("result data", null=True, default=None, editable=False)

    class Meta:
        ordering = ["-date_done"]
        verbose_name = "group result"
        verbose_name_plural = "group results"

    def __str__(self) -> str:
        return f"<Group: {self.group_id}>"


class ChordCounter(models.Model):
    """A chord waiting for its header tasks: how many, and whether its body was sent."""

    group_id = models.CharField("group id", max_length=255, unique=True)
    size = models.PositiveIntegerField("header tasks")
    claimed = models.BooleanField("body sent", default=False)
    date_created = models.DateTimeField("created", auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"<Chord: {self.group_id} of {self.size}>"


class ChordPart(models.Model):
    """One finished header task of a waiting chord (its state and result)."""

    group_id = models.CharField("group id", max_length=255, db_index=True)
    group_index = models.PositiveIntegerField("index in the header")
    member = models.BinaryField("state and result")

    class Meta:
        unique_together = [("group_id", "group_index")]
