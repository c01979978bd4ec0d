"""``sqla+postgresql://``, ``sqla+mysql://``: a broker in a server database that many
machines share.

The semantics are the SQLite broker's, on tables of their own (``celeriac_messages``,
``celeriac_consumers``, ``celeriac_dead_letters``, ...; see docs/sql-broker.md): a
message row is taken by a consumer with ``SELECT ... FOR UPDATE SKIP LOCKED`` and
marked with the consumer's id, so two consumers never get the same message and the row
stays until acked; a consumer whose heartbeat stops has its rows handed back by the
heartbeat of a live one, judged on the database's clock.

On PostgreSQL an idle consumer waits on LISTEN for the NOTIFY that every publish sends
in its own statement, instead of polling; on MySQL/MariaDB it polls, backing off to
50 ms.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import deque
from typing import Any, Callable, Sequence

from ..config import IgnoredSettingWarning
from ..utils.pid import current_pid
from ..utils.sqlbroker import (TABLES, Database, Ledger, broker_tables, drain_notifications,
                               wait_notification)
from .base import (DeadLetter, Delivery, FullBroker, Listener, Notice, Outgoing, QueueCounts,
                   Released, counts_by_queue, new_consumer_id, nothing_to_wait_for,
                   poison_reason, take_all, topic_matches)

# ``due`` of a row whose task started with an early ack: the note that it runs.
STARTED = -1
# An idle MySQL consumer polls, backing off from 2 ms to this (as the SQLite broker).
MAX_POLL_INTERVAL = 0.05
# Rows per INSERT: PostgreSQL takes at most 65,535 parameters in a statement.
PUBLISH_CHUNK = 1000
# Events and control messages are kept this long for listeners to read, then deleted
# by a sender, at most every NOTICE_SWEEP_INTERVAL.
NOTICE_KEEP = 60.0
NOTICE_SWEEP_INTERVAL = 5.0

# Joined into a statement, makes its commit asynchronous (see SQLBroker._lazily).
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS lazily"

# What this transport reads of its options: its own (``schema``) and the settings the
# app passes to every transport.
_OPTIONS = frozenset({"schema", "dead_letter_queue", "lost_timeout", "max_redeliveries",
                      "socket_connect_timeout"})

class SQLBroker(FullBroker):
    """PostgreSQL or MySQL/MariaDB as a broker; see the module docstring.

    Transport options honoured: ``schema`` (where the tables live; created when
    absent), and ``broker_connection_timeout`` as the connect timeout.
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            warnings.warn(IgnoredSettingWarning(
                f"broker_transport_options {', '.join(unknown)}: no effect on the SQL broker "
                f"(it takes {', '.join(sorted(_OPTIONS))})"), stacklevel=3)
        self.db = Database(url, self.options, "the SQL broker", broker_tables)
        db = self.db
        self.pg = db.pg
        self.t = {name: db.table(f"celeriac_{name}") for name in TABLES}
        # notes of ended early-acked tasks, dropped with the next fetch
        self._ended: deque[Any] = deque()
        self._next_sweep = 0.0
        # the fetching thread's LISTEN connection (PostgreSQL) and its channels
        self._listen: Any = None
        self._listen_pid = 0
        self._listening: set[str] = set()
        # (pid, consumer id) last put to use, to tell a forked child it needs its own id
        self._claim = (current_pid(), self.consumer_id)
        # What this consumer holds and settled: after the database went away, the
        # next fetch sorts the rows marked with its id by it (see Ledger).
        self.ledger = Ledger()
        self._ledger_lock = threading.Lock()
        self._in_doubt = False
        self._losses_seen = 0

    # -- SQL fragments ---------------------------------------------------------------------
    def _in(self, items: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column <this>`` matching any of ``items``, and its parameters."""
        if self.pg:
            return "= ANY(%s)", [list(items)]
        return f"IN ({','.join(['%s'] * len(items))})", list(items)

    def _notify_sql(self, queues: Sequence[str]) -> tuple[str, list[Any]]:
        """A SELECT that wakes the consumers of ``queues`` (PostgreSQL), sent in the
        statement that made the messages ready so that it goes with its commit."""
        channels = sorted({self.db.channel("q", q) for q in queues})
        return "SELECT pg_notify(c, '') FROM unnest(%s::text[]) AS c", [channels]

    def _with_notify(self, cur: Any, statement: str, params: list[Any],
                     queues: Sequence[str]) -> None:
        if self.pg:
            notify, extra = self._notify_sql(queues)
            cur.execute(f"WITH done AS ({statement}) {notify}", [*params, *extra])
        else:
            cur.execute(statement, params)

    def _me(self) -> str:
        pid = current_pid()
        if self._claim[0] != pid:
            # A forked child is a different consumer: sharing the parent's id would
            # mix both processes' messages.
            if self._claim[1] == self.consumer_id:
                self.consumer_id = new_consumer_id()
            self._claim = (pid, self.consumer_id)
            self.ledger = Ledger()
            self._in_doubt = False
        return self.consumer_id

    # -- core ------------------------------------------------------------------------------
    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        self.publish_many([Outgoing(queue, payload, priority, eta)])

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        chunks = [messages[i:i + PUBLISH_CHUNK] for i in range(0, len(messages),
                                                                PUBLISH_CHUNK)]

        def insert(cur: Any) -> None:
            for chunk in chunks:
                rows = ",".join(["(%s, %s, %s, %s)"] * len(chunk))
                params = [v for m in chunk for v in (m.queue, m.priority or 0,
                                                     m.eta or 0.0, m.payload)]
                statement = (f"INSERT INTO {self.t['messages']} (queue, priority, due, "
                             f"payload) VALUES {rows}")
                self._with_notify(cur, statement, params, [m.queue for m in chunk])

        # one statement is its own transaction; several go in one
        (self.db.run if len(chunks) == 1 else self.db.transaction)(insert)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        me = self._me()
        ended = take_all(self._ended)
        pause = 0.002
        try:
            losses = self.db.losses
            if self._in_doubt or losses != self._losses_seen:
                with self._ledger_lock:
                    self.db.transaction(lambda cur: self._reconcile(cur, me))
                self._in_doubt, self._losses_seen = False, losses
            while True:
                with self._ledger_lock:
                    try:
                        rows = self.db.run(
                            lambda cur: self._take(cur, me, queues, limit, ended))
                    except ConnectionError:
                        self._in_doubt = True
                        raise
                    self.ledger.fetched(r[0] for r in rows)
                ended = []
                if rows:
                    rows.sort(key=lambda r: (r[2], r[0]))
                    return [Delivery(r[0], r[1], r[3]) for r in rows]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self.pg:
                    self._wait(queues, remaining)
                else:
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, MAX_POLL_INTERVAL)
        except BaseException:
            self._ended.extendleft(reversed(ended))  # their notes go with the next try
            raise

    def _reconcile(self, cur: Any, me: str) -> None:
        """Put the rows marked with this consumer's id as its ledger says they are: the
        database may have lost its last asynchronous commits, or committed a fetch whose
        reply never came (nobody would hand those back while this consumer lives)."""
        m = self.t["messages"]
        cur.execute(f"SELECT id, queue, due FROM {m} WHERE consumer = %s FOR UPDATE", [me])
        verdicts: dict[str, list[Any]] = {"start": [], "delete": [], "return": []}
        queues = set()
        for row_id, queue, due in cur.fetchall():
            verdict = self.ledger.verdict(row_id, float(due) == STARTED)
            if verdict != "keep":
                verdicts[verdict].append(row_id)
            if verdict == "return":
                queues.add(queue)
        statements = {
            "start": f"UPDATE {m} SET due = {STARTED} WHERE consumer = %s AND id",
            "delete": f"DELETE FROM {m} WHERE consumer = %s AND id",
            "return": f"UPDATE {m} SET consumer = NULL, due = CASE WHEN due = {STARTED} "
                      "THEN 0 ELSE due END WHERE consumer = %s AND id",
        }
        for verdict, tags in verdicts.items():
            if tags:
                tin, tparams = self._in(tags)
                cur.execute(f"{statements[verdict]} {tin}", [me, *tparams])
        if queues and self.pg:
            notify, params = self._notify_sql(sorted(queues))
            cur.execute(notify, params)

    def _take(self, cur: Any, me: str, queues: Sequence[str], limit: int,
              ended: list[Any]) -> list[Any]:
        m = self.t["messages"]
        qin, qparams = self._in(queues)
        ready = (f"FROM {m} WHERE consumer IS NULL AND queue {qin} AND due <= %s "
                 "ORDER BY priority, id LIMIT %s FOR UPDATE SKIP LOCKED")
        pick_params = [*qparams, time.time(), limit]
        if self.pg:
            # One statement takes the batch, and drops the notes of ended tasks.
            prefix, params = "", []
            if ended:
                ein, eparams = self._in(ended)
                prefix = f"WITH gone AS (DELETE FROM {m} WHERE id {ein} AND consumer = %s) "
                params = [*eparams, me]
            cur.execute(f"{prefix}UPDATE {m} SET consumer = %s, deliveries = deliveries + 1 "
                        f"WHERE id IN (SELECT id {ready}) RETURNING id, queue, priority, payload",
                        [*params, me, *pick_params])
            return list(cur.fetchall())
        cur.execute("BEGIN")
        try:
            if ended:
                ein, eparams = self._in(ended)
                cur.execute(f"DELETE FROM {m} WHERE id {ein} AND consumer = %s",
                            [*eparams, me])
            cur.execute(f"SELECT id, queue, priority, payload {ready}", pick_params)
            rows = list(cur.fetchall())
            if rows:
                tin, tparams = self._in([r[0] for r in rows])
                cur.execute(f"UPDATE {m} SET consumer = %s, deliveries = deliveries + 1 "
                            f"WHERE id {tin}", [me, *tparams])
        except BaseException:
            if self.db.usable(cur.connection):
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return rows

    def _wait(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for a NOTIFY on one of ``queues``, or for the next deferred message of
        theirs to be due, or ``timeout``."""
        conn = self._listener_connection(queues)
        if conn is None:
            return  # LISTEN just started: look again before waiting
        try:
            if drain_notifications(conn):
                return
            due = self.db.run(lambda cur: self._next_due(cur, queues))
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
            wait_notification(conn, timeout)
        except self.db.dbapi.Error as exc:
            self._drop_listener()
            raise self.db.connection_error(exc) from exc

    def _next_due(self, cur: Any, queues: Sequence[str]) -> float | None:
        qin, qparams = self._in(queues)
        cur.execute(f"SELECT MIN(due) FROM {self.t['messages']} WHERE consumer IS NULL "
                    f"AND queue {qin} AND due > %s", [*qparams, time.time()])
        row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _listener_connection(self, queues: Sequence[str]) -> Any:
        """The LISTEN connection, listening on every channel of ``queues``; None when a
        LISTEN was just sent (what was published before it must be looked for again)."""
        if self._listen is not None and self._listen_pid != current_pid():
            self._listen = None  # the parent's: left alone
            self._listening = set()
        if self._listen is None:
            self._listen = self.db.raw()
            self._listen_pid = current_pid()
        channels = {self.db.channel("q", q) for q in queues} - self._listening
        if not channels:
            return self._listen.dbapi_connection
        conn = self._listen.dbapi_connection
        try:
            with conn.cursor() as cur:
                for channel in sorted(channels):
                    cur.execute(f'LISTEN "{channel}"')
        except self.db.dbapi.Error as exc:
            self._drop_listener()
            raise self.db.connection_error(exc) from exc
        self._listening |= channels
        return None

    def _drop_listener(self, broken: bool = True) -> None:
        if self._listen is not None and self._listen_pid == current_pid():
            if broken:
                self.db.losses += 1
            self.db.give_back(self._listen, broken=True)
        self._listen = None
        self._listening = set()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._owned(f"DELETE FROM {self.t['messages']} {self._lazily('USING')} WHERE id",
                        deliveries)
            # after the statement only: one that failed is said again, and meanwhile
            # its row is still held
            self.ledger.settled([d.tag for d in deliveries], gone=True)

    def _lazily(self, keyword: str) -> str:
        """A join that makes the statement's commit asynchronous on PostgreSQL (not
        waiting for its WAL flush: 75 us instead of 200 us for an ack on loopback).
        What a crash may undo of those commits, the ledger redoes (``_reconcile``)."""
        return f"{keyword} {_ASYNC_COMMIT}" if self.pg else ""

    def _owned(self, statement: str, deliveries: Sequence[Delivery]) -> None:
        # Only rows this consumer still owns: if it was declared lost meanwhile, the
        # message may be in another consumer's hands, and touching it there could lose it.
        tin, tparams = self._in([d.tag for d in deliveries])
        me = self._me()
        self.db.run(lambda cur: cur.execute(f"{statement} {tin} AND consumer = %s",
                                            [*tparams, me]))

    def ack_started(self, deliveries: Sequence[Delivery]) -> Callable[[], None]:
        # The row stays, owned, with due = STARTED as its note (see the SQLite broker).
        if not deliveries:
            return nothing_to_wait_for
        tags = [d.tag for d in deliveries]
        if self.db.can_send:
            # Sent before the task starts, its reply read after the task: the round
            # trip overlaps the task instead of preceding it.
            reply = self.db.send(
                f"UPDATE {self.t['messages']} SET due = {STARTED} {self._lazily('FROM')} "
                "WHERE id = ANY($1::bigint[]) AND consumer = $2",
                ["{" + ",".join(str(int(t)) for t in tags) + "}", self._me()])
            # started from now on (a reply that fails makes the consumer ack instead)
            self.ledger.started(tags)
            return reply
        self._owned(f"UPDATE {self.t['messages']} SET due = {STARTED} "
                    f"{self._lazily('FROM')} WHERE id", deliveries)
        self.ledger.started(tags)
        return nothing_to_wait_for

    def finished(self, deliveries: Sequence[Delivery]) -> None:
        tags = [d.tag for d in deliveries]
        self.ledger.ended(tags)
        self._ended.extend(tags)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        # The row keeps its id, so its place at the front of the queue; one whose early
        # ack went through but whose task never ran is due at once again.
        tin, tparams = self._in([d.tag for d in deliveries])
        statement = (f"UPDATE {self.t['messages']} SET consumer = NULL, due = CASE WHEN "
                     f"due = {STARTED} THEN 0 ELSE due END WHERE id {tin} AND consumer = %s")
        params = [*tparams, self._me()]
        # Another thread may requeue (fair dispatch) while this consumer fetches: the
        # statement and the ledger's change go together, or a row given back and
        # fetched again at once could end up not held.
        with self._ledger_lock:
            self.db.run(lambda cur: self._with_notify(cur, statement, params,
                                                      [d.queue for d in deliveries]))
            self.ledger.settled([d.tag for d in deliveries], gone=False)

    def defer(self, delivery: Delivery, eta: float) -> None:
        statement = (f"UPDATE {self.t['messages']} SET consumer = NULL, due = %s "
                     "WHERE id = %s AND consumer = %s")
        params = [eta, delivery.tag, self._me()]
        # notified too: an idle consumer then waits for this one's due time
        with self._ledger_lock:  # (see requeue)
            self.db.run(lambda cur: self._with_notify(cur, statement, params,
                                                      [delivery.queue]))
            self.ledger.settled([delivery.tag], gone=False)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        me = self._me()

        def move(cur: Any) -> None:
            cur.execute(f"DELETE FROM {self.t['messages']} WHERE id = %s AND consumer = %s",
                        [delivery.tag, me])
            if cur.rowcount:
                self._bury(cur, delivery.queue, reason, time.time(), delivery.payload)

        self.db.transaction(move)
        self.ledger.settled([delivery.tag], gone=False)

    def _bury(self, cur: Any, queue: str, reason: str, when: float, payload: str) -> None:
        cur.execute(f"INSERT INTO {self.t['dead_letters']} (dead_queue, queue, reason, "
                    "time, payload) VALUES (%s, %s, %s, %s, %s)",
                    [self.dead_letter_queue, queue, reason, when, payload])

    def purge(self, queue: str) -> int:
        def purge(cur: Any) -> int:
            cur.execute(f"DELETE FROM {self.t['messages']} WHERE queue = %s "
                        "AND consumer IS NULL", [queue])
            return int(cur.rowcount)

        return self.db.run(purge)

    def size(self, queue: str) -> int:
        def count(cur: Any) -> int:
            cur.execute(f"SELECT COUNT(*) FROM {self.t['messages']} WHERE queue = %s "
                        "AND consumer IS NULL", [queue])
            return int(cur.fetchone()[0])

        return self.db.run(count)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(cur: Any) -> list[DeadLetter]:
            # the table is shared: this broker's dead-letter queue only
            cur.execute("SELECT queue, reason, payload, time, id FROM "
                        f"{self.t['dead_letters']} WHERE dead_queue = %s ORDER BY id DESC LIMIT %s",
                        [self.dead_letter_queue, limit])
            return [DeadLetter(q, r, p, float(t), str(i)) for q, r, p, t, i in cur.fetchall()]

        return self.db.run(read)

    def requeue_dead_letter(self, id: str) -> bool:
        row_id = _row_id(id)
        dead = self.t["dead_letters"]

        def move(cur: Any) -> bool:
            # The DELETE's row lock makes two requeues of one dead letter take turns: the
            # second finds nothing and puts nothing back.
            cur.execute(f"SELECT queue, payload FROM {dead} WHERE id = %s AND dead_queue = %s "
                        "FOR UPDATE", [row_id, self.dead_letter_queue])
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute(f"DELETE FROM {dead} WHERE id = %s", [row_id])
            self._with_notify(cur, f"INSERT INTO {self.t['messages']} (queue, priority, due, "
                              "payload) VALUES (%s, 0, 0, %s)", [row[0], row[1]], [row[0]])
            return True

        return self.db.transaction(move)

    def delete_dead_letter(self, id: str) -> bool:
        def delete(cur: Any) -> bool:
            cur.execute(f"DELETE FROM {self.t['dead_letters']} WHERE id = %s AND "
                        "dead_queue = %s", [_row_id(id), self.dead_letter_queue])
            return bool(cur.rowcount)

        return self.db.run(delete)

    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        if not queues:
            return []
        qin, qparams = self._in(queues)
        now = time.time()

        def count(cur: Any) -> list[Any]:
            # Early-acked rows (due = STARTED) are running, not waiting for an ack.
            cur.execute(
                "SELECT queue, priority, "
                "SUM(CASE WHEN consumer IS NULL AND due <= %s THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN consumer IS NULL AND due > %s THEN 1 ELSE 0 END), "
                f"SUM(CASE WHEN consumer IS NOT NULL AND due != {STARTED} THEN 1 ELSE 0 END) "
                f"FROM {self.t['messages']} WHERE queue {qin} GROUP BY queue, priority",
                [now, now, *qparams])
            return list(cur.fetchall())

        return counts_by_queue(queues, self.db.run(count))

    # -- liveness --------------------------------------------------------------------------
    def heartbeat(self, consumer_ids: Sequence[str] | None = None) -> Released:
        ids = list(consumer_ids or (self._me(),))
        c, clock = self.t["consumers"], self.t["clock"]

        def beat(cur: Any) -> Released:
            # The clock row's lock makes heartbeats take turns: two live consumers never
            # hand back the same dead one's messages.
            cur.execute(f"SELECT value, {self.db.now_sql} FROM {clock} "
                        "WHERE name = 'last_beat' FOR UPDATE")
            last, now = (float(v) for v in cur.fetchone())
            cur.execute(f"UPDATE {clock} SET value = %s WHERE name = 'last_beat'", [now])
            values = ",".join(["(%s, %s)"] * len(ids))
            upsert = ("ON CONFLICT (id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat"
                      if self.pg else "ON DUPLICATE KEY UPDATE heartbeat = VALUES(heartbeat)")
            cur.execute(f"INSERT INTO {c} (id, heartbeat) VALUES {values} {upsert}",
                        [v for i in ids for v in (i, now)])
            if last and now - last > self.lost_timeout / 2:
                # Nobody could beat (the database was down or unreachable): silence
                # everyone shared proves no one dead. Start every clock again.
                cur.execute(f"UPDATE {c} SET heartbeat = %s", [now])
                return Released()
            cur.execute(f"SELECT id FROM {c} WHERE heartbeat < %s",
                        [now - self.lost_timeout])
            released = Released()
            for (consumer_id,) in cur.fetchall():
                cur.execute(f"SELECT MIN(id) FROM {self.t['messages']} WHERE consumer = %s "
                            f"AND due != {STARTED}", [consumer_id])
                oldest = cur.fetchone()[0]
                lost = [] if oldest is None else [oldest]
                released.add(self._release(cur, consumer_id, lost, []))
            return released

        return self.db.transaction(beat)

    def _release(self, cur: Any, consumer_id: str, lost: Sequence[Any],
                 drop: Sequence[Any]) -> Released:
        m = self.t["messages"]
        cur.execute(f"DELETE FROM {self.t['consumers']} WHERE id = %s", [consumer_id])
        released = Released()
        cur.execute(f"SELECT id, payload FROM {m} WHERE consumer = %s AND due = {STARTED} "
                    "ORDER BY id", [consumer_id])
        released.interrupted = [p for row_id, p in cur.fetchall() if row_id not in drop]
        cur.execute(f"DELETE FROM {m} WHERE consumer = %s AND due = {STARTED}", [consumer_id])
        if drop:
            din, dparams = self._in(drop)
            cur.execute(f"DELETE FROM {m} WHERE consumer = %s AND id {din}",
                        [consumer_id, *dparams])
        if lost:
            lin, lparams = self._in(lost)
            cur.execute(f"SELECT id, queue, payload, lost FROM {m} WHERE consumer = %s "
                        f"AND id {lin}", [consumer_id, *lparams])
            held = cur.fetchall()
            cur.execute(f"UPDATE {m} SET lost = lost + 1 WHERE consumer = %s AND id {lin}",
                        [consumer_id, *lparams])
            for row_id, queue, payload, losses in held:
                if losses + 1 < self.max_redeliveries:
                    continue
                dead = DeadLetter(queue, poison_reason(losses + 1), payload, time.time())
                self._bury(cur, queue, dead.reason, dead.time, payload)
                cur.execute(f"DELETE FROM {m} WHERE id = %s", [row_id])
                released.poisoned.append(dead)
        if self.pg:
            cur.execute(f"UPDATE {m} SET consumer = NULL WHERE consumer = %s RETURNING queue",
                        [consumer_id])
            queues = {q for (q,) in cur.fetchall()}
            released.returned = int(cur.rowcount)
            if queues:
                notify, params = self._notify_sql(sorted(queues))
                cur.execute(notify, params)
        else:
            cur.execute(f"UPDATE {m} SET consumer = NULL WHERE consumer = %s", [consumer_id])
            released.returned = int(cur.rowcount)
        return released

    def forget_consumer(self, consumer_id: str | None = None, lost: Sequence[Any] = (),
                        drop: Sequence[Any] = ()) -> Released:
        me = self._me()
        cid = consumer_id or me
        if cid == me:
            drop = [*drop, *take_all(self._ended)]
        released = self.db.transaction(
            lambda cur: self._release(cur, cid, list(lost), list(drop)))
        if cid == me:
            self.ledger.clear()
        return released

    # -- revocations and rates -------------------------------------------------------------
    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        if not task_ids:
            return
        now = time.time()
        r = self.t["revoked"]

        def record(cur: Any) -> None:
            cur.execute(f"DELETE FROM {r} WHERE expires < %s", [now])
            tin, tparams = self._in(task_ids)
            # new rows (not an upsert): a new largest id is how readers see a change
            cur.execute(f"DELETE FROM {r} WHERE task_id {tin}", tparams)
            values = ",".join(["(%s, %s, %s)"] * len(task_ids))
            cur.execute(f"INSERT INTO {r} (task_id, expires, terminate) VALUES {values}",
                        [v for t in task_ids for v in (t, now + expires, terminate)])

        self.db.transaction(record)

    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        r = self.t["revoked"]

        def read(cur: Any) -> tuple[Any, dict[str, str | None] | None]:
            cur.execute(f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM {r}")
            version = tuple(int(v) for v in cur.fetchone())
            if version == since:
                return since, None
            cur.execute(f"SELECT task_id, terminate FROM {r}")
            return version, {task_id: sig for task_id, sig in cur.fetchall()}

        return self.db.run(read)

    def reserve_rate(self, key: str, interval: float) -> float:
        rates = self.t["rates"]

        def reserve(cur: Any) -> float:
            # On the database's clock, so workers on machines whose clocks differ still
            # space their starts; handed back as a time on this machine's clock.
            before = time.time()
            cur.execute(f"SELECT {self.db.now_sql}")
            now = float(cur.fetchone()[0])
            # this machine's clock minus the database's, read around that one statement:
            # read after the whole transaction instead, each start came back late by
            # that call's own duration, and two starts could be closer than the interval
            offset = (before + time.time()) / 2 - now
            upsert = (f"ON CONFLICT (name) DO UPDATE SET next_start = "
                      f"GREATEST({rates}.next_start, %s) + %s" if self.pg else
                      "ON DUPLICATE KEY UPDATE next_start = GREATEST(next_start, %s) + %s")
            cur.execute(f"INSERT INTO {rates} (name, next_start) VALUES (%s, %s) {upsert}",
                        [key, now + interval, now, interval])
            cur.execute(f"SELECT next_start FROM {rates} WHERE name = %s", [key])
            return float(cur.fetchone()[0]) - interval + offset

        return self.db.transaction(reserve)

    # -- fanout: events and remote control -------------------------------------------------
    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        now = time.time()
        rows = ",".join(["(%s, %s, %s, %s, %s)"] * len(notices))
        params = [v for n in notices
                  for v in (exchange, n.routing_key, now, json.dumps(n.headers), n.body)]
        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + NOTICE_SWEEP_INTERVAL
        notices_table = self.t["notices"]

        def send(cur: Any) -> None:
            # Senders take turns on the clock row, so notices commit in the order of
            # their ids and a listener tailing by id never skips one committed late.
            cur.execute(f"SELECT value FROM {self.t['clock']} WHERE name = 'notices' "
                        "FOR UPDATE")
            cur.execute(f"INSERT INTO {notices_table} (exchange, routing_key, time, headers, "
                        f"body) VALUES {rows}", params)
            if sweep:
                cur.execute(f"DELETE FROM {notices_table} WHERE time < %s",
                            [now - NOTICE_KEEP])
            if self.pg:
                cur.execute("SELECT pg_notify(%s, '')", [self.db.channel("n", exchange)])

        self.db.transaction(send)

    # a reply queue is a listener bound with its routing key
    reply = broadcast

    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        return _SQLListener(self, exchange, patterns)

    def replies(self, exchange: str, routing_key: str) -> Listener:
        return _SQLListener(self, exchange, [routing_key])

    def close(self) -> None:
        self._drop_listener(broken=False)
        self.db.close()


class _SQLListener(Listener):
    """Tails ``celeriac_notices`` from the row that was last when it started; on
    PostgreSQL woken by NOTIFY on a connection of its own."""

    def __init__(self, broker: SQLBroker, exchange: str, patterns: Sequence[str]) -> None:
        self.broker = broker
        self.db = broker.db
        self.exchange = exchange
        self.patterns = list(patterns)
        self.table = broker.t["notices"]
        self._link: Any = None
        self.seen = -1
        self._start()

    def _start(self) -> None:
        if self.db.pg:
            self._link = self.db.raw()
            conn = self._link.dbapi_connection
            try:
                with conn.cursor() as cur:
                    cur.execute(f'LISTEN "{self.db.channel("n", self.exchange)}"')
            except self.db.dbapi.Error as exc:
                self._stop(broken=True)
                raise self.db.connection_error(exc) from exc

        def last(cur: Any) -> int:
            cur.execute(f"SELECT MAX(id) FROM {self.table}")
            return int(cur.fetchone()[0] or 0)

        self.seen = self.db.run(last)

    def _stop(self, broken: bool = False) -> None:
        if self._link is not None:
            self.db.give_back(self._link, broken=broken)
            self._link = None

    def get(self, timeout: float) -> list[Notice]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        try:
            if self.seen < 0 or (self.db.pg and self._link is None):
                self._stop(broken=True)
                self._start()  # what was sent while the connection was lost is missed
            while True:
                found = self.db.run(self._read)
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._link is not None:
                    conn = self._link.dbapi_connection
                    if not drain_notifications(conn):
                        wait_notification(conn, remaining)
                else:
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, MAX_POLL_INTERVAL)
        except (ConnectionError, self.db.dbapi.Error):
            # The caller polls again; the connection is made again then.
            self._stop(broken=True)
            self.seen = -1
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            return []

    def _read(self, cur: Any) -> list[Notice]:
        cur.execute(f"SELECT id, routing_key, headers, body FROM {self.table} "
                    "WHERE exchange = %s AND id > %s ORDER BY id LIMIT 1000",
                    [self.exchange, self.seen])
        rows = cur.fetchall()
        if not rows:
            return []
        self.seen = int(rows[-1][0])
        return [Notice(key, body, _headers(headers)) for _, key, headers, body in rows
                if any(topic_matches(p, key) for p in self.patterns)]

    def close(self) -> None:
        self._stop()


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
