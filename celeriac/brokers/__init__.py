"""Broker transports, chosen by URL scheme.

The scheme is the only string; each maps to a loader so that a transport's optional
dependency is imported only when a URL asks for it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..exceptions import UnknownTransport
from ..utils.urls import scheme_of
from .base import (
    Broker,
    DeadLetter,
    DeadLetters,
    DelayedDelivery,
    Delivery,
    Fanout,
    Listener,
    Liveness,
    Notice,
    Outgoing,
    QueueCounts,
    QueueStats,
    RateReservations,
    Redeliveries,
    Released,
    RevocationStore,
    capability,
    require,
)


def _memory() -> type[Broker]:
    from .memory import MemoryBroker

    return MemoryBroker


def _sqlite() -> type[Broker]:
    from .sqlite import SQLiteBroker

    return SQLiteBroker


def _redis() -> type[Broker]:
    from .redis import RedisBroker

    return RedisBroker


def _amqp() -> type[Broker]:
    from .amqp import AMQPBroker

    return AMQPBroker


def _sql() -> type[Broker]:
    from .sql import SQLBroker

    return SQLBroker


TRANSPORTS: dict[str, Callable[[], type[Broker]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "sqla+sqlite": _sqlite,
    # a PostgreSQL or MySQL/MariaDB database: sqla+postgresql://, sqla+mysql+pymysql://...
    # (any other scheme starting "sqla+")
    "sqla": _sql,
    "redis": _redis,
    "rediss": _redis,
    "redis+socket": _redis,
    "sentinel": _redis,
    "amqp": _amqp,
    "pyamqp": _amqp,
    "amqps": _amqp,
    "pyamqps": _amqp,
}


def broker_class(url: str) -> type[Broker]:
    scheme = scheme_of(url)
    if scheme.startswith("sqla+") and scheme not in TRANSPORTS:
        scheme = "sqla"
    try:
        loader = TRANSPORTS[scheme]
    except KeyError:
        raise UnknownTransport("broker", scheme, list(TRANSPORTS)) from None
    return loader()


def connect(url: str, options: dict[str, Any] | None = None) -> Broker:
    """Open a broker for ``url``.

    Raises:
        UnknownTransport: the scheme is not one of ``TRANSPORTS``.
        MissingDependency: the transport's extra is not installed.
    """
    return broker_class(url)(url, options)


__all__ = ["Broker", "Delivery", "DeadLetter", "Outgoing", "Released", "DelayedDelivery",
           "DeadLetters", "Liveness", "RevocationStore", "RateReservations", "Redeliveries",
           "QueueCounts", "QueueStats", "Fanout", "Listener", "Notice", "capability",
           "require", "TRANSPORTS", "connect", "broker_class"]
