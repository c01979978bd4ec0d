"""``rpc://``: results sent back as messages to the process that sent the task, over
RabbitMQ, as Celery 5.7's rpc backend does (CELERY-WIRE §4.4).

- **The client** has one reply queue per process and app, named by its ``oid`` (a
  UUID), declared as Celery 5.7 declares it (durable, auto-delete, not exclusive,
  ``x-expires`` = ``result_expires``) before the first task it sends; every task it sends
  carries ``reply_to=<oid>`` and ``correlation_id=<task id>``. ``get()`` is woken by the
  reply: one thread at a time reads the queue and files every reply under its task, so
  several results (a group's) wait on one queue and one connection, and replies for
  tasks nobody waits on yet are kept for their own ``get()``.
- **The worker** publishes each state (STARTED, RETRY, custom states, SUCCESS, FAILURE,
  REVOKED) to the default exchange with routing key = the request's ``reply_to``,
  ``correlation_id`` = the task id, the meta JSON of the Redis backend (``task_id``
  included), delivery mode 1 (2 with ``result_persistent``), and waits for RabbitMQ's
  confirm. Nothing is published when the request has no ``reply_to`` or ignores its
  result.

A result is a message: it is read once, by the process that sent the task, and nothing
is stored anywhere else. Another process cannot read it, a result that arrives while
its client is gone is dropped with the queue, and chords (which need a shared counter)
are refused as Celery refuses them. ``rpc://`` means "the broker's RabbitMQ": the
connection comes from ``broker_url`` (``broker_write_url``); ``rpc://user:pw@host/vhost``
names another server instead.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from .. import serialization, states
from ..exceptions import BackendError, ImproperlyConfigured, ResultNotSerializable, TimeoutError
from ..utils import amqp as amqp_util
from ..utils.urls import mask_password, scheme_of
from .base import Backend, BackendOptions, ChordPart, is_connection_error

logger = logging.getLogger(__name__)

# socket.timeout: what py-amqp raises when nothing came in time (the module's own
# ``TimeoutError`` is celeriac's, raised by get())
_SocketTimeout = builtins.TimeoutError

#: Celery's message for a chord on this backend, kept word for word in spirit: the
#: user's fix is the same whichever framework raised it
NO_CHORDS = (
    'The "rpc" result backend does not support chords! A group chained with a task is '
    "also upgraded to a chord, as that pattern requires synchronization. Result backends "
    "that support chords: Redis, SQLite (and, in Celery, Database and Memcached)."
)

NO_GROUPS = ("the rpc:// result backend cannot save a group (GroupResult.save/restore): "
             "results are messages to one client, nothing is stored; keep the GroupResult "
             "in the process that sent the group, or use a Redis or SQLite result backend")

#: the most replies kept per process for tasks nobody has read yet, or read already
#: (a later ``AsyncResult(id).get()`` in the same process finds them); beyond it the
#: oldest go, with one warning
KEEP_REPLIES = 100_000

#: a reader holds the reply connection at most this long at a time, so that a sender
#: that must re-declare the queue, or a waiter whose timeout is shorter, is not held up
DRAIN_SLICE = 0.5

#: a reply queue declared less than this long ago, on a connection used since, is taken
#: as still there; after it, the next send declares it again (one round trip), which
#: also proves the connection alive after a quiet spell
REDECLARE_AFTER = 5.0

#: how long a publish waits for RabbitMQ's confirm
CONFIRM_TIMEOUT = 30.0


def amqp_url_for(url: str, broker_url: str) -> str:
    """The AMQP URL an ``rpc://`` URL connects to: the broker's for a bare ``rpc://``
    (as Celery, whose rpc backend always uses the broker connection), else the URL's own
    server.

    Raises:
        ImproperlyConfigured: a bare ``rpc://`` whose broker is not RabbitMQ.
    """
    rest = url.split("://", 1)[1] if "://" in url else ""
    if rest.strip("/"):
        return "amqp://" + rest
    schemes = {scheme_of(u.strip()) for u in broker_url.split(";") if u.strip()}
    if not schemes or not schemes <= set(amqp_util.SCHEMES):
        raise ImproperlyConfigured(
            "result_backend='rpc://' sends results as messages over RabbitMQ, the broker's "
            f"connection, but the broker is {mask_password(broker_url) or 'not set'!r}: use "
            "an amqp:// broker_url, or a result backend the broker's store can hold "
            "(redis://..., sqlite:///...)")
    return broker_url


class _Link:
    """One py-amqp connection, made on first use and again after a loss."""

    def __init__(self, url: str, options: dict[str, Any], feature: str) -> None:
        self.amqp = amqp_util.import_amqp(feature)
        self.endpoints = amqp_util.Endpoints(url, options.get("failover_strategy"))
        self.options = options
        self.feature = feature
        self.conn: Any = None
        self.channel: Any = None
        self.url = self.endpoints.urls[0]

    def open_channel(self) -> Any:
        if self.conn is None:
            # No heartbeats: nothing would send them while the process does other work,
            # and a dead connection shows at its next use, which reconnects.
            self.conn, self.url = amqp_util.connect(self.endpoints, self.options,
                                                    self.feature, heartbeat=0)
            self.channel = None
        if self.channel is None:
            self.channel = self.conn.channel()
        return self.channel

    def is_connection_error(self, exc: BaseException) -> bool:
        return (amqp_util.is_connection_error(self.amqp, exc)
                or isinstance(exc, (self.amqp.exceptions.ChannelError, ConnectionError)))

    def lost(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # noqa: BLE001 - already broken: only the socket is left
                pass

    def close(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                try:
                    conn.collect()
                except Exception:  # noqa: BLE001
                    pass


class RPCBackend(Backend):
    """Results as reply messages on RabbitMQ (see the module's docstring)."""

    persistent = False

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        self._amqp_url = amqp_url_for(url, self.options.broker_url)
        amqp_util.import_amqp("the rpc:// result backend")  # a missing extra fails now
        self.delivery_mode = 2 if self.options.persistent else 1
        self._reset()

    def _reset(self) -> None:
        # Everything a process owns: a forked child starts again with its own queue, its
        # own connections and no replies (its parent's are its parent's).
        self._pid = os.getpid()
        #: the reply queue's name, and the reply_to of every task this process sends
        self.oid = str(uuid.uuid4())
        self._cond = threading.Condition(threading.Lock())  # guards the replies
        self._replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._draining = False
        self._warned_full = False
        self._io = threading.RLock()  # guards the reply connection
        self._reply: _Link | None = None
        self._declared = False
        self._consuming = False
        self._last_io = 0.0
        self._outage = False
        self._sent = False
        self._pub_lock = threading.Lock()
        self._publisher: _Link | None = None

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The parent's sockets are not ours to close: forget them.
            self._reset()

    def _link(self, feature: str) -> _Link:
        return _Link(self._amqp_url, dict(self.options.broker_options), feature)

    # -- the client's side: the reply queue ------------------------------------------------
    def queue_arguments(self) -> dict[str, Any]:
        """The reply queue's arguments, as Celery 5.7 declares them."""
        expires = self.options.expires
        return {"x-expires": int(expires * 1000)} if expires else {}

    def reply_to(self, parent: Any = None, ignore_result: bool | None = None) -> str:
        """The ``reply_to`` of a task about to be sent; declares the reply queue first.

        Args:
            parent: the request of the task running in this process, if any. A task
                sent from a running task (the next step of a chain, a callback, a
                subtask) answers whoever sent that task, as Celery's chain steps (frozen
                by the client with its ``reply_to``) do, so that ``chain.get()`` and
                ``result.children`` work from the client. A task sent by a worker's task
                that had no ``reply_to`` gets this process's queue name, undeclared, as
                a Celery prefork worker does: its results are dropped.
            ignore_result: nothing will be published for the task: no need to declare.
        """
        self._check_fork()
        if parent is not None:
            inherited = getattr(parent, "reply_to", None)
            if inherited:
                return str(inherited)
            if not getattr(parent, "is_eager", False):
                self._sent = True
                return self.oid
        self._sent = True
        if not ignore_result:
            self._declare()
        return self.oid

    def _declare(self) -> None:
        if self._declared and not self._draining:
            self._take_in()
        if self._declared and (self._draining
                               or time.monotonic() - self._last_io < REDECLARE_AFTER):
            return
        with self._io:
            for attempt in (1, 2):
                try:
                    self._declare_queue()
                    return
                except Exception as exc:
                    link = self._reply
                    if link is None or not link.is_connection_error(exc):
                        raise
                    self._reply_lost()
                    if attempt == 2:
                        raise ConnectionError(
                            f"rpc:// result backend: cannot declare the reply queue "
                            f"{self.oid} at {mask_password(link.url)}: "
                            f"{amqp_util.describe(exc)}") from exc

    def _take_in(self) -> None:
        """Handle what RabbitMQ already sent on the reply connection (no round trip): a
        consumer cancelled because the queue was deleted, or the connection closed, is
        seen before the next task is sent, so the queue is declared again in time."""
        link = self._reply
        if link is None or link.conn is None or not self._io.acquire(blocking=False):
            return  # nothing to read, or the reading thread is on it
        try:
            for _ in range(1000):
                link.conn.drain_events(timeout=0)
        except _SocketTimeout:
            pass
        except Exception as exc:
            if not link.is_connection_error(exc):
                raise
            self._read_failed(exc)
        finally:
            self._io.release()

    def _declare_queue(self) -> Any:
        # with self._io held
        if self._reply is None:
            self._reply = self._link("the rpc:// result backend")
        ch = self._reply.open_channel()
        ch.queue_declare(self.oid, durable=True, exclusive=False, auto_delete=True,
                         arguments=self.queue_arguments() or None)
        self._declared = True
        self._last_io = time.monotonic()
        return ch

    def _consume(self) -> Any:
        # with self._io held; the reply connection, consuming the reply queue
        if not self._consuming or self._reply is None or self._reply.conn is None:
            ch = self._declare_queue()
            # no_ack, as Celery's client: a reply is ours the moment it is delivered
            ch.basic_consume(self.oid, no_ack=True, callback=self._on_reply,
                             on_cancel=self._on_cancel)
            self._consuming = True
        assert self._reply is not None
        return self._reply.conn

    def _on_cancel(self, consumer_tag: Any) -> None:
        # The queue went (deleted by hand, or by RabbitMQ after a loss): the next read
        # declares it again. Replies sent meanwhile are gone with it.
        logger.warning("rpc:// reply queue %s was deleted; declaring it again", self.oid)
        self._consuming = False
        self._declared = False

    def _reply_lost(self) -> None:
        if self._reply is not None:
            self._reply.lost()
        self._consuming = False
        self._declared = False

    def _on_reply(self, message: Any) -> None:
        # Runs inside drain_events, on the reading thread.
        props = message.properties or {}
        body = message.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            meta = serialization.loads(bytes(body), props.get("content_type")
                                       or self._serializer.content_type, self._accept)
        except Exception as exc:  # noqa: BLE001 - one bad reply must not stop the reader
            logger.error("rpc:// reply %s dropped: %s", props.get("correlation_id"), exc)
            return
        if not isinstance(meta, dict) or "status" not in meta:
            logger.error("rpc:// reply %s dropped: not a result meta",
                         props.get("correlation_id"))
            return
        task_id = meta.get("task_id") or props.get("correlation_id")
        if not task_id:
            logger.error("rpc:// reply without a task id dropped")
            return
        self._file(str(task_id), meta)

    def _file(self, task_id: str, meta: dict[str, Any]) -> None:
        with self._cond:
            known = self._replies.get(task_id)
            # A late STARTED (a redelivered message run again) does not hide a result.
            if known is None or known.get("status") not in states.READY_STATES \
                    or meta.get("status") in states.READY_STATES:
                self._replies[task_id] = meta
                self._replies.move_to_end(task_id)
            while len(self._replies) > KEEP_REPLIES:
                self._replies.popitem(last=False)
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "rpc:// client holds more than %d replies that were never read; "
                        "the oldest are dropped (send tasks whose results you do not read "
                        "with ignore_result=True)", KEEP_REPLIES)
            self._cond.notify_all()

    def _drain(self, timeout: float) -> None:
        """Read replies for up to ``timeout`` seconds (returns after the first).

        Called by one thread at a time (the one that set ``_draining``). A connection
        error is logged and forgotten: the next call connects and declares again.
        """
        with self._io:
            try:
                conn = self._consume()
                conn.drain_events(timeout=timeout)
            except _SocketTimeout:
                pass
            except Exception as exc:
                link = self._reply
                if link is None or not link.is_connection_error(exc):
                    raise
                self._read_failed(exc)
                return
            self._last_io = time.monotonic()
            if self._outage:
                self._outage = False
                logger.warning("rpc:// reply connection to %s is back", self._where())

    def _where(self) -> str:
        return mask_password(self._reply.url) if self._reply is not None else "RabbitMQ"

    def _read_failed(self, exc: BaseException) -> None:
        # Said once per outage; the waiters retry quietly until it ends or they time out.
        log = logger.debug if self._outage else logger.warning
        self._outage = True
        log("rpc:// reply connection to %s failed (%s); reconnecting (replies sent while "
            "the reply queue did not exist are lost)", self._where(), amqp_util.describe(exc))
        self._reply_lost()

    def _wait_meta(self, task_id: str, timeout: float | None) -> dict[str, Any] | None:
        """The latest meta of ``task_id`` once it is ready or ``timeout`` passed."""
        self._check_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while True:
            with self._cond:
                while True:
                    meta = self._replies.get(task_id)
                    if meta is not None and meta.get("status") in states.READY_STATES:
                        return meta
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return meta
                    if not self._draining:
                        self._draining = True
                        break
                    # Another thread reads; it wakes us at each reply it files.
                    self._cond.wait(remaining)
            step = DRAIN_SLICE if remaining is None else min(DRAIN_SLICE, remaining)
            failed = False
            try:
                self._drain(step)
                failed = not self._consuming
            finally:
                with self._cond:
                    self._draining = False
                    self._cond.notify_all()
            if failed:
                # the broker is away: try again shortly, never past the deadline
                left = None if deadline is None else deadline - time.monotonic()
                time.sleep(pause if left is None else max(0.0, min(pause, left)))
                pause = min(pause * 2, 2.0)
            else:
                pause = 0.05

    def _poll(self) -> None:
        """Take in the replies already here, without waiting."""
        self._check_fork()
        if not self._sent:
            return
        with self._cond:
            if self._draining:
                return  # the reader files them
            self._draining = True
        try:
            self._drain(0)
        finally:
            with self._cond:
                self._draining = False
                self._cond.notify_all()

    # -- reading (the Backend contract) ------------------------------------------------------
    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        """The latest state this process received for ``task_id`` (PENDING if none).

        In a process that has sent no task, this connects to RabbitMQ, which is how a
        worker's start-up check learns that the backend is reachable.
        """
        self._check_fork()
        if self._sent:
            self._poll()
        else:
            self._probe()
        with self._cond:
            meta = self._replies.get(task_id)
        if meta is None:
            return {"status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "task_id": task_id}
        return meta

    def get_many_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        self._check_fork()
        if self._sent:
            self._poll()
        with self._cond:
            found = [self._replies.get(task_id) for task_id in task_ids]
        return [meta if meta is not None else {
            "status": states.PENDING, "result": None, "traceback": None, "children": [],
            "task_id": task_id} for task_id, meta in zip(task_ids, found)]

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        """Block until a ready reply for ``task_id`` arrived (never polls RabbitMQ).

        Raises:
            TimeoutError: none within ``timeout`` seconds.
            BackendError: this process sent no task, so no reply can come to it.
        """
        self._check_fork()
        if not self._sent:
            with self._cond:
                known = self._replies.get(task_id)
            if known is None:
                raise BackendError(
                    f"cannot wait for task {task_id} with the rpc:// result backend: its "
                    "result goes to the process that sent it, and this process sent no "
                    "task (results are read once, by their sender only)")
        meta = self._wait_meta(task_id, timeout)
        if meta is None or meta.get("status") not in states.READY_STATES:
            raise TimeoutError(f"task {task_id} not ready after {timeout} seconds")
        return meta

    async def await_for(self, task_id: str, timeout: float | None = None,
                        interval: float = 0.5) -> dict[str, Any]:
        """``wait_for`` for asyncio code: the reading happens on a worker thread, a short
        slice at a time, so that a cancelled await does not leave a reader behind."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = 1.0 if left is None else min(1.0, left)
            try:
                return await asyncio.to_thread(self.wait_for, task_id, step, interval)
            except TimeoutError:
                if left is not None and left <= step:
                    raise TimeoutError(
                        f"task {task_id} not ready after {timeout} seconds") from None

    def forget(self, task_id: str) -> None:
        with self._cond:
            self._replies.pop(task_id, None)

    # -- storage primitives: a result is a message, nothing is stored ------------------------
    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        raise NotImplementedError("the rpc:// backend publishes results (store_result)")

    def _get(self, task_id: str) -> bytes | None:
        with self._cond:
            meta = self._replies.get(task_id)
        return None if meta is None else self._encode(meta)

    def _delete(self, task_id: str) -> None:
        self.forget(task_id)

    # -- the worker's side: publishing states ------------------------------------------------
    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None) -> dict[str, Any]:
        """Publish ``state`` to the reply queue named by ``request.reply_to``.

        Returns the meta; nothing is published when the request has no ``reply_to``
        (nobody listens) or ignores its result.
        """
        self._check_fork()
        meta = self._meta(task_id, result, state, traceback, request)
        reply_to = getattr(request, "reply_to", None) if request is not None else None
        if not reply_to or (request is not None and getattr(request, "ignore_result", False)):
            return meta
        correlation_id = task_id
        if getattr(request, "id", None) == task_id:
            correlation_id = getattr(request, "correlation_id", None) or task_id
        try:
            body = self._serializer.dumps(meta)
        except Exception as exc:
            failure = ResultNotSerializable(
                f"result of task {task_id} cannot be encoded with the "
                f"{self._serializer.name!r} result serializer: {exc}")
            meta = self._meta(task_id, self.prepare_exception(failure), states.FAILURE,
                              None, request)
            body = self._serializer.dumps(meta)
        self._publish_with_retries(str(reply_to), str(correlation_id), body, task_id)
        return meta

    def _publish_with_retries(self, reply_to: str, correlation_id: str, body: bytes,
                              task_id: str) -> None:
        # A connection that broke since the last publish is made again; a broker that
        # stays away is raised as a connection error, which the worker's outcome waits
        # out as for any result store.
        attempts = max(1, self.options.store_attempts)
        pause = 0.01
        for attempt in range(1, attempts + 1):
            try:
                self._publish(reply_to, correlation_id, body)
                return
            except Exception as exc:
                if not is_connection_error(exc) or attempt >= attempts:
                    if is_connection_error(exc) and not isinstance(exc, ConnectionError):
                        raise ConnectionError(
                            f"rpc:// result backend: cannot publish the result of {task_id}: "
                            f"{amqp_util.describe(exc)}") from exc
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _publish(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        with self._pub_lock:
            if self._publisher is None:
                self._publisher = self._link("the rpc:// result backend")
            link = self._publisher
            try:
                ch = link.open_channel()
                message = link.amqp.Message(
                    body, content_type=self._serializer.content_type,
                    content_encoding=self._serializer.content_encoding,
                    delivery_mode=self.delivery_mode, correlation_id=correlation_id,
                    application_headers={})
                # Not mandatory: a reply queue that is gone (its client exited) is the
                # normal end of a reply nobody waits for, and RabbitMQ confirms the drop.
                ch.basic_publish_confirm(message, exchange="", routing_key=reply_to,
                                         confirm_timeout=CONFIRM_TIMEOUT)
            except Exception as exc:
                if link.is_connection_error(exc) or isinstance(exc, OSError):
                    link.lost()
                    raise ConnectionError(
                        f"RabbitMQ at {mask_password(link.url)} is unreachable (publishing a "
                        f"result): {amqp_util.describe(exc)}") from exc
                raise

    def _probe(self) -> None:
        """Connect the publishing side, if not yet: the backend's reachability check."""
        with self._pub_lock:
            if self._publisher is None:
                self._publisher = self._link("the rpc:// result backend")
            link = self._publisher
            try:
                link.open_channel()
            except Exception:
                link.lost()
                raise

    # -- groups and chords: nothing is stored, nothing can be counted ------------------------
    def save_group(self, group_id: str, value: Any) -> None:
        raise NotImplementedError(NO_GROUPS)

    def restore_group(self, group_id: str) -> Any:
        raise NotImplementedError(NO_GROUPS)

    def delete_group(self, group_id: str) -> None:
        raise NotImplementedError(NO_GROUPS)

    def set_chord_size(self, group_id: str, size: int) -> None:
        raise NotImplementedError(NO_CHORDS)

    def add_to_chord(self, group_id: str) -> int:
        raise NotImplementedError(NO_CHORDS)

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        raise NotImplementedError(NO_CHORDS)

    def close(self) -> None:
        if self._pid != os.getpid():
            self._reset()
            return
        with self._io:
            if self._reply is not None:
                self._reply.close()
            self._reply = None
            self._consuming = self._declared = False
        with self._pub_lock:
            if self._publisher is not None:
                self._publisher.close()
            self._publisher = None


def removed_amqp_backend(url: str) -> ImproperlyConfigured:
    """The error for ``amqp://`` as a result backend URL (Celery 5 removed that backend,
    and Celery 5.7 refuses the URL as an unknown backend)."""
    return ImproperlyConfigured(
        f"result_backend={mask_password(url)!r}: the amqp:// result backend was removed in "
        "Celery 5 (Celery 5.7 refuses it as an unknown backend). Use result_backend="
        "'rpc://' for results sent back to the client over RabbitMQ, or a store such as "
        "redis://... or sqlite:///...")


__all__ = ["RPCBackend", "NO_CHORDS", "amqp_url_for", "removed_amqp_backend"]
