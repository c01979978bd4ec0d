"""``redis://``: results in Celery's layout, ``celery-task-meta-<id>`` plus a PUBLISH.

A waiting ``get()`` is woken by the PUBLISH on the key's channel, never by polling. Each
process keeps one pub/sub connection and one reader thread for all of its waiters, as
Celery's client does, so Celery clients and celeriac workers (and the reverse) mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import states
from ..exceptions import ImproperlyConfigured
from ..utils.pid import current_pid
from ..utils.redis import RedisConnector, is_sentinel_url, process_lock
from .base import GROUP_KEY_PREFIX, Backend, BackendOptions, ChordPart, done_at

logger = logging.getLogger(__name__)

KEY_PREFIX = "celery-task-meta-"

# One header task's completion, atomically (Celery 5.7's keys; see CELERY-WIRE 3.7).
# KEYS: .j .t .s .d .c   ARGV: index, member, dedup token, expires, claim token
# Returns the ordered members when this call completed the chord, else nil.
_CHORD_PART = """
if redis.call('GET', KEYS[5]) == 'done' then return nil end
if redis.call('SISMEMBER', KEYS[4], ARGV[3]) == 1 then return nil end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
local size = tonumber(redis.call('GET', KEYS[3]) or '0')
local extra = tonumber(redis.call('GET', KEYS[2]) or '0')
if size > 0 and count >= size + extra then
  if redis.call('SET', KEYS[5], ARGV[5], 'NX', 'EX', 300) then
    return redis.call('ZRANGE', KEYS[1], 0, -1)
  end
end
return nil
"""

#: keys one SCAN of ``recent_results`` asks Redis to look at
RECENT_SCAN_COUNT = 1000
#: SCANs one ``recent_results`` call makes at most
RECENT_SCAN_ROUNDS = 20

# How long the reader waits for a message before checking whether it should stop.
READ_INTERVAL = 1.0

# A waiter that heard nothing for this long reads its key itself. Pub/sub wakes every
# waiter at once in the normal case; this only bounds the wait when a notification was
# lost (a connection dropped in a window no bookkeeping can see), so a result that is
# stored is never waited on until the caller's timeout.
BACKSTOP_INTERVAL = 5.0


def _backstop_steps(timeout: float | None) -> Iterator[float]:
    """How long to wait for a notification before each backstop read, until
    ``timeout`` runs out (never, for None)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            yield BACKSTOP_INTERVAL
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield min(remaining, BACKSTOP_INTERVAL)


class _Slot:
    """One waiting ``get()``: set once a ready result for its task arrived."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: bytes | None = None

    def wake(self, data: bytes) -> None:
        """Called on the reader thread."""
        self.data = data
        self.event.set()


class _AsyncSlot(_Slot):
    """One awaiting ``aget()``: its future is resolved on its own event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.future: asyncio.Future[bytes] = loop.create_future()

    def wake(self, data: bytes) -> None:
        super().wake(data)
        try:
            self.loop.call_soon_threadsafe(self._resolve, data)
        except RuntimeError:  # the loop closed: nobody is waiting any more
            pass

    def _resolve(self, data: bytes) -> None:
        if not self.future.done():
            self.future.set_result(data)


class _Channel:
    __slots__ = ("confirmed", "slots")

    def __init__(self) -> None:
        self.slots: list[_Slot] = []
        self.confirmed = False


class _Listener:
    """The pub/sub connection of one process and the thread that reads it.

    A waiter sends SUBSCRIBE and then GETs the key. A result published between that GET
    and the server processing the SUBSCRIBE would be missed, so once a channel's
    subscription is confirmed the reader GETs the key again for everyone registered by
    then.
    """

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.pid = os.getpid()
        self.lock = threading.Lock()  # guards channels, inflight, conn and every send
        self.channels: dict[bytes, _Channel] = {}
        # SUBSCRIBE/UNSUBSCRIBE sent on the current connection and not yet answered: a
        # subscription counts as confirmed only when none is pending, because a reply to
        # an older SUBSCRIBE says nothing about a later UNSUBSCRIBE + SUBSCRIBE.
        self.inflight: dict[bytes, int] = {}
        self.conn: Any = None
        # Set by redis-py's connect callback when it reconnects our connection on its own
        # (a send or a poll on a socket another thread just closed): the new socket holds
        # no subscriptions, so the reader must start over as after a drop.
        self.silently_reconnected = False
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="celeriac-redis-results",
                                       daemon=True)
        self.thread.start()

    # -- waiter side ---------------------------------------------------------------
    def _join(self, key: bytes, slot: _Slot) -> None:
        with self.lock:
            channel = self.channels.get(key)
            if channel is None:
                channel = self.channels[key] = _Channel()
                self._send("SUBSCRIBE", key)
            channel.slots.append(slot)

    async def await_key(self, key: bytes, timeout: float | None) -> bytes | None:
        """``wait`` for asyncio code: the event loop runs on while the result comes."""
        slot = _AsyncSlot(asyncio.get_running_loop())
        self._join(key, slot)
        try:
            # One quick read on the loop; its round trip is shorter than a thread hop.
            data = self.backend._get_key(key)
            if self.backend._is_ready(data):
                return data
            for step in _backstop_steps(timeout):
                try:
                    return await asyncio.wait_for(asyncio.shield(slot.future), step)
                except asyncio.TimeoutError:
                    data = self.backend._get_key(key)
                    if self.backend._is_ready(data):
                        return data
            return slot.data
        finally:
            self._leave(key, slot)

    def wait(self, key: bytes, timeout: float | None) -> bytes | None:
        slot = _Slot()
        self._join(key, slot)
        try:
            # Look while the SUBSCRIBE travels, not before sending it: a result stored
            # long ago returns now, and a fresh one costs one round trip less. One stored
            # after this GET but before the subscription holds is caught by the reader's
            # GET on confirmation.
            data = self.backend._get_key(key)
            if self.backend._is_ready(data):
                return data
            for step in _backstop_steps(timeout):
                if slot.event.wait(step):
                    return slot.data
                data = self.backend._get_key(key)
                if self.backend._is_ready(data):
                    return data
            return slot.data
        finally:
            self._leave(key, slot)

    def _leave(self, key: bytes, slot: _Slot) -> None:
        with self.lock:
            channel = self.channels.get(key)
            if channel is None or slot not in channel.slots:
                return
            channel.slots.remove(slot)
            if not channel.slots:
                del self.channels[key]
                self._send("UNSUBSCRIBE", key)

    def _send(self, command: str, *keys: bytes) -> None:
        # Called with the lock held. Without a connection there is nothing to do: the
        # reader subscribes to every channel when it (re)connects.
        # A closed connection is left closed: redis-py would silently reconnect it on
        # send, without the subscriptions the reader must restore.
        if self.conn is None or not self.conn.is_connected:
            return
        for key in keys:
            self.inflight[key] = self.inflight.get(key, 0) + 1
        try:
            self.conn.send_command(command, *keys, check_health=False)
        except Exception:
            logger.debug("result pub/sub send failed; the reader reconnects", exc_info=True)

    # -- reader side ---------------------------------------------------------------
    def _run(self) -> None:
        pause = 0.1
        while not self.stopped:
            conn = self.conn
            try:
                if conn is None:
                    self._connect()
                    pause = 0.1
                    continue
                if not conn.is_connected:
                    raise OSError("pub/sub connection closed")
                readable = conn.can_read(timeout=READ_INTERVAL)
                if self.silently_reconnected:
                    raise OSError("pub/sub connection was reopened without subscriptions")
                if not readable:
                    continue
                reply = conn.read_response(disconnect_on_error=False)
                self._handle(reply)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any error
                if self.stopped:
                    break
                logger.warning("result pub/sub connection failed: %r; reconnecting", exc)
                self._drop(conn)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _drop(self, conn: Any) -> None:
        # The next connection subscribes to every channel again and re-reads each key,
        # which also covers results published while no connection was listening.
        with self.lock:
            if self.conn is conn:
                self.conn = None
        if conn is not None:
            _quiet(conn.disconnect)

    def _connect(self) -> None:
        conn = self.backend._redis.new_connection()
        conn.connect()
        conn.register_connect_callback(self._on_reconnect)
        with self.lock:
            self.silently_reconnected = False
            self.conn = conn
            self.inflight.clear()
            keys = list(self.channels)
            for channel in self.channels.values():
                channel.confirmed = False
            if keys:
                self._send("SUBSCRIBE", *keys)

    def _on_reconnect(self, conn: Any) -> None:
        # Runs inside redis-py, possibly on a waiter's thread holding self.lock: set a
        # flag and nothing more.
        if conn is self.conn:
            self.silently_reconnected = True

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, key, data = reply[0], reply[1], reply[2]
        if kind == b"message":
            if self.backend._is_ready(data):
                self._dispatch(key, data)
        elif kind in (b"subscribe", b"unsubscribe"):
            with self.lock:
                pending = max(self.inflight.get(key, 0) - 1, 0)
                self.inflight[key] = pending
                if not pending:
                    del self.inflight[key]
                channel = self.channels.get(key)
                if kind != b"subscribe" or pending or channel is None or channel.confirmed:
                    return
                channel.confirmed = True
            stored = self.backend._get_key(key)
            if stored is not None and self.backend._is_ready(stored):
                self._dispatch(key, stored)

    def _dispatch(self, key: bytes, data: bytes) -> None:
        with self.lock:
            channel = self.channels.pop(key, None)
            if channel is None:
                return
            self._send("UNSUBSCRIBE", key)
        for slot in channel.slots:
            slot.wake(data)

    def close(self) -> None:
        self.stopped = True
        with self.lock:
            conn, self.conn = self.conn, None
        if conn is not None and self.pid == os.getpid():
            _quiet(conn.disconnect)


_CERT_REQS = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional",
              ssl.CERT_REQUIRED: "required"}


def with_ssl_options(url: str, options: dict[str, Any]) -> str:
    """``url`` with the TLS options of ``redis_backend_use_ssl`` added to its query.

    Options the URL already gives win, as in Celery. ``ssl_cert_reqs`` may be an
    ``ssl.CERT_*`` constant or its name.

    Raises:
        ImproperlyConfigured: TLS options for a plain ``redis://`` URL (as Celery, which
            asks for ``rediss://``).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "rediss":
        raise ImproperlyConfigured(
            f"redis_backend_use_ssl is set but the result backend URL is {parts.scheme}://; "
            "a TLS connection needs a rediss:// URL")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in options.items():
        if key == "ssl_cert_reqs":
            value = _CERT_REQS.get(value, value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        query.setdefault(key, str(value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (a ``global_keyprefix`` may
    hold ``*``, ``?`` or ``[``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _quiet(fn: Any) -> None:
    with contextlib.suppress(Exception):
        fn()


class RedisBackend(Backend):
    """Celery's Redis result layout.

    Transport options (``result_backend_transport_options``) honoured:
    ``global_keyprefix`` and the connection options of :mod:`celeriac.utils.redis`,
    which win over the ``redis_*`` settings (``redis_socket_timeout``...); the URL's
    query wins over both. A ``sentinel://`` URL list needs ``master_name`` there.
    """

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        transport = {**self.options.connection, **(self.options.transport_options or {})}
        if self.options.ssl:
            if is_sentinel_url(url):
                # A sentinel URL has no rediss:// spelling: TLS to the master goes by option.
                transport.setdefault("ssl", self.options.ssl)
            else:
                url = with_ssl_options(url, self.options.ssl)
        self._redis = RedisConnector(url, transport, "the Redis result backend",
                                     "result_backend_transport_options")
        self.prefix: str = transport.get("global_keyprefix") or ""
        self._listener: _Listener | None = None
        self._chord_script: Any = None

    def key_for(self, task_id: str) -> bytes:
        """The key (and pub/sub channel) of ``task_id``'s meta."""
        return f"{self.prefix}{KEY_PREFIX}{task_id}".encode()

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        key = self.key_for(task_id)
        ttl = ("EX", max(int(expires), 1)) if expires else ()
        try:
            self._redis.line().call(("SET", key, data, *ttl), ("PUBLISH", key, data))
            return
        except Exception:  # noqa: BLE001 - the pooled client below retries
            logger.debug("direct result write failed; using the pool", exc_info=True)
        pipe = self._redis.client().pipeline(transaction=False)
        pipe.set(key, data, ex=max(int(expires), 1) if expires else None)
        pipe.publish(key, data)
        pipe.execute()

    def _get(self, task_id: str) -> bytes | None:
        return self._get_key(self.key_for(task_id))

    def _get_key(self, key: bytes) -> bytes | None:
        return self._redis.client().get(key)

    def _delete(self, task_id: str) -> None:
        self._redis.client().delete(self.key_for(task_id))

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> bytes | None:
        key = self.key_for(task_id)
        got = self._get_listener().wait(key, timeout)
        # On timeout, one last look: a result stored without a PUBLISH still counts.
        return got if got is not None else self._get_key(key)

    async def _await(self, task_id: str, timeout: float | None,
                     interval: float) -> bytes | None:
        key = self.key_for(task_id)
        got = await self._get_listener().await_key(key, timeout)
        return got if got is not None else self._get_key(key)

    def get_many_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        client = self._redis.client()
        metas: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), 1000):
            ids = task_ids[start:start + 1000]
            found = self._retrying(client.mget, [self.key_for(i) for i in ids])
            for task_id, data in zip(ids, found):
                metas.append(self._decode(data) if data is not None else {
                    "status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "task_id": task_id})
        return metas

    def recent_results(self, since: float, limit: int = 1000, cursor: str | None = None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """See ``Backend.recent_results``; here a page may hold up to one SCAN's worth
        more than ``limit``.

        Cost: Redis keeps no index by time, so a pass is a SCAN of the whole db: MATCH
        filters keys after Redis walked them, so every key of the db (results, queues,
        anything else) is visited once per pass, ``RECENT_SCAN_COUNT`` per round trip,
        plus an MGET of the result keys found. One call makes at most
        ``RECENT_SCAN_ROUNDS`` SCANs (20,000 keys walked, each SCAN a short O(count)
        step for the server), so a db of N keys takes about N / 20,000 calls; the pass
        goes on from the cursor, whose meaning is Redis's own SCAN cursor. A key
        written while a pass runs may be missed by it (SCAN promises only the keys that
        were there throughout).
        """
        client = self._redis.client()
        pattern = _glob_escape(self.prefix) + KEY_PREFIX + "*"
        skip = len(self.prefix.encode()) + len(KEY_PREFIX)
        position = int(cursor or 0)
        metas: list[dict[str, Any]] = []
        for _ in range(RECENT_SCAN_ROUNDS):
            position, keys = self._retrying(client.scan, position, pattern,
                                            RECENT_SCAN_COUNT)
            if keys:
                for key, data in zip(keys, self._retrying(client.mget, keys)):
                    meta = self._recent_meta(data, since)
                    if meta is not None:
                        meta.setdefault("task_id", bytes(key)[skip:].decode())
                        metas.append(meta)
            if not int(position):
                return metas, None
            if len(metas) >= limit:
                break
        return metas, str(int(position))

    def _recent_meta(self, data: bytes | None, since: float) -> dict[str, Any] | None:
        if data is None:  # expired between SCAN and MGET
            return None
        try:
            meta = self._decode(data)
        except Exception:  # noqa: BLE001 - one unreadable result does not end the pass
            logger.debug("recent_results: an undecodable result is skipped", exc_info=True)
            return None
        if not isinstance(meta, dict) or meta.get("status") not in states.READY_STATES:
            return None
        done = done_at(meta)
        return meta if done is not None and done >= since else None

    # -- groups and chords ----------------------------------------------------------
    def group_key(self, group_id: str) -> bytes:
        return f"{self.prefix}{GROUP_KEY_PREFIX}{group_id}".encode()

    def save_group(self, group_id: str, value: Any) -> None:
        key = self.group_key(group_id)
        data = self._encode({"result": value})
        expires = self.options.expires

        def write() -> None:
            pipe = self._redis.client().pipeline(transaction=False)
            pipe.set(key, data, ex=max(int(expires), 1) if expires else None)
            pipe.publish(key, data)
            pipe.execute()

        self._retrying(write)

    def restore_group(self, group_id: str) -> Any:
        data = self._retrying(self._get_key, self.group_key(group_id))
        return None if data is None else self._decode(data).get("result")

    def delete_group(self, group_id: str) -> None:
        self._retrying(self._redis.client().delete, self.group_key(group_id))

    def set_chord_size(self, group_id: str, size: int) -> None:
        key = self.group_key(group_id)
        expires = self.options.chord_ttl
        pipe = self._redis.client().pipeline(transaction=False)
        pipe.delete(key + b".c")
        pipe.set(key + b".s", size, ex=max(int(expires), 1) if expires else None)
        pipe.execute()

    def add_to_chord(self, group_id: str) -> int:
        # Celery's layout: tasks added to a chord are counted in ``.t``, beside ``.s``.
        key = self.group_key(group_id)
        pipe = self._redis.client().pipeline(transaction=True)
        pipe.get(key + b".s")
        pipe.incr(key + b".t")
        if self.options.chord_ttl:
            pipe.expire(key + b".t", max(int(self.options.chord_ttl), 1))
        size, extra = pipe.execute()[:2]
        return int(size or 0) + int(extra)

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        key = self.group_key(group_id)
        member = self._chord_member(index, task_id, state, result)
        client = self._redis.client()
        if self._chord_script is None:
            self._chord_script = client.register_script(_CHORD_PART)
        keys = [key + b".j", key + b".t", key + b".s", key + b".d", key + b".c"]
        members = self._chord_script(keys=keys, args=[
            index, member, f"{task_id}:{index}", int(self.options.chord_ttl or 0),
            f"{os.getpid()}:{task_id}"], client=client)
        if not members:
            return None
        pipe = client.pipeline(transaction=True)
        pipe.delete(*keys[:4])
        pipe.set(keys[4], "done", ex=300)
        pipe.execute()
        return self._chord_parts(list(members))

    def _get_listener(self) -> _Listener:
        listener = self._listener
        if listener is not None and listener.pid == current_pid():
            return listener
        with process_lock():
            if self._listener is None or self._listener.pid != os.getpid():
                # A child after fork has no reader thread; it starts its own.
                self._listener = _Listener(self)
            return self._listener

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._redis.close()
