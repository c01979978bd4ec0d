"""A fleet of fake Celery workers on Redis pub/sub: synthetic task events at a set rate.

    python bench/event_stream.py redis://127.0.0.1:PORT/0 --tasks 100000 --rate 5000
                                 [--workers 8] [--exchange celeryev] [--fail-every 20]

Nothing runs: each task is three events (task-received, task-started, task-succeeded or,
one in ``--fail-every``, task-failed with a traceback) told by one of ``--workers`` node
names, as a Celery 5 worker tells them (CELERY-WIRE.md §4.5 and §5): buffered per worker
and published as ``task.multi`` JSON lists on ``/<db>.<exchange>/task.multi`` in kombu's
envelope, at most 100 events a message, every buffer flushed each 0.1 s tick. Each worker
also sends worker-online at start and worker-heartbeat every 2 s. ``--rate`` counts task
events per second; 0 publishes flat out.

Progress goes to stdout as one JSON line each 0.5 s and a last one with ``"done": true``:
``tasks``, ``task_events`` and ``worker_events`` published so far, ``delivered`` (task
events times the subscribers each PUBLISH reached) and ``elapsed`` seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

TASK_NAMES = ("benchproj.add", "benchproj.resize_image", "benchproj.send_email",
              "benchproj.fetch_feed", "benchproj.build_report")
BUFFER_LIMIT = 100  # Celery's and celeriac's task-event buffer
TICK = 0.1          # their flush interval
HEARTBEAT = 2.0
TRACEBACK = ('Traceback (most recent call last):\n  File "/srv/app/benchproj.py", line 41, '
             'in fetch_feed\n    raise ValueError(f"feed {url} answered {status}")\n'
             "ValueError: feed https://example.org/feed.xml answered 503\n")


@dataclass
class FakeWorker:
    hostname: str
    pid: int
    clock: int = 0
    processed: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)

    def event(self, type: str, timestamp: float, **fields: Any) -> dict[str, Any]:
        self.clock += 1
        fields.update(type=type, hostname=self.hostname, pid=self.pid, clock=self.clock,
                      timestamp=timestamp, utcoffset=0)
        return fields

    def worker_event(self, type: str) -> dict[str, Any]:
        return self.event(type, time.time(), freq=HEARTBEAT, active=0,
                          processed=self.processed, loadavg=[0.5, 0.4, 0.3],
                          sw_ident="py-celery", sw_ver="5.7.0", sw_sys="Linux")


def envelope(exchange: str, routing_key: str, hostname: str, body: Any) -> str:
    """kombu's Redis envelope of an event message (CELERY-WIRE.md §2.2, §2.6)."""
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": hostname},
        "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                       "delivery_tag": str(uuid.uuid4())},
    })


class Fleet:
    """The fake workers and the publishing, counted."""

    def __init__(self, url: str, workers: int, exchange: str, fail_every: int) -> None:
        self.client = redis.Redis.from_url(url)
        db = self.client.connection_pool.connection_kwargs.get("db", 0) or 0
        self.base = f"/{db}.{exchange}"
        self.exchange = exchange
        self.fail_every = fail_every
        host = f"bench-{uuid.uuid4().hex[:6]}"
        self.workers = [FakeWorker(f"w{i}@{host}", 10_000 + i) for i in range(workers)]
        self.tasks = self.task_events = self.worker_events = 0
        #: task events times the subscribers PUBLISH said got them: a monitor that was
        #: not subscribed when a batch went out never had it
        self.delivered = 0
        self._pending: list[int] = []  # task events of each publish in the pipeline
        self.next_heartbeat = 0.0
        self.pipe = self.client.pipeline(transaction=False)
        self.random = random.Random(14)

    def add_task(self) -> None:
        n = self.tasks
        worker = self.workers[n % len(self.workers)]
        name = TASK_NAMES[n % len(TASK_NAMES)]
        task_id = str(uuid.uuid4())
        now = time.time()
        runtime = self.random.uniform(0.0005, 0.05)
        worker.buffer.append(worker.event(
            "task-received", now - runtime - 0.001, uuid=task_id, name=name,
            args=f"({n}, {n % 97})", kwargs="{'retries': 3}", root_id=task_id,
            parent_id=None, retries=0, eta=None, expires=None))
        worker.buffer.append(worker.event("task-started", now - runtime, uuid=task_id))
        if self.fail_every and n % self.fail_every == self.fail_every - 1:
            worker.buffer.append(worker.event(
                "task-failed", now, uuid=task_id,
                exception="ValueError('feed https://example.org/feed.xml answered 503')",
                traceback=TRACEBACK))
        else:
            worker.buffer.append(worker.event("task-succeeded", now, uuid=task_id,
                                              result=repr(n + n % 97), runtime=runtime))
        worker.processed += 1
        self.tasks += 1
        self.task_events += 3
        if len(worker.buffer) >= BUFFER_LIMIT:
            self._flush(worker)

    def _flush(self, worker: FakeWorker) -> None:
        if worker.buffer:
            self.pipe.publish(f"{self.base}/task.multi", envelope(
                self.exchange, "task.multi", worker.hostname, worker.buffer))
            self._pending.append(len(worker.buffer))
            worker.buffer = []

    def worker_group(self, type: str) -> None:
        key = type.replace("-", ".")
        for worker in self.workers:
            self.pipe.publish(f"{self.base}/{key}", envelope(
                self.exchange, key, worker.hostname, worker.worker_event(type)))
            self._pending.append(0)
            self.worker_events += 1

    def tick(self, now: float) -> None:
        """Flush every buffer (the flush interval passed) and send heartbeats when due."""
        for worker in self.workers:
            self._flush(worker)
        if now >= self.next_heartbeat:
            self.worker_group("worker-heartbeat" if self.next_heartbeat else "worker-online")
            self.next_heartbeat = now + HEARTBEAT
        receivers = self.pipe.execute()
        self.delivered += sum(n * r for n, r in zip(self._pending, receivers))
        self._pending = []


def publish(url: str, tasks: int, rate: float, workers: int = 8, exchange: str = "celeryev",
            fail_every: int = 20) -> dict[str, Any]:
    """Publish ``tasks`` tasks' events at ``rate`` task events/s (0: flat out)."""
    fleet = Fleet(url, workers, exchange, fail_every)
    started = time.perf_counter()
    next_report = started + 0.5

    def progress(done: bool = False) -> dict[str, Any]:
        out = {"tasks": fleet.tasks, "task_events": fleet.task_events,
               "worker_events": fleet.worker_events, "delivered": fleet.delivered,
               "elapsed": time.perf_counter() - started}
        if done:
            out["done"] = True
        print(json.dumps(out), flush=True)
        return out

    fleet.tick(time.time())
    while fleet.tasks < tasks:
        tick_start = time.perf_counter()
        if rate:
            # catch up to the schedule; a late tick publishes more, not later
            due = min(tasks, int(rate * (tick_start - started + TICK) / 3))
        else:
            due = min(tasks, fleet.tasks + BUFFER_LIMIT * len(fleet.workers) // 3)
        while fleet.tasks < due:
            fleet.add_task()
        fleet.tick(time.time())
        now = time.perf_counter()
        if now >= next_report:
            progress()
            next_report = now + 0.5
        if rate:
            time.sleep(max(0.0, tick_start + TICK - now))
    return progress(done=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="redis://host:port/db")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="task events per second; 0 for flat out")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--exchange", default="celeryev")
    parser.add_argument("--fail-every", type=int, default=20)
    args = parser.parse_args()
    publish(args.url, args.tasks, args.rate, args.workers, args.exchange, args.fail_every)


if __name__ == "__main__":
    main()
