"""``cache+memcached://host:11211/``: results in memcached, in Celery's cache layout.

Celery's spellings all work: ``result_backend='cache+memcached://h1:11211;h2:11211/'``
(``cache+pylibmc://`` too), or ``result_backend='cache'`` with the ``cache_backend``
setting (``'memcached://127.0.0.1:11211/'``, ``'memcache://...'``, ``'pylibmc://...'``,
``'pymemcache://...'``, or ``'memory'`` for the in-process store). A result is the
result serializer's bytes under ``celery-task-meta-<id>``, a group under
``celery-taskset-meta-<id>``, stored with flags 0 as Celery's own pymemcache client
writes them, so Celery clients and workers read what celeriac stores, and the reverse.

memcached is a cache: it evicts under memory pressure and forgets everything when it
restarts, so a stored result may vanish and read as PENDING again. Where results must
stay until read, use Redis or a database backend instead.

memcached cannot notify, so ``get()`` polls with the base class's back-off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import warnings
import zlib
from typing import Any, Callable

from .. import states
from ..config import IgnoredSettingWarning
from ..exceptions import (
    BackendError,
    ImproperlyConfigured,
    MissingDependency,
    ResultNotSerializable,
)
from ..utils.pid import current_pid
from ..utils.redis import process_lock
from .base import GROUP_KEY_PREFIX, Backend, BackendOptions, ChordPart, _pauses

logger = logging.getLogger(__name__)

KEY_PREFIX = "celery-task-meta-"
#: Celery's chord counter on key-value backends (a chord its client sent)
CHORD_UNLOCK_PREFIX = "chord-unlock-"

#: memcached reads an expiry above 30 days as an absolute Unix time, not a duration
MAX_RELATIVE_TTL = 30 * 24 * 3600

#: the ``cache_backend`` names Celery accepts for memcached (all served by pymemcache)
MEMCACHED_NAMES = frozenset({"memcached", "memcache", "pylibmc", "pymemcache"})

DEFAULT_PORT = 11211

# memcached value flags, as python-memcached and pymemcache's pickle serde set them.
FLAG_PICKLE = 1
FLAG_COMPRESSED = 8

#: Celery's defaults for its pymemcache client: no wait is unbounded
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 5.0}

# cache_backend_options handed to pymemcache's pooled client unchanged.
_CLIENT_OPTIONS = frozenset({
    "connect_timeout", "timeout", "no_delay", "socket_keepalive", "key_prefix",
    "allow_unicode_keys", "encoding", "tls_context", "socket_module", "max_pool_size",
    "pool_idle_timeout", "lock_generator",
})
# Celery wraps its client in pymemcache's RetryingClient when ``retry_attempts`` is set.
_RETRY_OPTIONS = {"retry_attempts": "attempts", "retry_delay": "retry_delay",
                  "retry_for": "retry_for", "do_not_retry_for": "do_not_retry_for"}
# Options of pymemcache's HashClient, which celeriac does not use: it drops a server that
# fails from its ring, so a result stored meanwhile lands on another server, where
# clients that still count the first one never look. celeriac keeps every server in the
# ring and raises instead, so the store is retried.
_HASH_CLIENT_ONLY = frozenset({"hasher", "retry_timeout", "dead_timeout", "use_pooling"})
# Options that would make a failed read look like a missing result, or unpickle.
_REFUSED = {
    "ignore_exc": "it makes an unreachable memcached look like a missing result "
                  "(PENDING) and drops stores that should be retried",
    "serde": "celeriac writes the result serializer's bytes, as Celery does; a serde "
             "would change what other clients read, and pymemcache's own pickles",
    "serializer": "see serde", "deserializer": "see serde",
}
# pylibmc ``behaviors`` pymemcache has an equivalent for: name -> (option, convert)
_BEHAVIORS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "tcp_nodelay": ("no_delay", bool),
    "connect_timeout": ("connect_timeout", lambda ms: ms / 1000),
    "receive_timeout": ("timeout", lambda us: us / 1_000_000),
    "send_timeout": ("timeout", lambda us: us / 1_000_000),
}


def _missing() -> MissingDependency:
    return MissingDependency("pymemcache", "memcached", "the memcached result backend")


def memcached_expire(seconds: float | None, now: float | None = None) -> int:
    """The expiry to send to memcached for a TTL of ``seconds`` (None or 0: never).

    memcached reads any value above 30 days as an absolute Unix time, so a longer TTL is
    sent as ``now + seconds``; a fraction of a second rounds up, as 0 means "never".
    """
    if not seconds or seconds <= 0:
        return 0
    ttl = math.ceil(seconds)
    if ttl > MAX_RELATIVE_TTL:
        return int((time.time() if now is None else now) + ttl)
    return ttl


def parse_servers(spec: str) -> tuple[str, list[str]]:
    """``(cache kind, servers)`` from ``memcached://h1:11211;h2:11211/`` (Celery's form).

    A server is ``host``, ``host:port``, ``[ipv6]:port``, or a UNIX socket path.

    Raises:
        ImproperlyConfigured: a query string (client options go in cache_backend_options).
    """
    kind, sep, rest = spec.partition("://")
    kind = kind.lower()
    if not sep:
        return kind, []
    if "?" in rest:
        raise ImproperlyConfigured(
            f"cache backend {spec!r}: memcached URLs take no query; give client options "
            "in cache_backend_options")
    servers = [s.strip() for s in rest.rstrip("/").split(";")]
    return kind, [s for s in servers if s]


def server_spec(server: str) -> tuple[str, int] | str:
    """pymemcache's address for one server of the URL: ``(host, port)`` or a socket path."""
    if server.startswith("unix:"):
        return server[5:]
    if server.startswith("/"):
        return server
    host, port = server, DEFAULT_PORT
    if server.startswith("["):  # [::1]:11211
        host, _, tail = server[1:].partition("]")
        if tail.startswith(":"):
            port = _port(server, tail[1:])
    elif server.count(":") == 1:
        host, _, text = server.partition(":")
        port = _port(server, text)
    return host, port


def _port(server: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImproperlyConfigured(f"memcached server {server!r}: bad port {text!r}") from None


def client_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(pooled client options, RetryingClient options)`` from ``cache_backend_options``.

    Options pymemcache has no use for warn and are dropped; options that would lose
    results or unpickle raise.

    Raises:
        ImproperlyConfigured: a refused or unknown option.
    """
    client = dict(DEFAULT_CLIENT_OPTIONS)
    retry: dict[str, Any] = {}
    for name, value in options.items():
        if name in _CLIENT_OPTIONS:
            client[name] = _keepalive(value) if name == "socket_keepalive" else value
        elif name in _RETRY_OPTIONS:
            retry[_RETRY_OPTIONS[name]] = value
        elif name in _REFUSED:
            if name == "ignore_exc" and not value:
                continue
            raise ImproperlyConfigured(
                f"cache_backend_options[{name!r}] is not accepted by celeriac: {_REFUSED[name]}")
        elif name == "default_noreply":
            if value:
                _ignored(name, "celeriac waits for every reply, so a failed store is "
                               "retried instead of lost")
        elif name == "binary":
            _ignored(name, "pymemcache speaks memcached's text protocol only")
        elif name == "behaviors":
            client.update(_behaviors(value or {}))
        elif name in _HASH_CLIENT_ONLY:
            _ignored(name, "celeriac keeps every server in its ring and raises when one "
                           "fails, so that the store is retried where readers look")
        else:
            raise ImproperlyConfigured(
                f"cache_backend_options[{name!r}] is unknown to the memcached backend; "
                f"known: {sorted({*_CLIENT_OPTIONS, *_RETRY_OPTIONS, 'behaviors'})}")
    if "attempts" not in retry and retry:
        # Celery wraps its client only when retry_attempts is given; the others alone
        # change nothing there either.
        _ignored("retry_delay/retry_for/do_not_retry_for",
                 "they apply only with retry_attempts, as in Celery")
        retry = {}
    return client, retry


def _behaviors(behaviors: dict[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    for name, value in behaviors.items():
        if name == "tcp_keepalive":
            if value:
                mapped["socket_keepalive"] = _keepalive(True)
        elif name in _BEHAVIORS:
            option, convert = _BEHAVIORS[name]
            mapped[option] = convert(value)
        else:
            _ignored(f"behaviors[{name!r}]", "a pylibmc behavior pymemcache has no "
                                             "equivalent for")
    return mapped


def _keepalive(value: Any) -> Any:
    """pymemcache wants a ``KeepaliveOpts``; ``True`` or a dict of its fields build one."""
    if value is None or value is False:
        return None
    if value is True or isinstance(value, dict):
        from pymemcache.client.base import KeepaliveOpts

        return KeepaliveOpts(**(value if isinstance(value, dict) else {}))
    return value


def _ignored(name: str, why: str) -> None:
    warnings.warn(IgnoredSettingWarning(
        f"cache_backend_options[{name!r}] is ignored by celeriac: {why}"), stacklevel=2)


class MemcachedUnreachable(ConnectionError):
    """A memcached server did not answer; names the server (the cause says why)."""

    def __init__(self, server: str, exc: BaseException) -> None:
        self.server = server
        super().__init__(f"memcached {server}: {exc or type(exc).__name__}")


class _Pickled:
    """What a pickled value reads as: refused by the backend, never unpickled."""

    __slots__ = ("flags",)

    def __init__(self, flags: int) -> None:
        self.flags = flags


class _Serde:
    """Values are bytes, stored with flags 0 as Celery's pymemcache client stores them.

    On reading, text (flag 16, python-memcached's ``str``) and numbers are their bytes, a
    zlib-compressed value (flag 8) is inflated, and a pickled one (flag 1) is set aside:
    unpickling would let anyone who can write to memcached run code in this process.
    """

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        if isinstance(value, str):
            return value.encode("utf-8"), 0
        if isinstance(value, int):
            return str(value).encode(), 0
        return bytes(value), 0

    def deserialize(self, key: Any, value: bytes, flags: int) -> Any:
        if flags & FLAG_PICKLE:
            return _Pickled(flags)
        if flags & FLAG_COMPRESSED:
            return zlib.decompress(value)
        return value


class _Ring:
    """The memcached servers of one process, a pooled (thread-safe) client each.

    Keys are placed as pymemcache's HashClient places them (rendezvous hashing on
    ``host:port``), so that a Celery client given the same servers looks on the same one.
    """

    def __init__(self, servers: list[str], options: dict[str, Any],
                 retry: dict[str, Any]) -> None:
        try:
            from pymemcache.client.base import PooledClient
            from pymemcache.client.rendezvous import RendezvousHash
            from pymemcache.client.retrying import RetryingClient
            from pymemcache.exceptions import MemcacheUnexpectedCloseError
        except ImportError:
            raise _missing() from None
        self.pid = current_pid()
        self.errors: tuple[type[BaseException], ...] = (OSError, MemcacheUnexpectedCloseError)
        self.clients: dict[str, Any] = {}
        for server in servers:
            spec = server_spec(server)
            name = spec if isinstance(spec, str) else "%s:%s" % spec
            client: Any = PooledClient(spec, serde=_Serde(), **options)
            self.clients[name] = RetryingClient(client, **retry) if retry else client
        self.names = list(self.clients)
        self.hasher = RendezvousHash(list(self.names))

    def node(self, key: str) -> str:
        return self.names[0] if len(self.names) == 1 else self.hasher.get_node(key)

    def call(self, op: str, key: str, *args: Any, **kwargs: Any) -> Any:
        name = self.node(key)
        try:
            return getattr(self.clients[name], op)(key, *args, **kwargs)
        except self.errors as exc:
            raise MemcachedUnreachable(name, exc) from exc

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, batch in self._by_node(keys).items():
            for start in range(0, len(batch), 500):
                try:
                    found.update(self.clients[name].get_many(batch[start:start + 500]))
                except self.errors as exc:
                    raise MemcachedUnreachable(name, exc) from exc
        return found

    def delete_many(self, keys: list[str]) -> None:
        for name, batch in self._by_node(keys).items():
            try:
                self.clients[name].delete_many(batch, noreply=False)
            except self.errors as exc:
                raise MemcachedUnreachable(name, exc) from exc

    def _by_node(self, keys: list[str]) -> dict[str, list[str]]:
        batches: dict[str, list[str]] = {}
        for key in keys:
            batches.setdefault(self.node(key), []).append(key)
        return batches

    def close(self) -> None:
        for client in self.clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                logger.debug("closing a memcached client failed", exc_info=True)


class CacheBackend(Backend):
    """Celery's cache result backend on memcached (see the module docstring).

    ``cache_backend_options`` go to pymemcache: ``connect_timeout`` and ``timeout``
    (5 s by default, as in Celery), ``no_delay``, ``socket_keepalive``, ``key_prefix``,
    ``max_pool_size`` and the like; ``retry_attempts`` (with ``retry_delay``,
    ``retry_for``, ``do_not_retry_for``) retries each call, as Celery does; pylibmc's
    ``behaviors`` are mapped where pymemcache has an equivalent, and the rest warn.

    Chords are counted with memcached's atomic ``add`` and ``decr``: each header task
    ``add``s its outcome under its own index (so a redelivered one counts once) before
    counting down ``<group key>.n``; a caller that brings the count to zero checks that
    every outcome is there and claims the chord with an ``add``, so one caller only
    sends the body. A chord sent by a Celery client is counted Celery's way instead.
    """

    def __new__(cls, url: str, options: BackendOptions | None = None) -> Any:
        # Celery's ``cache_backend='memory'`` is its in-process store: celeriac's memory
        # backend serves it, as it serves cache+memory://.
        if _cache_spec(url, options or BackendOptions())[0] == "memory":
            from .memory import MemoryBackend

            return MemoryBackend("cache+memory://", options)
        return super().__new__(cls)

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        spec, cache_options = _cache_spec(url, self.options)
        kind, servers = parse_servers(spec)
        if kind not in MEMCACHED_NAMES:
            raise ImproperlyConfigured(
                f"cache backend {spec!r} is unknown; use memcached://host:port/ "
                f"(or {', '.join(sorted(MEMCACHED_NAMES - {'memcached'}))}, or memory)")
        if not servers:
            raise ImproperlyConfigured(f"cache backend {spec!r} names no memcached server")
        try:
            import pymemcache  # noqa: F401 - fail at configuration, not at the first store
        except ImportError:
            raise _missing() from None
        self.servers = servers
        self._client_options, self._retry_options = client_options(cache_options)
        self._ring_: _Ring | None = None

    def _ring(self) -> _Ring:
        ring = self._ring_
        if ring is not None and ring.pid == current_pid():
            return ring
        with process_lock():
            if self._ring_ is None or self._ring_.pid != current_pid():
                # A forked child builds its own clients; the parent's sockets are its own.
                self._ring_ = _Ring(self.servers, self._client_options, self._retry_options)
            return self._ring_

    # -- storage primitives ---------------------------------------------------------
    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        self._put("set", f"{KEY_PREFIX}{task_id}", data, expires)

    def _get(self, task_id: str) -> bytes | None:
        key = f"{KEY_PREFIX}{task_id}"
        return self._value(key, self._ring().call("get", key))

    def _delete(self, task_id: str) -> None:
        self._remove(f"{KEY_PREFIX}{task_id}")

    def _remove(self, key: str) -> None:
        self._ring().call("delete", key, noreply=False)

    def _put(self, op: str, key: str, data: Any, expires: float | None) -> bool:
        """``set`` or ``add`` ``key``; whether it was stored (``add``: it was not there).

        Raises:
            ResultNotSerializable: the value is larger than memcached keeps in an item.
        """
        from pymemcache.exceptions import MemcacheServerError

        try:
            return bool(self._ring().call(op, key, data, memcached_expire(expires),
                                          noreply=False))
        except MemcacheServerError as exc:
            if "too large" not in str(exc):
                raise
            raise ResultNotSerializable(
                f"the value of {key} is {len(data)} bytes, more than memcached keeps in "
                "one item (its -I item_size_max, 1 MB by default); store large results "
                "elsewhere and return a reference") from exc

    def _value(self, key: str, data: Any) -> Any:
        """``data`` as read for ``key`` (bytes or None).

        Raises:
            BackendError: the value was pickled by its writer.
        """
        if isinstance(data, _Pickled):
            raise BackendError(
                f"memcached key {key} holds a pickled value (flags {data.flags}), as "
                "python-memcached or pylibmc write Python objects; celeriac never "
                "unpickles what it reads from memcached. Results written by Celery's or "
                "celeriac's result backend are serialized bytes and read fine.")
        return data

    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None) -> dict[str, Any]:
        """As the base class; a result too large for memcached becomes the task's FAILURE
        (``ResultNotSerializable``), so the caller learns why instead of waiting."""
        try:
            return super().store_result(task_id, result, state, traceback, request)
        except ResultNotSerializable as exc:
            logger.error("result of task %s not stored: %s", task_id, exc)
            return super().store_result(task_id, exc, states.FAILURE, None, request)

    async def _await(self, task_id: str, timeout: float | None,
                     interval: float) -> bytes | None:
        # Each read is a network round trip (up to ``timeout`` when a server hangs):
        # made on a thread, so the event loop runs on meanwhile.
        for pause in _pauses(timeout, interval):
            data = await asyncio.to_thread(self._get, task_id)
            if pause is None or self._is_ready(data):
                return data
            await asyncio.sleep(pause)
        return None  # not reached: the pauses end with None

    def get_many_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        keys = [f"{KEY_PREFIX}{task_id}" for task_id in task_ids]
        found = self._retrying(self._ring().get_many, keys)
        metas: list[dict[str, Any]] = []
        for task_id, key in zip(task_ids, keys):
            data = self._value(key, found.get(key))
            metas.append(self._decode(data) if data is not None else {
                "status": states.PENDING, "result": None, "traceback": None,
                "children": [], "task_id": task_id})
        return metas

    # -- groups ---------------------------------------------------------------------
    def save_group(self, group_id: str, value: Any) -> None:
        data = self._encode({"result": value})
        self._retrying(self._put, "set", self._group_key(group_id), data, self.options.expires)

    def restore_group(self, group_id: str) -> Any:
        key = self._group_key(group_id)
        data = self._value(key, self._retrying(self._ring().call, "get", key))
        return None if data is None else self._decode(data).get("result")

    def delete_group(self, group_id: str) -> None:
        self._retrying(self._remove, self._group_key(group_id))

    # -- chords -----------------------------------------------------------------------
    def set_chord_size(self, group_id: str, size: int) -> None:
        key, ttl = self._group_key(group_id), self.options.chord_ttl
        ring = self._ring()
        ring.delete_many([f"{key}.t", f"{key}.d"])
        self._put("set", f"{key}.s", size, ttl)
        self._put("set", f"{key}.n", size, ttl)  # header tasks still to come

    def add_to_chord(self, group_id: str) -> int:
        key, ttl = self._group_key(group_id), self.options.chord_ttl
        ring = self._ring()
        size = ring.call("get", f"{key}.s")
        if size is None or ring.call("incr", f"{key}.n", 1, noreply=False) is None:
            raise KeyError(f"no chord {group_id!r} is waiting (finished, expired or evicted)")
        self._put("add", f"{key}.t", 0, ttl)
        added = ring.call("incr", f"{key}.t", 1, noreply=False)
        return int(size) + int(added)

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        key, ttl = self._group_key(group_id), self.options.chord_ttl
        member = self._chord_member(index, task_id, state, result)
        try:
            self._put("add", f"{key}.j{index}", member, ttl)
        except ResultNotSerializable as exc:
            failed = self._encode([1, task_id, states.FAILURE, self.prepare_exception(exc)])
            self._put("add", f"{key}.j{index}", failed, ttl)
        # Counted even when the part was there already: a part redelivered because its
        # first run died between the add and the decr must still count. Counting twice
        # only makes the count reach zero early, and the check below catches that.
        ring = self._ring()
        left = ring.call("decr", f"{key}.n", 1, noreply=False)
        if left is None:
            ring.call("delete", f"{key}.j{index}", noreply=False)
            return self._celery_chord_part(group_id, index, task_id)
        if int(left) > 0:
            return None
        sizes = ring.get_many([f"{key}.s", f"{key}.t"])
        total = int(sizes.get(f"{key}.s") or 0) + int(sizes.get(f"{key}.t") or 0)
        names = [f"{key}.j{i}" for i in range(total)]
        members = ring.get_many(names)
        if len(members) < total or not self._put("add", f"{key}.d", 1, ttl):
            return None  # a part is still to come, or another caller has the chord
        ring.delete_many([*names, f"{key}.s", f"{key}.t", f"{key}.n"])
        return self._chord_parts([self._value(name, members[name]) for name in names])

    def _celery_chord_part(self, group_id: str, index: int,
                           task_id: str) -> list[ChordPart] | None:
        """Count a header task of a chord a Celery client sent, as Celery's workers do.

        Celery's client saves the header group and sets ``chord-unlock-<group id>`` to 0;
        each part increments it, and the one that reaches the group's size reads the
        header tasks' stored results. Celery counts a redelivered part twice; so does this.
        """
        ring = self._ring()
        counter = f"{CHORD_UNLOCK_PREFIX}{group_id}"
        count = ring.call("incr", counter, 1, noreply=False)
        if count is None:
            logger.warning("chord %s: no counter in memcached (finished, expired or "
                           "evicted); part %s (%s) not counted", group_id, index, task_id)
            return None
        header = self.restore_group(group_id)
        # GroupResult.as_tuple(): ((group id, parent), [((task id, parent), None), ...])
        ids = [member[0][0] for member in header[1]] if header else []
        if not ids:
            logger.error("chord %s: its header group is not in memcached (expired or "
                         "evicted); the body is not sent", group_id)
            return None
        if int(count) != len(ids):
            return None
        metas = self.get_many_metas(ids)
        ring.delete_many([counter, self._group_key(group_id)])
        return [ChordPart(i, meta["status"], meta["result"]) for i, meta in zip(ids, metas)]

    def close(self) -> None:
        ring, self._ring_ = self._ring_, None
        if ring is not None and ring.pid == current_pid():
            ring.close()


def _cache_spec(url: str, options: BackendOptions) -> tuple[str, dict[str, Any]]:
    """``(what the cache is, its client options)``: the URL after ``cache+``, or for a
    plain ``cache`` URL the ``cache_backend`` setting, as in Celery."""
    cache_options = dict(options.cache.get("backend_options") or {})
    scheme, plus, rest = url.partition("+")
    if plus and scheme.lower() == "cache":
        return rest, cache_options
    if url.rstrip(":/").lower() != "cache":
        raise ImproperlyConfigured(f"result backend {url!r}: expected cache+memcached://...")
    spec = options.cache.get("backend")
    if not spec:
        raise ImproperlyConfigured(
            "result_backend is 'cache' but cache_backend is not set; give "
            "cache_backend='memcached://127.0.0.1:11211/', or result_backend="
            "'cache+memcached://127.0.0.1:11211/'")
    if str(spec).lower().partition("://")[0] == "memory":
        return "memory", cache_options
    return str(spec), cache_options


__all__ = ["CacheBackend", "MemcachedUnreachable", "memcached_expire", "parse_servers"]
