"""The Django app holding periodic tasks."""

from __future__ import annotations

from django.apps import AppConfig


class BeatConfig(AppConfig):
    name = "celeriac.contrib.django.beat"
    label = "celeriac_beat"
    verbose_name = "Celeriac periodic tasks"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import models

        models.connect_change_signals()
