"""Remote control: ``app.control`` and ``app.control.inspect()``, on Celery's wire.

Requests go to every worker through the broker's fanout exchange (``celery.pidbox``),
replies come back to a reply queue made for the request; so a celeriac client talks
to Celery workers and Celery's client to celeriac workers.

Revocations are also kept in the broker, so they survive worker restarts and reach
workers started later (Celery keeps them in each worker's memory, or a ``--statedb``
file per worker); the broadcast carries them to Celery workers in a mixed fleet.
"""

from __future__ import annotations

import signal as signals_module
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..brokers import Fanout, RevocationStore, require
from .pidbox import Request, new_ticket, reply_exchange, request_exchange

if TYPE_CHECKING:
    from ..app import Celery


class Control:
    """What ``app.control`` offers (Celery's ``celery.app.control.Control``)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    # -- the transport ------------------------------------------------------------------
    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Sequence[str] | str | None = None, connection: Any = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[dict[str, Any]], Any] | None = None,
                  channel: Any = None, pattern: str | None = None,
                  matcher: str | None = None, **extra: Any) -> list[dict[str, Any]] | None:
        """Send ``command`` to the workers; with ``reply``, gather their answers.

        Args:
            destination: node names that should run it (default: every worker).
            timeout: seconds to wait for replies.
            limit: stop waiting after this many replies (default: one per
                ``destination`` when given).
            callback: called with each reply as it arrives.
            pattern, matcher: select nodes by a ``glob`` (default) or ``pcre`` pattern.

        Returns:
            With ``reply``: the replies, ``[{node name: answer}, ...]``, in arrival
            order (empty when no worker answered). Without: None.
        """
        if isinstance(destination, str):
            destination = [destination]
        conf = self.app.conf
        fanout = require(self.app.producer_broker(), Fanout, "send remote-control commands")
        args = dict(arguments or {}, **extra)
        request = Request(command, args, list(destination) if destination else None,
                          pattern, matcher, expires=time.time() + timeout)
        if not reply:
            fanout.broadcast(request_exchange(conf),
                             [request.to_notice(self.app.clock.forward())])
            return None
        request.ticket = new_ticket()
        exchange = reply_exchange(conf)
        request.reply_to = {"exchange": exchange, "routing_key": new_ticket()}
        if limit is None and destination:
            limit = len(destination)
        # The reply queue exists before the request leaves, so no answer can be early.
        replies = fanout.replies(exchange, request.reply_to["routing_key"])
        try:
            fanout.broadcast(request_exchange(conf),
                             [request.to_notice(self.app.clock.forward())])
            return self._gather(replies, request.ticket, timeout, limit, callback,
                                self.app.clock)
        finally:
            replies.close()

    @staticmethod
    def _gather(replies: Any, ticket: str, timeout: float, limit: int | None,
                callback: Callable[[dict[str, Any]], Any] | None,
                clock: Any) -> list[dict[str, Any]]:
        import json

        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while limit is None or len(found) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for notice in replies.get(min(remaining, 0.25)):
                if notice.headers.get("ticket") != ticket:
                    continue
                if isinstance(notice.headers.get("clock"), int):
                    clock.adjust(notice.headers["clock"])
                try:
                    answer = json.loads(notice.body)
                except ValueError:
                    continue
                if not isinstance(answer, dict):
                    continue
                found.append(answer)
                if callback is not None:
                    callback(answer)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def inspect(self, destination: Sequence[str] | str | None = None, timeout: float = 1.0,
                callback: Callable[[dict[str, Any]], Any] | None = None,
                connection: Any = None, app: Any = None, limit: int | None = None,
                pattern: str | None = None, matcher: str | None = None) -> Inspect:
        """Ask the workers what they are doing: ``app.control.inspect().active()``."""
        return Inspect(self, destination, timeout, callback, limit, pattern, matcher)

    # -- commands -----------------------------------------------------------------------
    def ping(self, destination: Sequence[str] | str | None = None, timeout: float = 1.0,
             **kwargs: Any) -> list[dict[str, Any]]:
        """``[{node: {'ok': 'pong'}}, ...]`` from the workers that answered in time."""
        return self.broadcast("ping", reply=True, destination=destination, timeout=timeout,
                              **kwargs) or []

    def revoke(self, task_id: str | Iterable[str], destination: Any = None,
               terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any) -> Any:
        """Revoke tasks: a queued or scheduled one will not run; with ``terminate`` a
        running one is stopped (prefork pool) with ``signal``.

        Revocations are kept in the broker for ``worker_revoke_expires`` seconds
        (default 3 hours), and broadcast to the workers running now (Celery's too).
        """
        ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]
        if not ids:
            return None
        expires = float(self.app.conf.worker_revoke_expires or 10800)
        signame = signal_name(signal) if terminate else None
        store = require(self.app.producer_broker(), RevocationStore, "keep revocations")
        store.revoke(ids, signame, expires)
        return self.broadcast("revoke", {"task_id": ids, "terminate": terminate,
                                         "signal": signame or signal_name(signal)},
                              destination=destination, **kwargs)

    def terminate(self, task_id: str | Iterable[str], destination: Any = None,
                  signal: str | int = "SIGTERM", **kwargs: Any) -> Any:
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str | int | float | None,
                   destination: Any = None, **kwargs: Any) -> Any:
        """Set a task's rate limit (``'10/m'``) in the workers, while they run."""
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination=destination, **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft,
                                             "hard": hard},
                              destination=destination, **kwargs)

    def shutdown(self, destination: Any = None, **kwargs: Any) -> Any:
        """Warm shutdown of the workers: running tasks finish, the rest go back."""
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def pool_grow(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_grow", {"n": n}, destination=destination, **kwargs)

    def pool_shrink(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_shrink", {"n": n}, destination=destination, **kwargs)

    def autoscale(self, max: int, min: int, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("autoscale", {"max": max, "min": min},
                              destination=destination, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: dict[str, Any] | None = None, destination: Any = None,
                     **kwargs: Any) -> Any:
        return self.broadcast("add_consumer", {"queue": queue, "exchange": exchange,
                                               "exchange_type": exchange_type,
                                               "routing_key": routing_key, **(options or {})},
                              destination=destination, **kwargs)

    def cancel_consumer(self, queue: str, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination=destination,
                              **kwargs)

    def enable_events(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def heartbeat(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("heartbeat", destination=destination, **kwargs)

    def purge(self, connection: Any = None) -> int:
        """Delete every waiting message of the app's default queue; returns how many."""
        return int(self.app.producer_broker().purge(self.app.conf.task_default_queue))


class Inspect:
    """``app.control.inspect()``: each method returns ``{node: answer}``, or None when
    no worker answered in time (as Celery's)."""

    def __init__(self, control: Control, destination: Sequence[str] | str | None,
                 timeout: float, callback: Callable[[dict[str, Any]], Any] | None,
                 limit: int | None, pattern: str | None, matcher: str | None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            command, arguments, destination=self.destination, reply=True,
            timeout=self.timeout, limit=self.limit, callback=self.callback,
            pattern=self.pattern, matcher=self.matcher) or []
        by_node: dict[str, Any] = {}
        for answer in replies:
            by_node.update(answer)
        if not by_node:
            return None
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def ping(self, destination: Any = None) -> dict[str, Any] | None:
        return self._request("ping")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("scheduled")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> dict[str, Any] | None:
        return self._request("report")

    def clock(self) -> dict[str, Any] | None:
        return self._request("clock")

    def query_task(self, *ids: str | Iterable[str]) -> dict[str, Any] | None:
        flat: list[str] = []
        for item in ids:
            flat.extend([item] if isinstance(item, str) else list(item))
        return self._request("query_task", ids=flat)


def signal_name(value: str | int) -> str:
    """``9``, ``'KILL'`` or ``'SIGKILL'`` -> ``'SIGKILL'``; unknown names are an error."""
    if isinstance(value, int):
        return signals_module.Signals(value).name
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signals_module.Signals.__members__:
        raise ValueError(f"unknown signal {value!r}")
    return name
