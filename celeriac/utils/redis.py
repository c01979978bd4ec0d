"""Redis URLs to redis-py clients, one client per process.

Shared by the Redis broker and the Redis result backend. The worker forks its pool
children after the app (and so these objects) exist; a socket inherited from the parent
must never be used by the child, so every process builds its own client on first use.

Two connection options besides redis-py's pool options (``POOL_OPTIONS``):

- ``ssl``: TLS for the connections (``broker_use_ssl``): True, or a dict of redis-py's
  ``ssl_*`` arguments (``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``,
  ``ssl_keyfile``...). A ``redis://`` URL is then connected with TLS, as kombu does;
  what the URL's query gives wins.
- ``failover_strategy``: how the next URL of a fail-over list
  (``redis://a:6379/0;redis://b:6379/0``) is chosen when a connection to the current
  one fails: ``"round-robin"`` (the default), ``"shuffle"``, or a callable given the
  list of URLs that returns an iterator of them (kombu's contract).

Redis Sentinel (``sentinel://h1:26379;sentinel://h2:26379``, kombu's and Celery's
spelling): the ``;`` list names the sentinels, not fail-over servers. The sentinels are
asked where the master of ``master_name`` is on every new connection, so a fail-over is
followed without a restart. Its transport options: ``master_name`` (required),
``sentinel_kwargs`` (connection arguments for the sentinels only, e.g. their password;
without it they get the ``socket_*`` options) and ``min_other_sentinels``. The URL's
database, user and password are the master's; ``ssl`` makes the master connection TLS
(the sentinels' TLS is ``sentinel_kwargs={'ssl': True, ...}``).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

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

# kombu's fail-over lists: ``redis://h1:6379/0;redis://h2:6379/0`` (a ';' inside a query
# is not a separator: one starts a new URL only when a scheme follows).
_FAILOVER_SPLIT = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
# What may differ between the URLs of a fail-over list: where the server is, and how to
# log in to it. Every other option comes from the first URL and must be the same.
_PER_SERVER = ("host", "port", "db", "username", "password")

# Redis Sentinel's schemes: the URL list names sentinels, which name the master.
SENTINEL_SCHEMES = frozenset({"sentinel"})
DEFAULT_SENTINEL_PORT = 26379

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


def split_failover(url: str | Sequence[str]) -> list[str]:
    """The URLs of a fail-over list: a list, or one string of ``;``-separated URLs."""
    parts = [url] if isinstance(url, str) else list(url)
    urls: list[str] = []
    for part in parts:
        urls.extend(u.strip() for u in _FAILOVER_SPLIT.split(str(part)))
    return [u for u in urls if u]


def ssl_pool_kwargs(url: str, ssl: Any, setting: str = "broker_use_ssl"
                    ) -> tuple[str, dict[str, Any]]:
    """``url`` made a TLS URL, and the redis-py arguments of the TLS options ``ssl``.

    ``ssl`` is True (TLS with redis-py's defaults: the server's certificate is checked
    against the system's CAs) or a dict of ``ssl_*`` arguments; ``ssl_cert_reqs`` may be
    an ``ssl.CERT_*`` constant, its name, or ``none``/``optional``/``required``. A
    ``redis://`` URL becomes ``rediss://``, as kombu connects it with TLS.

    Raises:
        ImproperlyConfigured: a unix socket URL (TLS has no meaning there), or ``ssl``
            neither a bool nor a dict.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("unix", "redis+socket"):
        raise ImproperlyConfigured(
            f"{setting} is set but {mask_password(url)!r} is a unix socket URL; TLS "
            "needs a redis:// or rediss:// URL")
    if not isinstance(ssl, (bool, dict)):
        raise ImproperlyConfigured(
            f"{setting} must be True or a dict of ssl options (ssl_cert_reqs, "
            f"ssl_ca_certs, ssl_certfile, ssl_keyfile), not {type(ssl).__name__}")
    if scheme == "redis":
        url = "rediss" + url[len(parts.scheme):]
    kwargs: dict[str, Any] = {}
    for key, value in (ssl if isinstance(ssl, dict) else {}).items():
        # py-amqp's names for the same options, as a RabbitMQ configuration has them
        key = _AMQP_SSL_NAMES.get(str(key), str(key))
        if not key.startswith("ssl_"):
            raise ImproperlyConfigured(
                f"{setting} has {key!r}, which is not a Redis TLS option; give redis-py's "
                "ssl_* arguments (ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile, "
                "ssl_check_hostname...)")
        if key == "ssl_cert_reqs":
            if isinstance(value, str):
                value = _CERT_REQS.get(value.lower(), value.lower())
            else:
                import ssl as ssl_module

                value = {ssl_module.CERT_NONE: "none", ssl_module.CERT_OPTIONAL: "optional",
                         ssl_module.CERT_REQUIRED: "required"}.get(value, value)
        kwargs[key] = value
    return url, kwargs


_AMQP_SSL_NAMES = {"keyfile": "ssl_keyfile", "certfile": "ssl_certfile",
                   "ca_certs": "ssl_ca_certs", "cert_reqs": "ssl_cert_reqs"}


def _round_robin(urls: list[str]) -> Iterator[str]:
    return itertools.cycle(urls)


def _shuffle(urls: list[str]) -> Iterator[str]:
    import random

    while True:
        yield random.choice(urls)


FAILOVER_STRATEGIES: dict[str, Callable[[list[str]], Iterator[str]]] = {
    "round-robin": _round_robin, "round_robin": _round_robin, "shuffle": _shuffle,
}


def failover_strategy(strategy: Any) -> Callable[[list[str]], Iterator[str]]:
    """The function behind ``broker_failover_strategy``: a name, a callable, or a
    ``'module:attribute'`` path to one.

    Raises:
        ImproperlyConfigured: an unknown name.
    """
    if strategy is None:
        return _round_robin
    if isinstance(strategy, str):
        if strategy in FAILOVER_STRATEGIES:
            return FAILOVER_STRATEGIES[strategy]
        if ":" in strategy or "." in strategy:
            from .imports import symbol_by_name

            try:
                found = symbol_by_name(strategy)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ImproperlyConfigured(
                    f"broker_failover_strategy {strategy!r} cannot be imported: {exc}"
                ) from None
            if callable(found):
                return found  # type: ignore[no-any-return]
        raise ImproperlyConfigured(
            f"unknown broker_failover_strategy {strategy!r}; choose 'round-robin', "
            "'shuffle', or give a callable that takes the list of URLs and returns an "
            "iterator of them")
    if callable(strategy):
        return strategy  # type: ignore[no-any-return]
    raise ImproperlyConfigured(
        f"broker_failover_strategy must be a name or a callable, not {strategy!r}")


class _Failover:
    """The servers of a fail-over list, and the one connections go to now.

    Shared by every connection of one connector: when a connection cannot reach the
    current server, it moves everyone on to the next one the strategy gives, and tries
    each server at most once per connect. A server that answers is kept until it fails
    (there is no moving back, as with kombu).
    """

    def __init__(self, urls: list[str], targets: list[dict[str, Any]],
                 strategy: Callable[[list[str]], Iterator[str]]) -> None:
        self.urls = urls
        self.targets = targets
        self.cycle = iter(strategy(list(urls)))
        self.current = 0

    def _next_after(self, failed: int) -> int:
        with process_lock():
            if self.current != failed:
                return self.current  # another connection moved on already
            # A strategy may give the failed URL again (shuffle; round-robin starting
            # over): take the first other one within a few turns.
            for _ in range(4 * len(self.urls)):
                try:
                    url = next(self.cycle)
                except StopIteration:
                    self.cycle = iter(_round_robin(self.urls))
                    continue
                index = self.urls.index(url) if url in self.urls else -1
                if index >= 0 and index != failed:
                    self.current = index
                    break
            else:
                self.current = (failed + 1) % len(self.urls)
            return self.current

    def connect(self, conn: Any, connect: Callable[[], Any]) -> Any:
        index = self.current
        for attempt in range(len(self.targets)):
            for key, value in self.targets[index].items():
                setattr(conn, key, value)
            try:
                return connect()
            except OSError:  # refused, unreachable, timed out (socket.timeout)
                if attempt == len(self.targets) - 1:
                    raise
                index = self._next_after(index)
        raise AssertionError("unreachable")  # pragma: no cover


def _failover_connection_class(base: type, failover: _Failover) -> type:
    """A subclass of redis-py's connection class ``base`` whose connect goes to the
    fail-over list's current server, and on to the next ones when it cannot."""

    class FailoverConnection(base):  # type: ignore[misc, valid-type]
        def _connect(self) -> Any:
            return failover.connect(self, super()._connect)

    FailoverConnection.__qualname__ = f"Failover{base.__name__}"
    return FailoverConnection


def is_sentinel_url(url: str | Sequence[str]) -> bool:
    """Whether ``url`` (one URL, a ``;`` list or a list) names Redis sentinels."""
    urls = split_failover(url)
    return bool(urls) and urlsplit(urls[0]).scheme.lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """What a ``sentinel://`` URL list says: where the sentinels are, and the master's
    database and credentials."""

    #: ``(host, port)`` of each sentinel, in the order given
    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str | Sequence[str]) -> SentinelURL:
    """Read kombu's sentinel URL list: ``sentinel://[user:password@]host[:port][/db]``,
    several joined by ``;`` (or given as a list). The port defaults to 26379.

    As with kombu and Celery, the database, user and password are for the master (the
    sentinels' own credentials go in ``sentinel_kwargs``); they come from the first URL
    that gives them, and the others must agree.

    Raises:
        ImproperlyConfigured: a URL that is not ``sentinel://``, has a query, a bad port
            or database, or credentials or a database that differ from another's.
    """
    urls = split_failover(url)
    if not urls:
        raise ImproperlyConfigured("no sentinel URL given")
    sentinels: list[tuple[str, int]] = []
    found: dict[str, Any] = {}
    for one in urls:
        parts = urlsplit(one)
        masked = mask_password(one)
        if parts.scheme.lower() not in SENTINEL_SCHEMES:
            raise ImproperlyConfigured(
                f"{masked!r} in a sentinel URL list is not a sentinel:// URL; a list names "
                "sentinels only (the master is found through them)")
        if parts.query or parts.fragment:
            # refused, not ignored: an option given here would be lost without a word
            raise ImproperlyConfigured(
                f"{masked!r}: a sentinel URL takes no query; give connection options in "
                "the transport options (sentinel_kwargs for the sentinels)")
        try:
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ImproperlyConfigured(f"{masked!r} has an invalid port") from None
        sentinels.append((parts.hostname or "localhost", port))
        given: dict[str, Any] = {}
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ImproperlyConfigured(
                    f"{masked!r}: the path must be a database number, not {path!r}")
            given["db"] = int(path)
        if parts.username:
            given["username"] = unquote(parts.username)
        if parts.password is not None and parts.password != "":
            given["password"] = unquote(parts.password)
        for key, value in given.items():
            if found.setdefault(key, value) != value:
                raise ImproperlyConfigured(
                    f"the URLs of a sentinel list give different {key}s ({masked!r}); the "
                    "database and credentials are the master's, so give them once")
    return SentinelURL(tuple(sentinels), found.get("db", 0), found.get("username"),
                       found.get("password"))


class _SentinelMaster:
    """Builds, per process, a pool whose connections go to the master the sentinels
    name; each new connection asks them again, so a promoted replica is found."""

    def __init__(self, url: SentinelURL, options: dict[str, Any], feature: str,
                 setting: str) -> None:
        self.url = url
        self.master_name = options.get("master_name")
        if not self.master_name or not isinstance(self.master_name, str):
            raise ImproperlyConfigured(
                f"{feature} is given Redis sentinels but {setting} has no 'master_name': "
                f"set {setting} = {{'master_name': '<name>'}}, the name the sentinels "
                "monitor (their 'sentinel monitor <name> ...' line)")
        self.sentinel_kwargs = options.get("sentinel_kwargs")
        if self.sentinel_kwargs is not None and not isinstance(self.sentinel_kwargs, dict):
            raise ImproperlyConfigured(
                f"{setting}['sentinel_kwargs'] must be a dict of connection arguments for "
                f"the sentinels, not {type(self.sentinel_kwargs).__name__}")
        try:
            self.min_other_sentinels = int(options.get("min_other_sentinels") or 0)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(
                f"{setting}['min_other_sentinels'] must be a number") from None

    def pool(self, redis: Any, kwargs: dict[str, Any]) -> Any:
        from redis.sentinel import Sentinel

        kwargs = dict(kwargs, db=self.url.db)
        # The URL's credentials win over the options', as with a redis:// URL.
        for key in ("username", "password"):
            if getattr(self.url, key) is not None:
                kwargs[key] = getattr(self.url, key)
        kwargs["connection_class"] = _sentinel_connection_class(bool(kwargs.pop("ssl", False)))
        sentinel = Sentinel(list(self.url.sentinels),
                            min_other_sentinels=self.min_other_sentinels,
                            sentinel_kwargs=self.sentinel_kwargs, **kwargs)
        return sentinel.master_for(self.master_name, redis_class=redis.Redis).connection_pool


_SENTINEL_CONNECTIONS: dict[bool, type] = {}


def _sentinel_connection_class(tls: bool) -> type:
    """redis-py's sentinel-managed connection class (TLS or not), made to ask the
    sentinels again on a NOREPLICAS error as well as on READONLY.

    A master the sentinels replaced while it stayed up (a switch-over, a network split)
    goes on answering until they demote it, which can take seconds. With
    ``min-replicas-to-write`` it refuses writes with NOREPLICAS meanwhile; a connection
    that kept using it would keep failing there, and a consumer whose heartbeat goes
    nowhere for that long is taken for dead on the new master. As a connection error,
    the command is retried on a fresh connection, to wherever the sentinels point now.
    """
    cls = _SENTINEL_CONNECTIONS.get(tls)
    if cls is not None:
        return cls
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection

    class MasterConnection(base):  # type: ignore[misc, valid-type]
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except ResponseError as exc:
                if not str(exc).startswith("NOREPLICAS"):
                    raise
                self.disconnect()
                raise RedisConnectionError(
                    f"the master refuses writes, having no replica in reach ({exc}); "
                    "asking the sentinels again") from exc

    MasterConnection.__qualname__ = f"Celeriac{base.__name__}"
    with process_lock():
        return _SENTINEL_CONNECTIONS.setdefault(tls, MasterConnection)


class RedisConnector:
    """Hands out one redis-py client per process for a URL.

    Args:
        url: ``redis://``, ``rediss://`` or ``redis+socket://`` URL, a fail-over list
            of ``redis://`` or ``rediss://`` URLs (a list, or one string with ``;``
            between them), or a list of ``sentinel://`` URLs.
        options: transport options; the keys in ``POOL_OPTIONS`` reach the pool, and
            ``ssl``, ``failover_strategy`` and the sentinel options are read as the
            module docstring says.
        feature: what needs Redis, for the missing-dependency message.
        setting: where ``options`` come from, for the messages about them.

    Raises:
        ImproperlyConfigured: a malformed URL, a fail-over list whose URLs differ in
            more than their server, database and credentials, or sentinels without a
            ``master_name``.
    """

    def __init__(self, url: str | Sequence[str], options: dict[str, Any] | None,
                 feature: str, setting: str = "broker_transport_options") -> None:
        self.redis = import_redis(feature)
        options = options or {}
        urls = split_failover(url)
        if not urls:
            raise ImproperlyConfigured(f"no Redis URL given to {feature}")
        self._sentinel: _SentinelMaster | None = None
        if is_sentinel_url(urls):
            self._sentinel = _SentinelMaster(parse_sentinel_url(urls), options, feature,
                                             setting)
        else:
            urls = [redis_py_url(u) for u in urls]
        tls: dict[str, Any] = {}
        ssl = options.get("ssl")
        if ssl is not None and ssl is not False:
            converted = [ssl_pool_kwargs(u, ssl) for u in urls]
            urls = [u for u, _ in converted]
            tls = converted[0][1]
            if self._sentinel is not None:
                tls["ssl"] = True  # how redis-py's sentinel pool is told to use TLS
        #: the URLs connected to, in redis-py's spelling (more than one: fail-over)
        self.urls = urls
        self.url = urls[0]
        self.pool_kwargs: dict[str, Any] = {k: options[k] for k in POOL_OPTIONS if k in options}
        self.pool_kwargs.update(tls)
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
        self._failover: _Failover | None = None
        if len(urls) > 1 and self._sentinel is None:
            self._failover = self._failover_for(urls, options.get("failover_strategy"))
        # Fail on a malformed URL now rather than at the first command.
        self._new_pool()

    def _failover_for(self, urls: list[str], strategy: Any) -> _Failover:
        from redis.connection import parse_url

        schemes = {urlsplit(u).scheme.lower() for u in urls}
        if not schemes <= {"redis", "rediss"} or len(schemes) > 1:
            raise ImproperlyConfigured(
                "the URLs of a Redis fail-over list must all be redis:// or all "
                f"rediss:// (unix sockets cannot fail over): {mask_password(';'.join(urls))}")
        parsed = [parse_url(u) for u in urls]
        common = {k: v for k, v in parsed[0].items() if k not in _PER_SERVER}
        for u, kwargs in zip(urls[1:], parsed[1:]):
            other = {k: v for k, v in kwargs.items() if k not in _PER_SERVER}
            if other != common:
                raise ImproperlyConfigured(
                    "the URLs of a Redis fail-over list may differ only in host, port, "
                    f"database and credentials; {mask_password(u)!r} has other query "
                    f"options than {mask_password(urls[0])!r}")
        targets = [{"host": kw.get("host", "localhost"), "port": int(kw.get("port", 6379)),
                    "db": int(kw.get("db", 0) or 0), "username": kw.get("username"),
                    "password": kw.get("password")} for kw in parsed]
        return _Failover(urls, targets, failover_strategy(strategy))

    def _new_pool(self, **extra: Any) -> Any:
        if self._sentinel is not None:
            return self._sentinel.pool(self.redis, {**self.pool_kwargs, **extra})
        failover = self._failover
        if failover is None:
            return self.redis.ConnectionPool.from_url(self.url, **self.pool_kwargs, **extra)
        from redis.connection import parse_url

        kwargs = {**self.pool_kwargs, **extra, **parse_url(self.url)}
        base = kwargs.pop("connection_class", self.redis.Connection)
        kwargs["connection_class"] = _failover_connection_class(base, failover)
        return self.redis.ConnectionPool(**kwargs)

    @property
    def current_url(self) -> str:
        """The URL connections go to now (the one a fail-over list has moved on to)."""
        failover = self._failover
        return self.url if failover is None else failover.urls[failover.current]

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
                pool = self._new_pool(decode_responses=False)
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
