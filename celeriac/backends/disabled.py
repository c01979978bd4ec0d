"""``disabled://``: no results are kept; reading one is a clear error."""

from __future__ import annotations

from ..exceptions import ImproperlyConfigured
from .base import Backend

_HINT = ("no result backend is configured: pass backend='...' to Celery() or set "
         "result_backend, or use ignore_result=True")


class DisabledBackend(Backend):
    persistent = False

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        pass

    def _get(self, task_id: str) -> bytes | None:
        raise ImproperlyConfigured(_HINT)

    def _delete(self, task_id: str) -> None:
        pass
