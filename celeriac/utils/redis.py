"""Redis URLs to redis-py clients, one client per process.

Shared by the Redis broker and the Redis result backend. The worker forks its pool
children after the app (and so these objects) exist; a socket inherited from the parent
must never be used by the child, so every process builds its own client on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..exceptions import ImproperlyConfigured, MissingDependency
from .pid import current_pid

# Transport options passed through to the connection pool when present.
POOL_OPTIONS = (
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry_on_timeout",
    "max_connections", "health_check_interval", "client_name", "username", "password",
    "protocol",
)

# redis-py's socket timeout when none is configured; blocking calls stay below it.
DEFAULT_SOCKET_TIMEOUT = 5.0

_CERT_REQS = {"cert_none": "none", "cert_optional": "optional", "cert_required": "required"}

_lock = threading.RLock()


def _reset_lock_in_child() -> None:
    # A fork taken while another thread held the lock would leave it held forever.
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def process_lock() -> threading.RLock:
    """A lock for building per-process state; always usable in a freshly forked child."""
    return _lock


def import_redis(feature: str) -> Any:
    """Import redis-py.

    Raises:
        MissingDependency: redis-py is not installed.
    """
    try:
        import redis
    except ImportError:
        raise MissingDependency("redis", "redis", feature) from None
    return redis


def redis_py_url(url: str) -> str:
    """Translate kombu's URL forms into one redis-py's ``from_url`` understands.

    ``redis+socket:///path?virtual_host=N`` becomes ``unix:///path?db=N``; ``rediss://``
    accepts ``ssl_cert_reqs=CERT_REQUIRED`` (Celery's spelling) as well as ``required``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    fixed: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "virtual_host":
            key = "db"
        elif key == "ssl_cert_reqs":
            value = _CERT_REQS.get(value.lower(), value.lower())
        fixed.append((key, value))
    if scheme == "redis+socket":
        scheme = "unix"
    elif scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"not a Redis URL: {url!r}")
    # urlunsplit would drop the '//' of a socket URL, which has no host.
    query = f"?{urlencode(fixed)}" if fixed else ""
    return f"{scheme}://{parts.netloc}{parts.path}{query}"


class RedisConnector:
    """Hands out one redis-py client per process for a URL.

    Args:
        url: ``redis://``, ``rediss://`` or ``redis+socket://`` URL.
        options: transport options; the keys in ``POOL_OPTIONS`` reach the pool.
        feature: what needs Redis, for the missing-dependency message.
    """

    def __init__(self, url: str, options: dict[str, Any] | None, feature: str) -> None:
        self.redis = import_redis(feature)
        self.url = redis_py_url(url)
        options = options or {}
        self.pool_kwargs: dict[str, Any] = {k: options[k] for k in POOL_OPTIONS if k in options}
        # kombu and Celery speak RESP2; it also keeps pub/sub replies plain arrays.
        self.pool_kwargs.setdefault("protocol", 2)
        if "retry" not in self.pool_kwargs:
            # redis-py 8 connections in a pool built here retry nothing by default: one
            # dropped connection (a server restart, a CLIENT KILL) would fail a fetch,
            # an ack or a result write. A few quick retries ride over it. A retried
            # publish may duplicate a message, as kombu's may; every other command the
            # transports send is safe to repeat.
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            self.pool_kwargs["retry"] = Retry(ExponentialBackoff(cap=1.0, base=0.01), 5)
        query = dict(parse_qsl(urlsplit(self.url).query))
        if "socket_timeout" not in self.pool_kwargs and "socket_timeout" not in query:
            self.pool_kwargs["socket_timeout"] = DEFAULT_SOCKET_TIMEOUT
        timeout = self.pool_kwargs.get("socket_timeout", query.get("socket_timeout"))
        #: seconds a read may take before redis-py gives up; None = no limit
        self.socket_timeout: float | None = None if timeout is None else float(timeout)
        self._client: Any = None
        self._pid = 0
        # Fail on a malformed URL now rather than at the first command.
        self.redis.ConnectionPool.from_url(self.url, **self.pool_kwargs)

    @property
    def pid(self) -> int:
        """The process the current client belongs to (0 before the first one)."""
        return self._pid

    def client(self) -> Any:
        """This process's ``redis.Redis``, created on first use."""
        pid = current_pid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        with process_lock():
            if self._client is None or self._pid != pid:
                pool = self.redis.ConnectionPool.from_url(
                    self.url, decode_responses=False, **self.pool_kwargs)
                self._client = self.redis.Redis(connection_pool=pool)
                self._pid = pid
            return self._client

    def new_connection(self) -> Any:
        """A connection outside the pool (for pub/sub), not yet connected."""
        pool = self.client().connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def block_limit(self) -> float | None:
        """The longest a blocking command may wait without hitting the socket timeout."""
        if self.socket_timeout is None:
            return None
        return max(self.socket_timeout - 1.0, self.socket_timeout / 2)

    def close(self) -> None:
        """Close this process's connections (a parent's client is left to the parent)."""
        with process_lock():
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.connection_pool.disconnect()
