"""AMQP URLs to py-amqp connections: shared by the RabbitMQ broker, the rpc:// result
backend and the beat leader lock.

The client library is py-amqp (kombu's own), chosen by measurement and by how it fails.
On this machine's RabbitMQ 3.10, 10,000 small task messages: py-amqp published 12,500/s
with publisher confirms collected in batches and consumed 15,000-17,000/s; pika's
``BlockingConnection`` consumed as fast (16,800/s) but confirms every publish on its own
(1,500/s), since it cannot have several unconfirmed at once. On a lost connection both
raise at the next call (py-amqp: ``ConnectionError``/``OSError``); py-amqp also leaves
heartbeats to the caller, so a busy consumer cannot be cut off by a heartbeat sent from
an event loop it starves. Celery shops already have it installed.

A URL is ``amqp://user:password@host:port/vhost`` (``pyamqp://`` the same, ``amqps://``
with TLS); ``//`` or no path is the default virtual host ``/``. Several URLs separated by
``;`` are a fail-over list, tried in ``broker_failover_strategy`` order.
"""

from __future__ import annotations

import ssl as _ssl
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

from ..exceptions import ImproperlyConfigured, MissingDependency
from .redis import failover_strategy, split_failover
from .urls import mask_password

SCHEMES = ("amqp", "pyamqp", "amqps", "pyamqps")
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671

def import_amqp(feature: str) -> Any:
    """Import py-amqp.

    Raises:
        MissingDependency: py-amqp is not installed (``celeriac[amqp]``).
    """
    try:
        import amqp
    except ImportError:
        raise MissingDependency("amqp", "amqp", feature) from None
    return amqp


@dataclass(frozen=True)
class Server:
    """Where one URL of a list points, and how to log in."""

    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    tls: bool
    query: dict[str, str]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> Server:
    """One AMQP URL's parts (kombu's defaults: guest/guest on localhost, vhost ``/``).

    Raises:
        ImproperlyConfigured: not an AMQP URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ImproperlyConfigured(f"{mask_password(url)!r} is not an amqp:// URL")
    tls = scheme.endswith("s")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    # kombu: "amqp://h//" and "amqp://h/" and "amqp://h" all mean the vhost "/"
    vhost = unquote(path) if path not in ("", "/") else "/"
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{mask_password(url)!r} has an invalid port") from None
    return Server(
        host=parts.hostname or "localhost",
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        virtual_host=vhost,
        tls=tls,
        query=dict(parse_qsl(parts.query)),
    )


def ssl_context(ssl_option: Any, server: Server) -> Any:
    """What py-amqp takes as ``ssl=``: False, True, or a dict of ``ssl`` options
    (``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs``, ``server_hostname`` ...) as
    ``broker_use_ssl`` gives them.

    py-amqp 5 makes the client context itself: ``True`` verifies the server against the
    system CAs, a dict against its ``ca_certs``; neither checks the host name unless
    ``server_hostname`` is given. As in kombu, ``server_hostname: None`` means the
    host of the URL being connected to (a fail-over list has several).

    Raises:
        ImproperlyConfigured: an ``SSLContext`` (py-amqp would ignore it and use its
            defaults) or anything else but a bool or a dict.
    """
    if not ssl_option and not server.tls:
        return False
    if isinstance(ssl_option, _ssl.SSLContext):
        raise ImproperlyConfigured(
            "broker_use_ssl cannot be an ssl.SSLContext: py-amqp ignores one and connects "
            "with its own defaults. Give a dict of ssl options (ca_certs, certfile, "
            "keyfile, cert_reqs, server_hostname)")
    if isinstance(ssl_option, dict):
        if not ssl_option:
            return True  # py-amqp takes an empty dict for "no TLS"
        if "server_hostname" in ssl_option and ssl_option["server_hostname"] is None:
            return {**ssl_option, "server_hostname": server.host}
        return ssl_option
    if ssl_option in (None, False, True):
        return True
    raise ImproperlyConfigured(
        "broker_use_ssl must be True or a dict of ssl options (ca_certs, certfile, "
        f"keyfile, cert_reqs), not {type(ssl_option).__name__}")


class Endpoints:
    """The URLs of a fail-over list, in the order ``broker_failover_strategy`` gives."""

    def __init__(self, url: str | list[str], strategy: Any = None) -> None:
        self.urls = split_failover(url)
        if not self.urls:
            raise ImproperlyConfigured("an empty amqp:// URL list")
        self.servers = [parse_url(u) for u in self.urls]
        self._order: Iterator[str] = failover_strategy(strategy)(list(self.urls))

    def attempts(self) -> list[tuple[str, Server]]:
        """One pass over the list, the next URL first."""
        by_url = dict(zip(self.urls, self.servers))
        return [(u, by_url[u]) for u in (next(self._order) for _ in self.urls)]


def connect(endpoints: Endpoints, options: dict[str, Any], feature: str,
            heartbeat: float = 0) -> tuple[Any, str]:
    """A connected py-amqp ``Connection`` to the first server of ``endpoints`` that
    answers, and its URL.

    Args:
        options: ``broker_transport_options`` plus ``socket_connect_timeout``,
            ``ssl``, ``login_method``, ``on_blocked``/``on_unblocked`` callbacks.
        heartbeat: seconds; the caller must call ``heartbeat_tick`` (see ``Ticker``).

    Raises:
        ConnectionError: none answered; the message names each server and its error.
    """
    amqp = import_amqp(feature)
    errors = []
    for url, server in endpoints.attempts():
        kwargs: dict[str, Any] = dict(
            host=server.address, userid=server.userid, password=server.password,
            virtual_host=server.virtual_host,
            ssl=ssl_context(options.get("ssl"), server),
            connect_timeout=float(options.get("connect_timeout")
                                  or options.get("socket_connect_timeout") or 4),
            heartbeat=int(heartbeat),
            client_properties={"product": "celeriac"},
            on_blocked=options.get("on_blocked"), on_unblocked=options.get("on_unblocked"),
        )
        if options.get("login_method"):
            kwargs["login_method"] = options["login_method"]
        if options.get("read_timeout"):
            kwargs["read_timeout"] = float(options["read_timeout"])
        if options.get("write_timeout"):
            kwargs["write_timeout"] = float(options["write_timeout"])
        conn = amqp.Connection(**kwargs)
        try:
            conn.connect()
        except Exception as exc:
            try:
                conn.collect()
            except Exception:
                pass
            errors.append(f"{mask_password(url)}: {describe(exc)}")
            continue
        return conn, url
    raise ConnectionError(f"cannot connect to RabbitMQ ({'; '.join(errors)})")


def describe(exc: BaseException) -> str:
    """A short text for an AMQP error: py-amqp's own reply text when it has one."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def is_connection_error(amqp: Any, exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (as opposed to one channel)."""
    return isinstance(exc, (OSError, amqp.exceptions.ConnectionError,
                            amqp.exceptions.RecoverableConnectionError,
                            amqp.exceptions.IrrecoverableConnectionError))
