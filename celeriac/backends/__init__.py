"""Result backends, chosen by URL scheme (the only string; each loads its module lazily)."""

from __future__ import annotations

from typing import Any, Callable

from ..exceptions import ImproperlyConfigured, UnknownTransport
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


def _rpc() -> type[Backend]:
    from .rpc import RPCBackend

    return RPCBackend


def _removed_amqp() -> type[Backend]:
    from .rpc import removed_amqp_backend

    raise removed_amqp_backend("amqp://")


def _database() -> type[Backend]:
    from .database import DatabaseBackend

    return DatabaseBackend


def _cache() -> type[Backend]:
    from .cache import CacheBackend

    return CacheBackend


def _django_db() -> type[Backend]:
    from ..contrib.django.results.backends import DjangoDatabaseBackend

    return DjangoDatabaseBackend


def _django_cache() -> type[Backend]:
    from ..contrib.django.results.backends import DjangoCacheBackend

    return DjangoCacheBackend


def _disabled() -> type[Backend]:
    from .disabled import DisabledBackend

    return DisabledBackend


BACKENDS: dict[str, Callable[[], type[Backend]]] = {
    "memory": _memory,
    "cache+memory": _memory,
    "sqlite": _sqlite,
    # Celery's SQLAlchemy backend: db+postgresql://, db+mysql+pymysql://, db+sqlite://...
    # (any scheme starting "db+"), or 'database' with the database_url setting
    "db": _database,
    "database": _database,
    # Celery's cache backend: cache+memcached://host:11211/, or 'cache' with cache_backend
    "cache": _cache,
    "cache+memcached": _cache,
    "cache+memcache": _cache,
    "cache+pymemcache": _cache,
    "cache+pylibmc": _cache,
    "redis": _redis,
    "rediss": _redis,
    "redis+socket": _redis,
    "sentinel": _redis,
    "rpc": _rpc,
    # django-celery-results' names: the Django ORM and cache (celeriac.contrib.django)
    "django-db": _django_db,
    "django-cache": _django_cache,
    # Celery 5 removed its amqp result backend: a clear error pointing to rpc://
    "amqp": _removed_amqp,
    "pyamqp": _removed_amqp,
    "amqps": _removed_amqp,
    "pyamqps": _removed_amqp,
    "disabled": _disabled,
}


def connect(url: str, options: BackendOptions | None = None) -> Backend:
    """Open the result backend for ``url``.

    A scheme named in ``options.overrides`` (the ``override_backends`` setting) is
    served by the class given there (a ``Backend`` subclass or ``'module:Class'``)
    instead of the built-in one. As in Celery, an override of ``db`` also serves
    ``db+postgresql://...`` URLs, and the class gets the URL after the ``+``.

    Raises:
        UnknownTransport: the scheme is neither overridden nor one of ``BACKENDS``.
        ImproperlyConfigured: an override does not name a ``Backend`` subclass.
    """
    scheme = scheme_of(url)
    overrides = options.overrides if options is not None else {}
    if scheme in overrides:
        return _override(scheme, overrides[scheme])(url, options)
    alias, plus, rest = url.partition("+")
    if plus and alias in overrides:  # Celery's 'db+postgresql://...': the class gets the rest
        return _override(alias, overrides[alias])(rest, options)
    try:
        loader = BACKENDS[scheme if not scheme.startswith("db+") else "db"]
    except KeyError:
        known = sorted({*BACKENDS, *overrides})
        raise UnknownTransport("result backend", scheme, known) from None
    return loader()(url, options)


def _override(scheme: str, target: Any) -> type[Backend]:
    if isinstance(target, str):
        from ..utils.imports import symbol_by_name

        try:
            target = symbol_by_name(target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"override_backends[{scheme!r}]: cannot load {target!r} ({exc})") from exc
    if not (isinstance(target, type) and issubclass(target, Backend)):
        raise ImproperlyConfigured(
            f"override_backends[{scheme!r}] is {target!r}, not a celeriac Backend subclass")
    return target


__all__ = ["Backend", "BackendOptions", "BACKENDS", "connect"]
