"""``memory://``: queues inside one process, for tests and single-process apps.

It is a real transport with the same ack/requeue/liveness contract as the others, so a
test that passes here exercises the worker's real paths.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

from .base import (DeadLetter, Delivery, FullBroker, Listener, Notice, QueueCounts, Released,
                   nothing_to_wait_for, poison_reason, topic_matches)


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, deque[str]] = {}
        self.delayed: list[tuple[float, int, str, str]] = []
        self.unacked: dict[str, dict[int, Delivery]] = {}
        self.started: dict[str, dict[int, Delivery]] = {}  # early-acked, running
        self.heartbeats: dict[str, float] = {}
        self.last_beat = 0.0  # when any consumer last beat (the outage fence)
        self.dead: list[DeadLetter] = []
        self.losses: dict[str, int] = {}  # payload -> times its consumer was lost
        self.revoked: dict[str, tuple[float, str | None]] = {}  # id -> (expires at, signal)
        self.revoked_version = 0
        self.rates: dict[str, float] = {}  # global rate limit key -> next free start
        self.counter = itertools.count()
        # (sequence number, exchange, notice): what listeners read after their start;
        # bounded, as a slow listener must not grow the process without end
        self.notices: deque[tuple[int, str, Notice]] = deque(maxlen=10000)
        self.notice_seq = 0


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store_for(url: str) -> _Store:
    with _stores_lock:
        return _stores.setdefault(url.split("?", 1)[0], _Store())


class MemoryBroker(FullBroker):
    shared_between_processes = False

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self._s = _store_for(url)

    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        s = self._s
        with s.cond:
            if eta is not None and eta > time.time():
                heapq.heappush(s.delayed, (eta, next(s.counter), queue, payload))
            else:
                s.queues.setdefault(queue, deque()).appendleft(payload)
            s.cond.notify_all()

    def _promote(self, now: float) -> None:
        s = self._s
        while s.delayed and s.delayed[0][0] <= now:
            _, _, queue, payload = heapq.heappop(s.delayed)
            s.queues.setdefault(queue, deque()).appendleft(payload)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        s = self._s
        deadline = time.monotonic() + timeout
        with s.cond:
            while True:
                self._promote(time.time())
                out: list[Delivery] = []
                mine = s.unacked.setdefault(self.consumer_id, {})
                for name in queues:
                    q = s.queues.get(name)
                    while q and len(out) < limit:
                        d = Delivery(next(s.counter), name, q.pop())
                        mine[d.tag] = d
                        out.append(d)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                wait = remaining
                if s.delayed:
                    wait = min(wait, max(0.0, s.delayed[0][0] - time.time()))
                s.cond.wait(wait)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        s = self._s
        with s.cond:
            mine = s.unacked.get(self.consumer_id, {})
            for d in deliveries:
                mine.pop(d.tag, None)

    def ack_started(self, deliveries: Sequence[Delivery]) -> Callable[[], None]:
        s = self._s
        with s.cond:
            mine = s.unacked.get(self.consumer_id, {})
            notes = s.started.setdefault(self.consumer_id, {})
            for d in deliveries:
                if mine.pop(d.tag, None) is not None:
                    notes[d.tag] = d
        return nothing_to_wait_for

    def finished(self, deliveries: Sequence[Delivery]) -> None:
        with self._s.cond:
            notes = self._s.started.get(self.consumer_id, {})
            for d in deliveries:
                notes.pop(d.tag, None)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        s = self._s
        with s.cond:
            mine = s.unacked.get(self.consumer_id, {})
            notes = s.started.get(self.consumer_id, {})  # see Broker.requeue
            for d in reversed(deliveries):
                if mine.pop(d.tag, None) is not None or notes.pop(d.tag, None) is not None:
                    s.queues.setdefault(d.queue, deque()).append(d.payload)
            s.cond.notify_all()

    def defer(self, delivery: Delivery, eta: float) -> None:
        s = self._s
        with s.cond:
            # Only a message this consumer still owns: if it was declared lost, the
            # message is back in the queue (or with another consumer) already.
            if s.unacked.get(self.consumer_id, {}).pop(delivery.tag, None) is None:
                return
            heapq.heappush(s.delayed, (eta, next(s.counter), delivery.queue, delivery.payload))
            s.cond.notify_all()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        s = self._s
        with s.cond:
            if s.unacked.get(self.consumer_id, {}).pop(delivery.tag, None) is None:
                return  # not ours any more (see defer)
            s.dead.append(DeadLetter(delivery.queue, reason, delivery.payload, time.time(),
                                     str(next(s.counter))))

    def heartbeat(self, consumer_ids: Sequence[str] | None = None) -> Released:
        s = self._s
        now = time.time()
        with s.cond:
            silent_since, s.last_beat = s.last_beat, now
            for consumer_id in consumer_ids or (self.consumer_id,):
                s.heartbeats[consumer_id] = now
            if silent_since and now - silent_since > self.lost_timeout / 2:
                for consumer_id in s.heartbeats:
                    s.heartbeats[consumer_id] = now
                return Released()
            dead = [c for c, t in s.heartbeats.items() if now - t > self.lost_timeout]
            released = Released()
            for consumer_id in dead:
                owned = s.unacked.get(consumer_id, {})
                oldest = [min(owned)] if owned else []
                released.add(self._release(consumer_id, oldest, ()))
            return released

    def forget_consumer(self, consumer_id: str | None = None, lost: Sequence[Any] = (),
                        drop: Sequence[Any] = ()) -> Released:
        with self._s.cond:
            return self._release(consumer_id or self.consumer_id, lost, drop)

    def _release(self, consumer_id: str, lost: Sequence[Any], drop: Sequence[Any]) -> Released:
        s = self._s
        s.heartbeats.pop(consumer_id, None)
        owned = s.unacked.pop(consumer_id, {})
        released = Released()
        for tag, d in sorted(s.started.pop(consumer_id, {}).items()):
            if tag not in drop:
                released.interrupted.append(d.payload)
        for d in sorted(owned.values(), key=lambda d: d.tag, reverse=True):
            if d.tag in drop:
                continue
            if d.tag in lost:
                losses = s.losses[d.payload] = s.losses.get(d.payload, 0) + 1
                if losses >= self.max_redeliveries:
                    dead = DeadLetter(d.queue, poison_reason(losses), d.payload, time.time(),
                                      str(next(s.counter)))
                    s.dead.append(dead)
                    released.poisoned.append(dead)
                    continue
            s.queues.setdefault(d.queue, deque()).append(d.payload)
            released.returned += 1
        s.cond.notify_all()
        return released

    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        s = self._s
        now = time.time()
        with s.cond:
            for task_id, (until, _) in list(s.revoked.items()):
                if until < now:
                    del s.revoked[task_id]
            for task_id in task_ids:
                s.revoked[task_id] = (now + expires, terminate)
            s.revoked_version += 1

    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        s = self._s
        with s.cond:
            if since == s.revoked_version:
                return since, None
            return s.revoked_version, {k: sig for k, (_, sig) in s.revoked.items()}

    def reserve_rate(self, key: str, interval: float) -> float:
        s = self._s
        with s.cond:
            now = time.time()
            start = max(now, s.rates.get(key, now))
            s.rates[key] = start + interval
            return start

    def purge(self, queue: str) -> int:
        s = self._s
        with s.cond:
            q = s.queues.pop(queue, deque())
            # Delayed (eta) messages wait on the queue too: size() counts them, and
            # leaving them would make purged work reappear when it comes due.
            kept = [d for d in s.delayed if d[2] != queue]
            dropped = len(s.delayed) - len(kept)
            if dropped:
                heapq.heapify(kept)
                s.delayed = kept
            return len(q) + dropped

    def size(self, queue: str) -> int:
        s = self._s
        with s.cond:
            return len(s.queues.get(queue, ())) + sum(1 for d in s.delayed if d[2] == queue)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._s.cond:
            return list(reversed(self._s.dead[-limit:]))

    def _take_dead(self, id: str) -> DeadLetter | None:
        s = self._s
        for i, dead in enumerate(s.dead):
            if dead.id == id:
                return s.dead.pop(i)
        return None

    def requeue_dead_letter(self, id: str) -> bool:
        s = self._s
        with s.cond:
            dead = self._take_dead(id)
            if dead is None:
                return False
            s.queues.setdefault(dead.queue, deque()).appendleft(dead.payload)
            s.cond.notify_all()
            return True

    def delete_dead_letter(self, id: str) -> bool:
        with self._s.cond:
            return self._take_dead(id) is not None

    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        s = self._s
        with s.cond:
            return [QueueCounts(
                name, len(s.queues.get(name, ())),
                delayed=sum(1 for d in s.delayed if d[2] == name),
                unacked=sum(1 for held in s.unacked.values() for d in held.values()
                            if d.queue == name))
                for name in queues]

    # -- fanout: events and remote control ---------------------------------------------
    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        s = self._s
        with s.cond:
            for notice in notices:
                s.notice_seq += 1
                s.notices.append((s.notice_seq, exchange, notice))
            s.cond.notify_all()

    # a reply queue is a listener bound with its routing key
    reply = broadcast

    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        return _MemoryListener(self._s, exchange, patterns)

    def replies(self, exchange: str, routing_key: str) -> Listener:
        return _MemoryListener(self._s, exchange, [routing_key])


class _MemoryListener(Listener):
    def __init__(self, store: _Store, exchange: str, patterns: Sequence[str]) -> None:
        self.store = store
        self.exchange = exchange
        self.patterns = list(patterns)
        with store.cond:
            self.seen = store.notice_seq

    def get(self, timeout: float) -> list[Notice]:
        s = self.store
        deadline = time.monotonic() + timeout
        with s.cond:
            while True:
                found = [n for seq, exchange, n in s.notices
                         if seq > self.seen and exchange == self.exchange
                         and any(topic_matches(p, n.routing_key) for p in self.patterns)]
                self.seen = s.notice_seq
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                s.cond.wait(remaining)

    def close(self) -> None:
        pass

