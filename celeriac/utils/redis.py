"""Redis URLs to redis-py clients, one client per process.

Shared by the Redis broker and the Redis result backend. The worker forks its pool
children after the app (and so these objects) exist; a socket inherited from the parent
must never be used by the child, so every process builds its own client on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..exceptions import ImproperlyConfigured, MissingDependency
from .pid import current_pid
from .urls import mask_password

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
        raise ImproperlyConfigured(f"not a Redis URL: {mask_password(url)!r}")
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
        self._lines = threading.local()
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

    def line(self) -> DirectLine:
        """This thread's ``DirectLine`` to the server, for the worker's hot path."""
        local = self._lines
        line: DirectLine | None = getattr(local, "line", None)
        if line is None or line.pid != current_pid():
            line = local.line = DirectLine(self)
        return line

    def block_limit(self) -> float | None:
        """The longest a blocking command may wait without hitting the socket timeout."""
        if self.socket_timeout is None:
            return None
        return max(self.socket_timeout - 1.0, self.socket_timeout / 2)

    def close(self) -> None:
        """Close this process's connections (a parent's client is left to the parent)."""
        line: DirectLine | None = getattr(self._lines, "line", None)
        if line is not None and line.pid == current_pid():
            line.drop()
        with process_lock():
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.connection_pool.disconnect()


class DirectLine:
    """A connection of one thread's own: commands packed into one write, replies read
    when the caller wants them.

    The worker writes a result and acks a message for every task. Through redis-py's
    pool each of those checks a connection out (a health poll, a system call) and runs
    retry and pipeline machinery, which together cost about a third of a no-op task.
    A line skips all that. It never retries: on any error it drops its connection and
    the caller repeats the commands through the pooled client, which retries; every
    command sent this way is safe to repeat.
    """

    def __init__(self, connector: RedisConnector) -> None:
        self.connector = connector
        self.pid = current_pid()
        self.conn: Any = None
        # Tickets of sends whose replies are not read yet, oldest first.
        self._unread: list[_Ticket] = []

    def send(self, *commands: tuple[Any, ...]) -> _Ticket:
        """Send ``commands`` at once; ``ticket.replies()`` reads their replies.

        Raises:
            Exception: the connection failed (it is dropped; repeat elsewhere).
        """
        conn = self.conn
        if conn is None:
            conn = self.connector.new_connection()
            conn.connect()
            self.conn = conn
        try:
            conn.send_packed_command([pack_commands(commands)], check_health=False)
        except BaseException:
            self.drop()
            raise
        ticket = _Ticket(self, len(commands))
        self._unread.append(ticket)
        return ticket

    def call(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` and wait for their replies."""
        return self.send(*commands).replies()

    def _read_through(self, ticket: _Ticket) -> None:
        # Replies come back in the order the commands went out: read every earlier
        # send's replies first and keep them for their tickets.
        conn = self.conn
        try:
            while self._unread:
                head = self._unread[0]
                if conn is None:
                    raise ConnectionError("the line was dropped before its replies came")
                head.values = [conn.read_response(disconnect_on_error=False)
                               for _ in range(head.count)]
                self._unread.pop(0)
                if head is ticket:
                    return
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        for ticket in self._unread:
            ticket.lost = True
        self._unread.clear()
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass


def pack_commands(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """Commands in the Redis protocol, as one buffer.

    redis-py's general packer handles every argument type and chunks large values;
    the hot path sends only keys, ints and payloads, and this is several times faster.
    """
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            elif not isinstance(arg, (bytes, bytearray, memoryview)):
                arg = repr(arg).encode()
            out.append(b"$%d\r\n" % len(arg))
            out.append(arg)
            out.append(b"\r\n")
    return b"".join(out)


class _Ticket:
    __slots__ = ("line", "count", "values", "lost")

    def __init__(self, line: DirectLine, count: int) -> None:
        self.line = line
        self.count = count
        self.values: list[Any] | None = None
        self.lost = False

    def replies(self) -> list[Any]:
        """The replies, in order.

        Raises:
            Exception: the connection failed before the replies were read, or a reply
                was an error (the line is dropped either way).
        """
        if self.values is None and not self.lost:
            self.line._read_through(self)
        if self.values is None:
            raise ConnectionError("the connection was lost before the replies were read")
        return self.values
