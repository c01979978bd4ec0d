"""The worker's side of remote control: a service thread in the worker's main process
that listens on the control exchange, runs the commands meant for this node and
replies. It never stops the worker: a malformed or unknown request is logged (once a
minute at most) and, when it asked for a reply, answered with an error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..brokers import Fanout, Listener, RevocationStore, capability, require
from ..utils.outage import OutageLog
from ..utils.urls import mask_password
from . import commands
from .pidbox import (BadRequest, Request, parse_request, reply_exchange, reply_notice,
                     request_exchange)

if TYPE_CHECKING:
    from ..worker.main import Worker

logger = logging.getLogger("celeriac.worker")

#: seconds a listen waits for a request: bounds how late a stop is noticed
LISTEN_TIMEOUT = 0.5
#: the most requests handled at once (a flood is answered in turn, never piled up)
BATCH = 100


class Node:
    """What the commands see of a running worker, whatever its pool."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self.clock = worker.app.clock  # shared with this process's events
        self.started = time.monotonic()
        # runtime changes, for thread pools whose consumers share this process
        self._orders: dict[str, Any] = {}
        self._broker: Any = None

    @property
    def pool(self) -> Any:
        return self.worker.pool

    @property
    def queues(self) -> list[str]:
        return list(self.worker.queues)

    def broker(self) -> Any:
        if self._broker is None:
            self._broker = self.app.connect_broker()
        return self._broker

    # -- what consumers hold -------------------------------------------------------------
    def _reports(self) -> list[dict[str, Any]]:
        from ..worker.inspection import consumer_report

        pool = self.pool
        board = getattr(pool, "control_board", None)
        if board is not None:
            slots = sorted(slot for slot, _ in getattr(pool, "children", {}).values())
            reports = board.reports(slots)
            for slot in slots:  # a child too busy to answer: what its slot says
                if slot not in reports:
                    reports[slot] = self._from_slot(pool, slot)
            return [r for r in reports.values() if r]
        return [consumer_report(c) for c in list(getattr(pool, "consumers", []) or [])]

    def _from_slot(self, pool: Any, slot: int) -> dict[str, Any]:
        running = pool.slots[slot].read() if slot < len(pool.slots) else None
        pid = next((p for p, (s, _) in pool.children.items() if s == slot), None)
        active = []
        if running is not None:
            active.append({"id": running.task_id, "name": running.name, "args": None,
                           "kwargs": None, "type": running.name, "hostname": self.hostname,
                           "time_start": running.started,
                           "acknowledged": not running.acks_late, "delivery_info": {},
                           "worker_pid": pid})
        return {"active": active, "reserved": [], "scheduled": [], "total": {},
                "stale": True}

    def held(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"active": [], "reserved": [], "scheduled": []}
        for report in self._reports():
            for key in out:
                out[key].extend(report.get(key) or [])
        return out

    def totals(self, reports: list[dict[str, Any]]) -> dict[str, int]:
        total: dict[str, int] = {}
        for report in reports:
            for name, count in (report.get("total") or {}).items():
                total[name] = total.get(name, 0) + int(count)
        return total

    # -- changes -------------------------------------------------------------------------
    def change_orders(self, change: Callable[[dict[str, Any]], None]) -> None:
        from ..worker.inspection import apply_orders

        board = getattr(self.pool, "control_board", None)
        if board is not None:
            board.change_orders(change)
            return
        change(self._orders)
        for consumer in list(getattr(self.pool, "consumers", []) or []):
            apply_orders(consumer, self._orders)

    def set_queues(self, queues: list[str]) -> None:
        self.worker.queues = list(queues)
        self.change_orders(lambda o: o.__setitem__("queues", list(queues)))

    def revoke(self, ids: list[str], signame: str | None) -> None:
        store = require(self.broker(), RevocationStore, "keep revocations")
        store.revoke(ids, signame, float(self.app.conf.worker_revoke_expires or 10800))

    def revoked_ids(self) -> set[str]:
        store = capability(self.broker(), RevocationStore)
        if store is None:
            return set()
        _, revoked = store.revoked()
        return set(revoked or ())

    def shutdown(self, msg: str) -> None:
        logger.warning("%s", msg)
        self.worker.request_stop(msg)

    def resize(self, how: str, n: int) -> dict[str, str]:
        pool = self.pool
        fn = getattr(pool, how, None)
        if fn is None:
            return commands.error(f"the {self.worker.pool_name} pool cannot {how}")
        try:
            fn(n)
        except Exception as exc:  # noqa: BLE001 - the pool says why it cannot
            return commands.error(str(exc))
        return commands.ok(f"pool will {how}")

    def autoscale(self, max_: int | None, min_: int | None) -> dict[str, str]:
        fn = getattr(self.pool, "autoscale", None)
        if fn is None:
            return commands.error(f"the {self.worker.pool_name} pool cannot autoscale")
        try:
            new_max, new_min = fn(max_, min_)
        except Exception as exc:  # noqa: BLE001 - the pool says why it cannot
            return commands.error(str(exc))
        return commands.ok(f"autoscale now max={new_max} min={new_min}")

    def send_heartbeat(self) -> None:
        heart = getattr(self.worker, "heart", None)
        if heart is not None:
            heart.beat()

    def task_events(self, on: bool) -> None:
        """Task events on or off: in every consumer, and in this process (which records
        the ends of tasks lost with a pool process)."""
        self.change_orders(lambda o: o.__setitem__("events", on))
        events = getattr(self.worker, "events", None)
        if events is not None and events.groups is not None:
            if on:
                events.groups.add("task")
            else:
                events.groups.discard("task")
            events.enabled = bool(events.groups)

    # -- stats ------------------------------------------------------------------------------
    def queue_info(self, name: str) -> dict[str, Any]:
        declared = {getattr(q, "name", q): q for q in (self.app.conf.task_queues or ())}
        queue = declared.get(name)
        exchange = getattr(queue, "exchange_name", name) if queue is not None else name
        routing_key = getattr(queue, "key", name) if queue is not None else name
        return {"name": name,
                "exchange": {"name": exchange, "type": "direct", "arguments": None,
                             "durable": True, "passive": False, "auto_delete": False,
                             "delivery_mode": None, "no_declare": False},
                "routing_key": routing_key, "queue_arguments": None,
                "binding_arguments": None, "consumer_arguments": None,
                "durable": getattr(queue, "durable", True),
                "exclusive": getattr(queue, "exclusive", False),
                "auto_delete": getattr(queue, "auto_delete", False), "no_ack": False,
                "alias": None, "bindings": [], "no_declare": None, "expires": None,
                "message_ttl": None, "max_length": None, "max_length_bytes": None,
                "max_priority": getattr(queue, "max_priority", None)}

    def stats(self) -> dict[str, Any]:
        worker = self.worker
        pool = self.pool
        reports = self._reports()
        info_fn = getattr(pool, "info", None)
        pool_info = info_fn() if callable(info_fn) else {
            "implementation": f"celeriac.worker.pools:{type(pool).__name__}",
            "max-concurrency": worker.concurrency,
            "processes": sorted(getattr(pool, "children", {}) or []),
        }
        out: dict[str, Any] = {
            "total": self.totals(reports),
            "pid": os.getpid(),
            "clock": str(self.clock.value),
            "uptime": commands.uptime(self.started),
            "pool": pool_info,
            "broker": broker_info(self.app.broker_read_url),
            "prefetch_count": worker.prefetch * int(getattr(pool, "size", None)
                                                    or worker.concurrency),
            "rusage": commands.rusage(),
            "sw_ident": "py-celeriac",
        }
        scaler = getattr(pool, "autoscaler_info", None)
        if callable(scaler):
            info = scaler()
            if info:
                out["autoscaler"] = info
        return out


def broker_info(url: str) -> dict[str, Any]:
    """Celery's ``stats()['broker']``: where the worker's broker is (no password)."""
    from urllib.parse import urlsplit

    from ..utils.urls import scheme_of

    parts = urlsplit(url.split(";")[0])
    try:
        port = parts.port
    except ValueError:
        port = None
    return {"hostname": parts.hostname, "port": port, "transport": scheme_of(url),
            "virtual_host": parts.path.lstrip("/") or None, "userid": parts.username,
            "uri_prefix": None, "ssl": scheme_of(url) in ("rediss", "amqps"),
            "insist": False, "login_method": None, "heartbeat": None,
            "connect_timeout": None, "transport_options": {}, "alternates": [],
            "failover_strategy": "round-robin", "url": mask_password(url)}


class Mailbox:
    """The remote-control service (``worker_enable_remote_control``)."""

    name = "remote control"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.node = Node(worker)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.listener: Listener | None = None
        self.fanout: Fanout | None = None
        # The pool's supervisor, in the same process, tells a broker outage already.
        self.outage = OutageLog(logger, "broker (remote control)",
                                mask_password(worker.app.broker_read_url),
                                level=logging.DEBUG)
        self._complained = 0.0
        self.busy = threading.Lock()

    def start(self) -> None:
        conf = self.worker.app.conf
        self.fanout = capability(self.node.broker(), Fanout)
        if self.fanout is None:
            logger.warning("remote control is off: the broker %s has no fanout exchanges "
                           "(inspect and control will not see this worker)",
                           mask_password(self.worker.app.broker_read_url))
            return
        # Subscribed before the worker says it is ready, so no request is missed.
        self.listener = self.fanout.listen(request_exchange(conf), ["#"])
        from ..worker.forkgate import add_fork_gate

        add_fork_gate(self.busy)
        self.thread = threading.Thread(target=self._run, name="celeriac-remote-control",
                                       daemon=True)
        self.thread.start()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        from ..worker.forkgate import remove_fork_gate

        self.stopping.set()
        if self.thread is not None:
            self.thread.join(LISTEN_TIMEOUT * 4)
        remove_fork_gate(self.busy)
        if self.listener is not None:
            self.listener.close()
        if self.node._broker is not None:
            self.node._broker.close()

    def alive(self) -> bool:
        # Its thread ends only when asked; a dead one must not stop the worker.
        return True

    def _run(self) -> None:
        assert self.listener is not None
        while not self.stopping.is_set():
            try:
                notices = self.listener.get(LISTEN_TIMEOUT)
                self.outage.recovered()
            except Exception as exc:  # noqa: BLE001 - the broker comes back later
                self.outage.failed(exc)
                self.stopping.wait(1.0)
                continue
            with self.busy:  # a pool process is not forked while a command runs
                for notice in notices[:BATCH]:
                    try:
                        request = parse_request(notice)
                    except BadRequest as exc:
                        self._complain(f"ignored a malformed remote-control message: {exc}")
                        continue
                    self.handle(request)

    def handle(self, request: Request) -> None:
        node = self.node
        if not request.for_node(node.hostname) or request.expired():
            return
        if isinstance(request.clock, int):
            node.clock.adjust(request.clock)
        cmd = commands.COMMANDS.get(request.method)
        if cmd is None:
            self._complain(f"unknown remote-control command {request.method!r}")
            value: Any = commands.error(
                f"unknown command {request.method!r}; this worker knows: "
                f"{', '.join(sorted(commands.COMMANDS))}")
        else:
            try:
                value = cmd.run(node, **request.arguments)
            except TypeError as exc:
                value = commands.error(f"bad arguments for {request.method}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a command must not stop the worker
                logger.exception("remote-control command %s failed", request.method)
                value = commands.error(f"{type(exc).__name__}: {exc}")
            if not cmd.replies:
                return
        if value is None or not request.ticket or not request.reply_to:
            return
        try:
            assert self.fanout is not None
            exchange = request.reply_to.get("exchange") or reply_exchange(
                self.worker.app.conf)
            self.fanout.reply(exchange, [reply_notice(request, node.hostname, value,
                                                      node.clock.forward())])
        except Exception as exc:  # noqa: BLE001 - the requester times out instead
            logger.warning("could not reply to %s: %r", request.method, exc)

    def _complain(self, message: str) -> None:
        # A flood of bad requests must not flood the log.
        now = time.monotonic()
        if now - self._complained >= 60:
            self._complained = now
            logger.warning("%s", message)
        else:
            logger.debug("%s", message)
