"""A consumer as remote control sees it: what it holds, in Celery's shapes, and the
runtime changes it takes (rate and time limits, queues, task events).

Called from a reporter thread (prefork) or the mailbox thread (thread pools) while the
consumer works, so everything here copies before it reads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .. import messages

if TYPE_CHECKING:
    from ..brokers import Delivery
    from ..messages import TaskMessage
    from .consumer import Consumer


def request_info(msg: TaskMessage, delivery: Delivery, hostname: str,
                 started: float | None, acknowledged: bool,
                 pid: int | None = None) -> dict[str, Any]:
    """Celery's ``Request.info()``: what ``inspect active``/``reserved`` list."""
    headers = msg.headers
    return {
        "id": msg.id,
        "name": msg.name,
        "args": msg.args,
        "kwargs": msg.kwargs,
        "type": msg.name,
        "hostname": hostname,
        "time_start": started,
        "acknowledged": acknowledged,
        "delivery_info": {"exchange": "", "routing_key": delivery.queue,
                          "priority": msg.properties.get("priority") or 0,
                          "redelivered": bool(headers.get("redelivered"))},
        "worker_pid": pid if started is not None else None,
    }


def _decoded(consumer: Consumer, delivery: Delivery) -> TaskMessage | None:
    try:
        return messages.decode_task(messages.decode_envelope(delivery.payload),
                                    consumer.accept)
    except Exception:  # noqa: BLE001 - a malformed message is set aside, not inspected
        return None


def consumer_report(consumer: Consumer) -> dict[str, Any]:
    """What the consumer holds now, and what it finished, by task name."""
    pid = os.getpid()
    host = consumer.hostname
    active = []
    for msg, delivery, started, acked in list(consumer.running.values()):
        active.append(request_info(msg, delivery, host, started, acked, pid))
    with consumer._pending_lock:
        pending = list(consumer._pending)
    # and what a push transport (RabbitMQ) delivered to it that it has not fetched yet
    pending += consumer.broker.prefetched()
    reserved = []
    for delivery in pending:
        decoded = _decoded(consumer, delivery)
        if decoded is not None:
            reserved.append(request_info(decoded, delivery, host, None, False))
    scheduled = []
    for start, _, delivery in sorted(list(consumer._waiting)):
        decoded = _decoded(consumer, delivery)
        if decoded is not None:
            scheduled.append({"eta": _iso(start),
                              "priority": decoded.properties.get("priority") or 0,
                              "request": request_info(decoded, delivery, host, None, False)})
    return {"active": active, "reserved": reserved, "scheduled": scheduled,
            "total": dict(consumer.totals), "queues": list(consumer.queues), "pid": pid}


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def apply_orders(consumer: Consumer, orders: dict[str, Any]) -> None:
    """Make a consumer (in a pool process) follow runtime changes made by remote control.

    ``orders`` holds the latest value of each: ``rate_limits`` {task: rate or None},
    ``time_limits`` {task: [soft, hard]}, ``queues`` [names], ``events`` bool.
    """
    tasks = consumer.app.tasks
    for name, rate in (orders.get("rate_limits") or {}).items():
        task = tasks.get(name)
        if task is not None and task.rate_limit != rate:
            task.rate_limit = rate
            consumer.rates_changed = True
    for name, (soft, hard) in (orders.get("time_limits") or {}).items():
        task = tasks.get(name)
        if task is not None:
            task.soft_time_limit, task.time_limit = soft, hard
    queues = orders.get("queues")
    if queues:
        consumer.queues = list(queues)
    events = orders.get("events")
    dispatcher = getattr(consumer, "events", None)
    if events is not None and dispatcher is not None:
        dispatcher.enabled = bool(events)
