"""``sqlite:///path``: the embedded broker; several processes on one machine share a file.

One table holds every message. A message fetched by a consumer is marked with the
consumer's id and stays in the table until acked, so a consumer that dies leaves its
messages where the next heartbeat of a live consumer can hand them back.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Callable, Sequence

from ..utils.sqlite import SQLiteFile, placeholders
from ..utils.urls import sqlite_path
from .base import (DeadLetter, Delivery, FullBroker, Listener, Notice, Outgoing, QueueCounts,
                   Released, counts_by_queue, nothing_to_wait_for, poison_reason, take_all,
                   topic_matches)

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL DEFAULT 0,
    consumer TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_messages_ready
    ON celeriac_messages (queue, consumer, priority, id);
CREATE INDEX IF NOT EXISTS celeriac_messages_consumer ON celeriac_messages (consumer);
CREATE TABLE IF NOT EXISTS celeriac_consumers (
    id TEXT PRIMARY KEY,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_clock (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_rates (
    key TEXT PRIMARY KEY,
    next_start REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_revoked (
    task_id TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    terminate TEXT
);
CREATE TABLE IF NOT EXISTS celeriac_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    time REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    time REAL NOT NULL,
    headers TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_notices_exchange ON celeriac_notices (exchange, id);
"""

_INSERT = "INSERT INTO celeriac_messages (queue, priority, due, payload) VALUES (?, ?, ?, ?)"

# ``due`` of a row whose task started with an early ack: the note that it runs.
STARTED = -1

# Without a server there is nothing to block on; an idle consumer polls, backing off
# from 2 ms to this ceiling so that an idle worker costs little and a new task waits
# at most this long.
MAX_POLL_INTERVAL = 0.05

# Events and control messages are kept this long for listeners to read, then deleted
# (there is no pub/sub in a file: a listener tails the table from where it started).
NOTICE_KEEP = 60.0
# Old notices are deleted at most this often, by whoever sends one.
NOTICE_SWEEP_INTERVAL = 5.0


class SQLiteBroker(FullBroker):
    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.path = sqlite_path(url)
        self.db = SQLiteFile(self.path, SCHEMA)
        # notes of ended early-acked tasks, dropped with the next write
        self._ended: deque[Any] = deque()
        self._next_sweep = 0.0

    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        self.db.connection().execute(_INSERT, (queue, priority or 0, eta or 0.0, payload))

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        # One transaction: one commit (and one WAL sync) for the lot instead of each.
        rows = [(m.queue, m.priority or 0, m.eta or 0.0, m.payload) for m in messages]
        self.db.write(lambda conn: conn.executemany(_INSERT, rows))

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        sql = (
            "UPDATE celeriac_messages SET consumer = ?, deliveries = deliveries + 1 "
            "WHERE id IN (SELECT id FROM celeriac_messages WHERE consumer IS NULL "
            f"AND queue IN ({placeholders(queues)}) AND due <= ? "
            "ORDER BY priority, id LIMIT ?) RETURNING id, queue, payload"
        )
        conn = self.db.connection()
        self._drop_ended()
        while True:
            params = (self.consumer_id, *queues, time.time(), limit)
            rows = self.db._retry(lambda: conn.execute(sql, params).fetchall())
            if rows:
                rows.sort()
                return [Delivery(r[0], r[1], r[2]) for r in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_POLL_INTERVAL)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        tags = [d.tag for d in deliveries]
        # Only rows this consumer still owns: if it was declared lost meanwhile, the
        # message may be in another consumer's hands, and deleting it there could lose it.
        self.db.connection().execute(
            f"DELETE FROM celeriac_messages WHERE id IN ({placeholders(tags)}) "
            "AND consumer = ?", (*tags, self.consumer_id))

    def ack_started(self, deliveries: Sequence[Delivery]) -> Callable[[], None]:
        # The row stays, owned, with due = STARTED as its note: one statement, as the
        # DELETE of a plain ack is, and never fetched again (it has a consumer).
        tags = [d.tag for d in deliveries]
        if tags:
            self.db.connection().execute(
                f"UPDATE celeriac_messages SET due = {STARTED} WHERE id IN "
                f"({placeholders(tags)}) AND consumer = ?", (*tags, self.consumer_id))
        return nothing_to_wait_for

    def finished(self, deliveries: Sequence[Delivery]) -> None:
        self._ended.extend(d.tag for d in deliveries)

    def _drop_ended(self) -> None:
        # The notes of ended tasks go together, one statement per fetch.
        ended = take_all(self._ended)
        if ended:
            self.db.connection().execute(
                f"DELETE FROM celeriac_messages WHERE id IN ({placeholders(ended)}) "
                "AND consumer = ?", (*ended, self.consumer_id))

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        tags = [d.tag for d in deliveries]
        # The row keeps its id, so it keeps its place at the front of the queue. One
        # marked started by an early ack whose task never ran (see Broker.requeue) is
        # due at once again.
        self.db.connection().execute(
            f"UPDATE celeriac_messages SET consumer = NULL, due = CASE WHEN due = {STARTED} "
            f"THEN 0 ELSE due END WHERE id IN ({placeholders(tags)}) AND consumer = ?",
            (*tags, self.consumer_id))

    def defer(self, delivery: Delivery, eta: float) -> None:
        # Owned rows only (see ack): a stale consumer must not free another's message.
        self.db.connection().execute(
            "UPDATE celeriac_messages SET consumer = NULL, due = ? WHERE id = ? "
            "AND consumer = ?", (eta, delivery.tag, self.consumer_id))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        def move(conn: Any) -> None:
            # Owned rows only (see ack).
            if conn.execute("DELETE FROM celeriac_messages WHERE id = ? AND consumer = ?",
                            (delivery.tag, self.consumer_id)).rowcount:
                conn.execute(
                    "INSERT INTO celeriac_dead_letters (queue, reason, time, payload) "
                    "VALUES (?, ?, ?, ?)",
                    (delivery.queue, reason, time.time(), delivery.payload))

        self.db.write(move)

    def heartbeat(self, consumer_ids: Sequence[str] | None = None) -> Released:
        now = time.time()
        ids = list(consumer_ids or (self.consumer_id,))

        def beat(conn: Any) -> Released:
            row = conn.execute("SELECT value FROM celeriac_clock WHERE name = 'last_beat'"
                               ).fetchone()
            conn.execute("INSERT OR REPLACE INTO celeriac_clock (name, value) "
                         "VALUES ('last_beat', ?)", (now,))
            conn.executemany("INSERT OR REPLACE INTO celeriac_consumers (id, heartbeat) "
                             "VALUES (?, ?)", [(i, now) for i in ids])
            if row and now - row[0] > self.lost_timeout / 2:
                # Nobody could beat (the machine slept, the file was locked): silence
                # everyone shared proves no one dead. Start every clock again.
                conn.execute("UPDATE celeriac_consumers SET heartbeat = ?", (now,))
                return Released()
            dead = [r[0] for r in conn.execute(
                "SELECT id FROM celeriac_consumers WHERE heartbeat < ?",
                (now - self.lost_timeout,))]
            released = Released()
            for consumer_id in dead:
                oldest = conn.execute("SELECT MIN(id) FROM celeriac_messages WHERE consumer = ? "
                                      f"AND due != {STARTED}", (consumer_id,)).fetchone()[0]
                lost = () if oldest is None else (oldest,)
                released.add(self._release(conn, consumer_id, lost, ()))
            return released

        return self.db.write(beat)

    def _release(self, conn: Any, consumer_id: str, lost: Sequence[Any],
                 drop: Sequence[Any]) -> Released:
        conn.execute("DELETE FROM celeriac_consumers WHERE id = ?", (consumer_id,))
        released = Released()
        notes = conn.execute("SELECT id, payload FROM celeriac_messages WHERE consumer = ? "
                             f"AND due = {STARTED} ORDER BY id", (consumer_id,)).fetchall()
        released.interrupted = [payload for row_id, payload in notes if row_id not in drop]
        conn.execute(f"DELETE FROM celeriac_messages WHERE consumer = ? AND due = {STARTED}",
                     (consumer_id,))
        if drop:
            conn.execute(f"DELETE FROM celeriac_messages WHERE consumer = ? AND id IN "
                         f"({placeholders(drop)})", (consumer_id, *drop))
        if lost:
            held = conn.execute(
                f"SELECT id, queue, payload, lost FROM celeriac_messages WHERE consumer = ? "
                f"AND id IN ({placeholders(lost)})", (consumer_id, *lost)).fetchall()
            conn.execute(f"UPDATE celeriac_messages SET lost = lost + 1 WHERE consumer = ? "
                         f"AND id IN ({placeholders(lost)})", (consumer_id, *lost))
            for row_id, queue, payload, losses in held:
                if losses + 1 < self.max_redeliveries:
                    continue
                dead = DeadLetter(queue, poison_reason(losses + 1), payload, time.time())
                conn.execute("INSERT INTO celeriac_dead_letters (queue, reason, time, payload) "
                             "VALUES (?, ?, ?, ?)", (queue, dead.reason, dead.time, payload))
                conn.execute("DELETE FROM celeriac_messages WHERE id = ?", (row_id,))
                released.poisoned.append(dead)
        released.returned = conn.execute(
            "UPDATE celeriac_messages SET consumer = NULL WHERE consumer = ?",
            (consumer_id,)).rowcount
        return released

    def forget_consumer(self, consumer_id: str | None = None, lost: Sequence[Any] = (),
                        drop: Sequence[Any] = ()) -> Released:
        cid = consumer_id or self.consumer_id
        if cid == self.consumer_id:
            drop = [*drop, *take_all(self._ended)]
        return self.db.write(lambda conn: self._release(conn, cid, list(lost), list(drop)))

    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        now = time.time()

        def record(conn: Any) -> None:
            conn.execute("DELETE FROM celeriac_revoked WHERE expires < ?", (now,))
            conn.executemany(
                "INSERT OR REPLACE INTO celeriac_revoked (task_id, expires, terminate) "
                "VALUES (?, ?, ?)", [(t, now + expires, terminate) for t in task_ids])

        self.db.write(record)

    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        conn = self.db.connection()
        # Every revoke replaces rows, so the largest rowid changes with each one; the
        # count catches the deletion of expired rows.
        version = tuple(conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM celeriac_revoked").fetchone())
        if version == since:
            return since, None
        rows = conn.execute("SELECT task_id, terminate FROM celeriac_revoked").fetchall()
        return version, {task_id: sig for task_id, sig in rows}

    def reserve_rate(self, key: str, interval: float) -> float:
        def reserve(conn: Any) -> float:
            now = time.time()
            row = conn.execute("SELECT next_start FROM celeriac_rates WHERE key = ?",
                               (key,)).fetchone()
            start = max(now, row[0] if row else now)
            conn.execute("INSERT OR REPLACE INTO celeriac_rates (key, next_start) VALUES (?, ?)",
                         (key, start + interval))
            return start

        return self.db.write(reserve)

    def purge(self, queue: str) -> int:
        return self.db.connection().execute(
            "DELETE FROM celeriac_messages WHERE queue = ? AND consumer IS NULL",
            (queue,)).rowcount

    def size(self, queue: str) -> int:
        row = self.db.connection().execute(
            "SELECT COUNT(*) FROM celeriac_messages WHERE queue = ? AND consumer IS NULL",
            (queue,)).fetchone()
        return int(row[0])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self.db.connection().execute(
            "SELECT queue, reason, payload, time, id FROM celeriac_dead_letters "
            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [DeadLetter(q, r, p, t, str(i)) for q, r, p, t, i in rows]

    def requeue_dead_letter(self, id: str) -> bool:
        def move(conn: Any) -> bool:
            row = conn.execute("SELECT queue, payload FROM celeriac_dead_letters "
                               "WHERE id = ?", (_row_id(id),)).fetchone()
            if row is None:
                return False
            conn.execute(_INSERT, (row[0], 0, 0.0, row[1]))
            conn.execute("DELETE FROM celeriac_dead_letters WHERE id = ?", (_row_id(id),))
            return True

        return self.db.write(move)

    def delete_dead_letter(self, id: str) -> bool:
        return self.db.connection().execute(
            "DELETE FROM celeriac_dead_letters WHERE id = ?", (_row_id(id),)).rowcount > 0

    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        if not queues:
            return []
        # Early-acked rows (due = STARTED) are running, not waiting for an ack.
        rows = self.db.connection().execute(
            "SELECT queue, priority, "
            "SUM(consumer IS NULL AND due <= ?), SUM(consumer IS NULL AND due > ?), "
            f"SUM(consumer IS NOT NULL AND due != {STARTED}) FROM celeriac_messages "
            f"WHERE queue IN ({placeholders(queues)}) GROUP BY queue, priority",
            (time.time(), time.time(), *queues)).fetchall()
        return counts_by_queue(queues, rows)

    # -- fanout: events and remote control ---------------------------------------------
    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        now = time.time()
        rows = [(exchange, n.routing_key, now, json.dumps(n.headers), n.body) for n in notices]
        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + NOTICE_SWEEP_INTERVAL

        def send(conn: Any) -> None:
            conn.executemany("INSERT INTO celeriac_notices (exchange, routing_key, time, "
                             "headers, body) VALUES (?, ?, ?, ?, ?)", rows)
            if sweep:
                conn.execute("DELETE FROM celeriac_notices WHERE time < ?",
                             (now - NOTICE_KEEP,))

        self.db.write(send)

    # a reply queue is a listener bound with its routing key
    reply = broadcast

    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        return _SQLiteListener(self.db, exchange, patterns)

    def replies(self, exchange: str, routing_key: str) -> Listener:
        return _SQLiteListener(self.db, exchange, [routing_key])

    def close(self) -> None:
        self.db.close()


class _SQLiteListener(Listener):
    """Tails ``celeriac_notices`` from the row that was last when it started."""

    def __init__(self, db: SQLiteFile, exchange: str, patterns: Sequence[str]) -> None:
        self.db = db
        self.exchange = exchange
        self.patterns = list(patterns)
        row = db.connection().execute("SELECT MAX(id) FROM celeriac_notices").fetchone()
        self.seen = int(row[0] or 0)

    def get(self, timeout: float) -> list[Notice]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        conn = self.db.connection()
        while True:
            rows = self.db._retry(lambda: conn.execute(
                "SELECT id, routing_key, headers, body FROM celeriac_notices "
                "WHERE exchange = ? AND id > ? ORDER BY id LIMIT 1000",
                (self.exchange, self.seen)).fetchall())
            if rows:
                self.seen = rows[-1][0]
                found = [Notice(key, body, _headers(headers)) for _, key, headers, body in rows
                         if any(topic_matches(p, key) for p in self.patterns)]
                if found:
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_POLL_INTERVAL)

    def close(self) -> None:
        pass


def _row_id(id: str) -> int:
    """A dead letter's id as its row's key (-1, which no row has, for a foreign one)."""
    try:
        return int(id)
    except (TypeError, ValueError):
        return -1


def _headers(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
