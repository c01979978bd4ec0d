"""Admin pages for periodic tasks and their schedules."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import (ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask,
                     SolarSchedule)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "enabled", "task", "schedule", "one_off", "last_run_at",
                    "total_run_count")
    list_filter = ("enabled", "one_off", "task", "start_time", "last_run_at")
    search_fields = ("name", "task")
    readonly_fields = ("last_run_at", "total_run_count", "date_changed")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        ("Schedule", {"fields": ("interval", "crontab", "solar", "clocked", "start_time",
                                 "one_off", "expires", "expire_seconds")}),
        ("Arguments", {"fields": ("args", "kwargs")}),
        ("Sending options", {"fields": ("queue", "exchange", "routing_key", "priority",
                                        "headers")}),
        ("Runs", {"fields": ("last_run_at", "total_run_count", "date_changed")}),
    )
    actions = ("enable", "disable")

    @admin.display(description="schedule")
    def schedule(self, obj: PeriodicTask) -> str:
        return str(obj.schedule_row or "-")

    @admin.action(description="Enable the selected tasks")
    def enable(self, request: Any, queryset: Any) -> None:
        self._set_enabled(queryset, True)

    @admin.action(description="Disable the selected tasks")
    def disable(self, request: Any, queryset: Any) -> None:
        self._set_enabled(queryset, False)

    @staticmethod
    def _set_enabled(queryset: Any, enabled: bool) -> None:
        from .models import PeriodicTasks

        queryset.update(enabled=enabled)
        PeriodicTasks.update_changed()  # update() sends no signals


for model in (IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    admin.site.register(model)
