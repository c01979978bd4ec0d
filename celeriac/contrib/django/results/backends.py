"""``django-db`` and ``django-cache``: result backends on Django's ORM and cache.

``django-db`` stores each task's meta in the columns of ``TaskResult`` (state, result,
traceback, dates; task name, arguments and worker with ``result_extended``) and saved
groups in ``GroupResult``. Expired rows are deleted by ``celery.backend_cleanup``, which
beat sends daily, as Celery does; chords are counted in ``ChordCounter`` and
``ChordPart``. ``django-cache`` keeps the meta under Celery's keys in the Django cache
named by ``cache_backend`` (default ``'default'``); it cannot count chords.
"""

from __future__ import annotations

import base64
import warnings
from datetime import timedelta
from typing import Any

from .... import serialization, states
from ....backends.base import GROUP_KEY_PREFIX, Backend, BackendOptions, ChordPart
from ....config import IgnoredSettingWarning
from ....exceptions import ImproperlyConfigured, MissingDependency

APP = "celeriac.contrib.django.results"
KEY_PREFIX = "celery-task-meta-"
#: meta keys that have columns of their own
_COLUMNS = frozenset({"status", "result", "traceback", "date_done", "task_id", "name",
                      "args", "kwargs", "worker", "periodic_task_name"})


def _ready_django(what: str) -> None:
    try:
        import django  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("django", "django", f"result_backend {what!r}") from exc
    from ..fixup import setup_django

    setup_django()


class DjangoDatabaseBackend(Backend):
    """Results in ``TaskResult``/``GroupResult`` rows (Django's default database)."""

    supports_autoexpire = False

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        _ready_django(url)
        from django.apps import apps

        if not apps.is_installed(APP):
            raise ImproperlyConfigured(
                f"result_backend {url!r} needs {APP!r} in INSTALLED_APPS (then run "
                "'python manage.py migrate')")
        if self.options.compression:
            warnings.warn(IgnoredSettingWarning(
                "result_compression has no effect on the django-db result backend: "
                "results are kept as text columns"), stacklevel=2)
        from .models import ChordCounter, ChordPart, GroupResult, TaskResult

        self.TaskResult = TaskResult
        self.GroupResult = GroupResult
        self.ChordCounter = ChordCounter
        self.ChordPart = ChordPart

    # -- columns <-> meta ----------------------------------------------------------------
    def _meta(self, task_id: str, result: Any, state: str, traceback: str | None,
              request: Any) -> dict[str, Any]:
        meta = super()._meta(task_id, result, state, traceback, request)
        # beat -S django names the entry in a header; kept with result_extended, as
        # django-celery-results does
        headers = getattr(request, "headers", None) or {}
        if "name" in meta and headers.get("periodic_task_name"):
            meta["periodic_task_name"] = headers["periodic_task_name"]
        return meta

    def _text(self, value: Any) -> tuple[str, str, str]:
        data, content_type, encoding = serialization.dumps(value, self._serializer.name)
        if encoding == "binary":
            return base64.b64encode(data).decode("ascii"), content_type, "binary"
        return (data.decode("utf-8") if isinstance(data, bytes) else data), content_type, \
            encoding

    def _value(self, text: str | None, content_type: str, encoding: str) -> Any:
        if text is None:
            return None
        data = base64.b64decode(text) if encoding == "binary" else text.encode("utf-8")
        return serialization.loads(data, content_type, self._accept)

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        from django.utils import timezone

        meta = self._decode(data)
        result, content_type, encoding = self._text(meta.get("result"))
        rest = {k: v for k, v in meta.items() if k not in _COLUMNS}
        row: dict[str, Any] = {
            "status": meta["status"], "result": result, "traceback": meta.get("traceback"),
            "content_type": content_type, "content_encoding": encoding,
            "meta": self._text(rest)[0],
        }
        if meta["status"] == states.STARTED:
            row["date_started"] = timezone.now()
        if "name" in meta:  # result_extended
            row.update(task_name=meta.get("name"), worker=meta.get("worker"),
                       periodic_task_name=meta.get("periodic_task_name"),
                       task_args=self._text(meta.get("args"))[0],
                       task_kwargs=self._text(meta.get("kwargs"))[0])
        row["date_done"] = timezone.now()  # update() skips auto_now
        self._upsert(self.TaskResult, "task_id", task_id, row)

    @staticmethod
    def _upsert(model: Any, key: str, value: str, row: dict[str, Any]) -> None:
        # One statement at a time, no read-then-write transaction (update_or_create's):
        # on SQLite such a transaction fails at once with "database is locked" when
        # another process writes, where a single statement waits its turn.
        from django.db import IntegrityError

        manager = model.objects
        if manager.filter(**{key: value}).update(**row):
            return
        try:
            manager.create(**{key: value}, **row)
        except IntegrityError:  # created meanwhile by another process
            manager.filter(**{key: value}).update(**row)

    def _meta_of(self, row: Any) -> dict[str, Any]:
        meta: dict[str, Any] = self._value(row.meta, row.content_type,
                                           row.content_encoding) or {}
        meta.setdefault("children", [])
        meta.update(status=row.status, task_id=row.task_id, traceback=row.traceback,
                    result=self._value(row.result, row.content_type, row.content_encoding),
                    date_done=row.date_done.isoformat() if row.date_done else None)
        if self.options.extended:
            meta.update(name=row.task_name, worker=row.worker,
                        args=self._value(row.task_args, row.content_type,
                                         row.content_encoding),
                        kwargs=self._value(row.task_kwargs, row.content_type,
                                           row.content_encoding))
        return meta

    def _select(self, task_id: str) -> dict[str, Any] | None:
        row = self.TaskResult.objects.filter(task_id=task_id).first()
        return None if row is None else self._meta_of(row)

    def _get(self, task_id: str) -> bytes | None:
        meta = self._select(task_id)
        return None if meta is None else self._encode(meta)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        meta = self._retrying(self._select, task_id)
        if meta is None:
            return {"status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "task_id": task_id}
        return meta

    def _delete(self, task_id: str) -> None:
        self.TaskResult.objects.filter(task_id=task_id).delete()

    # -- groups ----------------------------------------------------------------------------
    def save_group(self, group_id: str, value: Any) -> None:
        from django.utils import timezone

        result, content_type, encoding = self._text(value)
        self._upsert(self.GroupResult, "group_id", group_id, {
            "result": result, "content_type": content_type, "content_encoding": encoding,
            "date_done": timezone.now()})

    def restore_group(self, group_id: str) -> Any:
        row = self.GroupResult.objects.filter(group_id=group_id).first()
        if row is None:
            return None
        return self._value(row.result, row.content_type, row.content_encoding)

    def delete_group(self, group_id: str) -> None:
        self.GroupResult.objects.filter(group_id=group_id).delete()

    # -- chords ----------------------------------------------------------------------------
    # Single statements only (see _upsert): a part's row is inserted once (a redelivered
    # part counts once), whoever then counts every part claims the body with one
    # conditional UPDATE, which exactly one caller wins.
    def set_chord_size(self, group_id: str, size: int) -> None:
        self.ChordPart.objects.filter(group_id=group_id).delete()
        self.ChordCounter.objects.filter(group_id=group_id).delete()
        self.ChordCounter.objects.create(group_id=group_id, size=size)

    def add_to_chord(self, group_id: str) -> int:
        from django.db.models import F

        chords = self.ChordCounter.objects.filter(group_id=group_id, claimed=False)
        if chords.update(size=F("size") + 1):
            size = chords.values_list("size", flat=True).first()
            if size is not None:
                return int(size)
        raise KeyError(f"no chord {group_id!r} is waiting (finished or unknown)")

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        from django.db import IntegrityError

        parts = self.ChordPart.objects.filter(group_id=group_id)
        try:
            self.ChordPart.objects.create(group_id=group_id, group_index=index,
                                          member=self._chord_member(index, task_id, state,
                                                                    result))
        except IntegrityError:
            return None  # recorded already
        chord = self.ChordCounter.objects.filter(group_id=group_id).first()
        if chord is None:
            parts.delete()  # the chord ended (or expired) already: keep nothing of it
            return None
        if parts.count() < chord.size or not self.ChordCounter.objects.filter(
                group_id=group_id, claimed=False).update(claimed=True):
            return None
        members = [bytes(m) for m in parts.order_by("group_index").values_list(
            "member", flat=True)]
        parts.delete()
        self.ChordCounter.objects.filter(group_id=group_id).delete()
        return self._chord_parts(members)

    # -- expiry ----------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Delete results and groups done more than ``result_expires`` ago, and chords
        waiting longer than ``result_chord_expires``."""
        from django.utils import timezone

        deleted = 0
        if self.options.expires:
            before = timezone.now() - timedelta(seconds=self.options.expires)
            tasks, _ = self.TaskResult.objects.filter(
                date_done__lt=before, status__in=states.READY_STATES).delete()
            groups, _ = self.GroupResult.objects.filter(date_done__lt=before).delete()
            deleted += tasks + groups
        if self.options.chord_ttl:
            before = timezone.now() - timedelta(seconds=self.options.chord_ttl)
            old = list(self.ChordCounter.objects.filter(
                date_created__lt=before).values_list("group_id", flat=True))
            self.ChordPart.objects.filter(group_id__in=old).delete()
            chords, _ = self.ChordCounter.objects.filter(group_id__in=old).delete()
            deleted += chords
        return int(deleted)

    def close(self) -> None:
        from django.db import connections

        # this thread's connections: the ORM opens them again when next needed
        for conn in connections.all(initialized_only=True):
            conn.close()


class DjangoCacheBackend(Backend):
    """Results in the Django cache named by ``cache_backend`` (default ``'default'``)."""

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        _ready_django(url)
        from django.conf import settings

        alias = self.options.cache.get("backend") or "default"
        if alias not in settings.CACHES:
            # Celery's docs also show cache_backend = 'django-cache': the default cache
            if alias not in ("django-cache", "default"):
                raise ImproperlyConfigured(
                    f"cache_backend {alias!r} names no cache in Django's CACHES "
                    f"({', '.join(settings.CACHES)})")
            alias = "default"
        self.alias = alias

    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]  # one per thread, as Django keeps them

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        self.cache.set(self._key(task_id), data, timeout=expires)

    def _get(self, task_id: str) -> bytes | None:
        value = self.cache.get(self._key(task_id))
        return value if isinstance(value, bytes) else None

    def _delete(self, task_id: str) -> None:
        self.cache.delete(self._key(task_id))

    @staticmethod
    def _key(task_id: str) -> str:
        # group keys come in with their own prefix (Backend._group_key)
        return task_id if task_id.startswith(GROUP_KEY_PREFIX) else KEY_PREFIX + task_id
