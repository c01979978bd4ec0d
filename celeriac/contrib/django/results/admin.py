"""Admin pages listing task and group results (read-only: workers write them)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import GroupResult, TaskResult


@admin.register(TaskResult)
class TaskResultAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    date_hierarchy = "date_done"
    list_display = ("task_id", "periodic_task_name", "task_name", "date_done", "status",
                    "worker")
    list_filter = ("status", "date_done", "periodic_task_name", "task_name", "worker")
    search_fields = ("task_name", "task_id", "status", "task_args", "task_kwargs")
    fields = ("task_id", "task_name", "periodic_task_name", "status", "worker",
              "content_type", "content_encoding", "task_args", "task_kwargs", "result",
              "traceback", "meta", "date_created", "date_started", "date_done")

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        return self.fields


@admin.register(GroupResult)
class GroupResultAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    date_hierarchy = "date_done"
    list_display = ("group_id", "date_done")
    search_fields = ("group_id",)
    fields = ("group_id", "content_type", "content_encoding", "result", "date_created",
              "date_done")

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        return self.fields
