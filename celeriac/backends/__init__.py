"""Result backends, chosen by URL scheme (the only string; each loads its module lazily)."""

from __future__ import annotations

from typing import Callable

from ..exceptions import UnknownTransport
from ..utils.urls import scheme_of
from .base import Backend, BackendOptions


def _memory() -> type[Backend]:
    from .memory import MemoryBackend

    return MemoryBackend


def _sqlite() -> type[Backend]:
    from .sqlite import SQLiteBackend

    return SQLiteBackend


def _redis() -> type[Backend]:
    from .redis import RedisBackend

    return RedisBackend


def _disabled() -> type[Backend]:
    from .disabled import DisabledBackend

    return DisabledBackend


BACKENDS: dict[str, Callable[[], type[Backend]]] = {
    "memory": _memory,
    "cache+memory": _memory,
    "sqlite": _sqlite,
    "db+sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "redis+socket": _redis,
    "disabled": _disabled,
}


def connect(url: str, options: BackendOptions | None = None) -> Backend:
    """Open the result backend for ``url``.

    Raises:
        UnknownTransport: the scheme is not one of ``BACKENDS``.
    """
    scheme = scheme_of(url)
    try:
        loader = BACKENDS[scheme]
    except KeyError:
        raise UnknownTransport("result backend", scheme, list(BACKENDS)) from None
    return loader()(url, options)


__all__ = ["Backend", "BackendOptions", "BACKENDS", "connect"]
