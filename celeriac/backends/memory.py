"""``memory://`` (also ``cache+memory://``): results inside one process."""

from __future__ import annotations

import threading
import time
from typing import Any

from .. import states
from .base import Backend, BackendOptions, ChordPart

_chords: dict[str, dict[str, tuple[int, dict[int, bytes]]]] = {}
_stores: dict[str, tuple[threading.Condition, dict[str, tuple[bytes, float | None]]]] = {}
_lock = threading.Lock()


class MemoryBackend(Backend):
    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        with _lock:
            self._cond, self._data = _stores.setdefault(url, (threading.Condition(), {}))
            self._chords = _chords.setdefault(url, {})

    def set_chord_size(self, group_id: str, size: int) -> None:
        with self._cond:
            self._chords[group_id] = (size, {})

    def add_to_chord(self, group_id: str) -> int:
        with self._cond:
            size, parts = self._chords[group_id]
            self._chords[group_id] = (size + 1, parts)
            return size + 1

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        member = self._chord_member(index, task_id, state, result)
        with self._cond:
            entry = self._chords.get(group_id)
            if entry is None:
                return None
            size, parts = entry
            parts.setdefault(index, member)
            if len(parts) < size:
                return None
            del self._chords[group_id]
        return self._chord_parts([parts[i] for i in sorted(parts)])

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        with self._cond:
            self._data[task_id] = (data, time.time() + expires if expires else None)
            self._cond.notify_all()

    def _get(self, task_id: str) -> bytes | None:
        entry = self._data.get(task_id)
        if entry is None:
            return None
        data, deadline = entry
        if deadline is not None and deadline < time.time():
            self._data.pop(task_id, None)
            return None
        return data

    def _delete(self, task_id: str) -> None:
        with self._cond:
            self._data.pop(task_id, None)

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                data = self._get(task_id)
                if data is not None and self._decode(data).get("status") in states.READY_STATES:
                    return data
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return data
                self._cond.wait(remaining)
