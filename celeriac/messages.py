"""Celery message protocol v2 (and reading v1), and kombu's JSON envelope.

A task message is headers + properties + a serialized body ``[args, kwargs, embed]``.
On Redis, SQLite and memory the three travel inside kombu's JSON envelope with a base64
body, so a Celery producer's ``LPUSH`` and a celeriac worker's fetch agree byte for byte.
"""

from __future__ import annotations

import math
import reprlib
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from . import serialization
from .exceptions import ContentDisallowed, DecodeError, InvalidTaskError, MissingDependency
from .utils.pid import current_pid

EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(slots=True)
class Message:
    """One broker message, independent of transport."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    content_type: str
    content_encoding: str

    @property
    def task_id(self) -> str | None:
        """The task id if one can be read (a string), whatever else is wrong."""
        return _recover_id(self.headers, self.properties)


@dataclass(slots=True)
class TaskMessage:
    """A decoded task message, ready for the worker."""

    name: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    protocol: int = 2
    extra: dict[str, Any] = field(default_factory=dict)
    #: the ``eta`` header parsed once by ``decode_task``: aware (naive is UTC), or None
    eta_at: datetime | None = None
    #: the ``expires`` header parsed the same way
    expires_at: datetime | None = None
    #: the ``timelimit`` header as ``(hard, soft)`` seconds, each a float or None
    timelimit: tuple[float | None, float | None] = (None, None)

    @property
    def eta(self) -> str | None:
        """The ``eta`` header as sent (Celery's ``request.eta`` is this string too)."""
        return self.headers.get("eta")

    @property
    def expires(self) -> str | None:
        return self.headers.get("expires")

    @property
    def retries(self) -> int:
        return self.headers.get("retries") or 0


class MalformedMessage(InvalidTaskError):
    """A message the worker cannot understand: a field of the wrong type or value, a
    body that does not decode, an envelope that is not one.

    ``str(exc)`` (and ``exc.args[0]``) is the reason, naming the field, the value
    received (shortened) and what was expected.

    Attributes:
        reason: the same text.
        task_id: the message's task id when it could be read as a string (the header
            ``id``, the protocol 1 body's ``id``, else the ``correlation_id`` property),
            even when other fields are bad, so the caller can be told; else None.
        task_name: the task name, when it could be read.
        field: the offending field (``"header 'eta'"``, ``"body kwargs"``...), or None.
    """

    def __init__(self, reason: str, task_id: str | None = None,
                 task_name: str | None = None, field: str | None = None) -> None:
        super().__init__(reason)  # args stay (reason,): JSON-safe for the result store
        self.reason = reason
        self.task_id = task_id
        self.task_name = task_name
        self.field = field


_origin: tuple[int, str] | None = None


def origin() -> str:
    """``gen<pid>@<hostname>``, as Celery writes in the ``origin`` header (fork aware)."""
    global _origin
    pid = current_pid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, f"gen{pid}@{socket.gethostname()}")
    return _origin[1]


def to_iso(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit offset; naive datetimes are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def from_iso(value: str | datetime | None) -> datetime | None:
    """Parse an ISO 8601 date-time; naive is taken as UTC; empty is None.

    Raises:
        ValueError: not an ISO 8601 date-time.
    """
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = _parse_iso(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


_isoparse: Callable[[str], datetime] | None = None


def _parse_iso(text: str) -> datetime:
    # ``fromisoformat`` (C, fast) reads every form Celery writes; the few ISO 8601 forms
    # it does not ("2030-01", "T24:00", ordinal dates) are read as Celery's worker reads
    # them, with dateutil's isoparse, when dateutil is installed.
    global _isoparse
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        if _isoparse is None:
            try:
                from dateutil.parser import isoparse
            except ImportError:
                raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
            _isoparse = isoparse
    try:
        return _isoparse(text)
    except (ValueError, OverflowError, TypeError) as exc:
        raise ValueError(f"not an ISO 8601 date-time: {exc}") from None


def task_message(
    name: str,
    task_id: str,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str = "celery",
    exchange: str = "",
    routing_key: str | None = None,
    eta: datetime | None = None,
    expires: datetime | None = None,
    retries: int = 0,
    group_id: str | None = None,
    group_index: int | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    shadow: str | None = None,
    ignore_result: bool | None = False,
    priority: int | None = None,
    reply_to: str = "",
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: Any = None,
    headers: dict[str, Any] | None = None,
    serializer: str = "json",
    compression: str | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    expiration_ms: int | None = None,
) -> Message:
    """Build a protocol v2 task message with Celery's full header set."""
    args = list(args)
    kwargs = kwargs or {}
    hdrs: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": to_iso(eta),
        "expires": to_iso(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr if argsrepr is not None else repr(tuple(args)),
        "kwargsrepr": kwargsrepr if kwargsrepr is not None else repr(kwargs),
        "origin": origin(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    if headers:
        hdrs.update(headers)
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    body, content_type, content_encoding = serialization.dumps([args, kwargs, embed], serializer)
    if compression:
        body, hdrs["compression"] = serialization.compress(body, compression)
    props: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": 2,
        "priority": priority if priority is not None else 0,
        "delivery_info": {"exchange": exchange, "routing_key": routing_key or queue},
    }
    if expiration_ms is not None:
        props["expiration"] = str(expiration_ms)
    return Message(hdrs, props, body, content_type, content_encoding)


# -- decoding and checking a task message ---------------------------------------------
# Every field the worker acts on is checked here, once, so that a message it cannot
# understand is refused at the door (MalformedMessage: set aside, its caller told)
# instead of failing later inside the worker. The checks are type tests on the common
# path; the detailed ones run only for a value that is not of the usual type.

class _Bad(Exception):
    """A field is wrong; turned into MalformedMessage once the task id is known.

    Nested checks raise it with the field relative to where they look (``".task"``);
    each caller on the way out puts its own part in front (``within``), so the names
    are only built when something is wrong.
    """

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(field)
        self.field = field
        self.value = value
        self.expected = expected

    def within(self, outer: str) -> _Bad:
        self.field = outer + self.field
        return self

    @property
    def reason(self) -> str:
        return f"invalid {self.field}: got {_short(self.value)}, expected {self.expected}"


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 2


def _short(value: Any) -> str:
    """A bounded repr for error texts (a bad value may be huge, or its repr may raise)."""
    try:
        text = _repr.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 100 else text[:97] + "..."


_NO_LIMITS: tuple[None, None] = (None, None)
_INF = math.inf
_NUMBER: frozenset[type] = frozenset({int, float})
# Quick tests of exact types; a value that fails one gets the detailed (isinstance) check.
_NONE = type(None)
_STR_OR_NONE: frozenset[type] = frozenset({str, _NONE})
_INT_OR_NONE: frozenset[type] = frozenset({int, _NONE})
_BOOL_OR_NONE: frozenset[type] = frozenset({bool, _NONE})
_DICT_OR_NONE: frozenset[type] = frozenset({dict, _NONE})
_LIST_OR_NONE: frozenset[type] = frozenset({list, tuple, _NONE})
# How deep nested signatures (links of links, canvases inside canvases) are checked.
_MAX_SIG_DEPTH = 16
_STR = "a string or null"
_UINT = "an integer >= 0 or null"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _opt_str(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, str):
        raise _Bad(field, value, _STR)


def _opt_uint(value: Any, field: str) -> None:
    if value is not None and not (_is_int(value) and value >= 0):
        raise _Bad(field, value, _UINT)


def _opt_int(value: Any, field: str) -> None:
    if value is not None and not _is_int(value):
        raise _Bad(field, value, "an integer or null")


def _when(value: Any, field: str) -> datetime | None:
    """An eta/expires value as an aware datetime; as in Celery, empty means none."""
    if not value:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            try:
                parsed = _parse_iso(value)
            except ValueError:
                raise _Bad(field, value, "an ISO 8601 date-time string or null") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise _Bad(field, value, "an ISO 8601 date-time string or null")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _limits(value: Any, field: str) -> tuple[float | None, float | None]:
    """``[hard, soft]`` as a tuple of floats/None; empty means no limits."""
    if not value:
        return _NO_LIMITS
    if isinstance(value, (list, tuple)) and len(value) == 2:
        hard, soft = value
        # ``0 <= x < inf`` also refuses NaN; bool is not a number of seconds.
        if (hard is None or (type(hard) in _NUMBER and 0 <= hard < _INF)) and \
                (soft is None or (type(soft) in _NUMBER and 0 <= soft < _INF)):
            return (None if hard is None else float(hard),
                    None if soft is None else float(soft))
        if (hard is None or (_is_number(hard) and hard >= 0)) and \
                (soft is None or (_is_number(soft) and soft >= 0)):  # int/float subclasses
            return (None if hard is None else float(hard),
                    None if soft is None else float(soft))
    raise _Bad(field, value, "[hard, soft] seconds, each a number >= 0 or null")


def _args(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _Bad(field, value, "an array (the positional arguments) or null")


def _kwargs(value: Any, field: str, check_keys: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(field, value, "an object (the keyword arguments) or null")
    if check_keys:  # JSON keys are always strings; other serializers may send any
        for key in value:
            if not isinstance(key, str):
                raise _Bad(f"{field} key", key, "a string (a keyword argument name)")
    return value if type(value) is dict else dict(value)


# Signature options the worker passes on when it sends a callback, errback, chain step
# or chord body; a value of the wrong type would fail only then, after the task ran.
def _is_when(value: Any) -> bool:
    try:
        _when(value, "")
    except _Bad:
        return False
    return True


_OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("task_id", "group_id", "parent_id", "root_id", "reply_to", "shadow"),
                    (lambda v: v is None or isinstance(v, str), _STR)),
    **dict.fromkeys(("countdown", "time_limit", "soft_time_limit"),
                    (lambda v: v is None or _is_number(v), "a number of seconds or null")),
    "eta": (_is_when, "an ISO 8601 date-time string or null"),
    "expires": (lambda v: v is None or _is_number(v) or _is_when(v),
                "a number of seconds, an ISO 8601 date-time string or null"),
    "priority": (lambda v: v is None or _is_int(v), "an integer or null"),
    **dict.fromkeys(("group_index", "retries"),
                    (lambda v: v is None or (_is_int(v) and v >= 0), _UINT)),
}
_LINKS = ("link", "link_error")
_CANVAS_MEMBERS = ("tasks", "header", "body")


def _signature(sig: Any, depth: int = 0) -> None:
    """A signature dict: Celery's ``task``/``args``/``kwargs``/``options`` shape.

    Raises:
        _Bad: with the field relative to the signature (``".options.countdown"``).
    """
    if not isinstance(sig, dict):
        raise _Bad("", sig, "a signature (an object with 'task', 'args', 'kwargs', "
                            "'options')")
    get = sig.get
    name, args, kwargs = get("task"), get("args"), get("kwargs")
    options, subtask_type = get("options"), get("subtask_type")
    if not (type(name) is str and name and type(args) in _LIST_OR_NONE
            and type(kwargs) in _DICT_OR_NONE and type(options) in _DICT_OR_NONE
            and type(subtask_type) in _STR_OR_NONE):
        if not (isinstance(name, str) and name):
            raise _Bad(".task", name, "a non-empty string (a task name)")
        if args is not None and not isinstance(args, (list, tuple)):
            raise _Bad(".args", args, "an array or null")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise _Bad(".kwargs", kwargs, "an object or null")
        if options is not None and not isinstance(options, dict):
            raise _Bad(".options", options, "an object or null")
        _opt_str(subtask_type, ".subtask_type")
    if depth >= _MAX_SIG_DEPTH:
        return
    if options:
        checks = _OPTION_CHECKS
        for key, value in options.items():
            check = checks.get(key)
            if check is not None:
                if not check[0](value):
                    raise _Bad(f".options.{key}", value, check[1])
            elif value is not None and key in _LINKS:
                _nested(value, f".options.{key}", depth)
    if subtask_type and kwargs:
        # A canvas (chain, group, chord): its members are signatures too.
        for key in _CANVAS_MEMBERS:
            value = kwargs.get(key)
            if value is not None:
                _nested(value, f".kwargs.{key}", depth)


def _nested(value: Any, field: str, depth: int) -> None:
    """One signature or a list of them, inside a signature."""
    try:
        if isinstance(value, dict):
            _signature(value, depth + 1)
        else:
            _signatures(value, depth + 1)
    except _Bad as bad:
        raise bad.within(field) from None


def _signatures(value: Any, depth: int = 0) -> None:
    if not isinstance(value, (list, tuple)):
        raise _Bad("", value, "an array of signatures or null")
    for index, sig in enumerate(value):
        try:
            _signature(sig, depth)
        except _Bad as bad:
            raise bad.within(f"[{index}]") from None


def _embed(callbacks: Any, errbacks: Any, chain: Any, chord: Any, where: str) -> None:
    field = ""
    try:
        if callbacks is not None:
            field = " callbacks"
            _signatures(callbacks)
        if errbacks is not None:
            field = " errbacks"
            _signatures(errbacks)
        if chain is not None:
            field = " chain"
            _signatures(chain)
        if chord is not None:
            field = " chord"
            _signature(chord)
    except _Bad as bad:
        raise bad.within(where + field) from None


def _recover_id(headers: Any, properties: Any, body: Any = None) -> str | None:
    """The task id, if any place that holds it holds a string."""
    for holder, key in ((headers, "id"), (body, "id"), (properties, "correlation_id")):
        if isinstance(holder, dict):
            value = holder.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _recover_name(headers: Any, body: Any) -> str | None:
    for holder in (headers, body):
        if isinstance(holder, dict):
            value = holder.get("task")
            if isinstance(value, str) and value:
                return value
    return None


def decode_task(message: Message, accept: frozenset[str] | None) -> TaskMessage:
    """Decode and check a task message (protocol 2, or protocol 1), enforcing
    ``accept`` (a set of content types).

    Every header, property and body field the worker acts on is checked for type and
    value; ``eta``/``expires`` are parsed (``eta_at``/``expires_at``) and ``timelimit``
    read (``timelimit``) once, here. The headers themselves are kept as received.

    Raises:
        ContentDisallowed: the content type is missing or not accepted.
        MalformedMessage: the message cannot be understood (a bad field, a body that
            does not decode); its ``task_id`` is set whenever the id could be read.
    """
    headers = message.headers
    properties = message.properties
    payload: Any = None
    try:
        if not isinstance(headers, dict):
            raise _Bad("headers", headers, "an object")
        if not isinstance(properties, dict):
            raise _Bad("properties", properties, "an object")
        body = message.body
        compression = headers.get("compression")
        if compression:
            if not isinstance(compression, str):
                raise _Bad("header 'compression'", compression, "a content type string")
            body = serialization.decompress(body, compression)
        content_type = message.content_type
        payload = serialization.loads(body, content_type, accept)
        if "task" in headers:
            return _from_protocol2(payload, headers, properties,
                                   content_type != "application/json")
        if isinstance(payload, dict) and "task" in payload and "id" in payload:
            task = _from_protocol1(payload, message, content_type != "application/json")
            _check_properties(properties)
            return task
        raise MalformedMessage("message has no 'task' header and is not a protocol 1 task",
                               _recover_id(headers, properties, payload))
    except (ContentDisallowed, MissingDependency, MalformedMessage):
        raise
    except _Bad as bad:
        raise MalformedMessage(bad.reason, _recover_id(headers, properties, payload),
                               _recover_name(headers, payload), bad.field) from None
    except DecodeError as exc:  # the body does not decode, or decompress
        raise MalformedMessage(str(exc), _recover_id(headers, properties, payload),
                               _recover_name(headers, payload), "body") from exc
    except Exception as exc:  # a case not foreseen: still refused, never a worker error
        raise MalformedMessage(f"cannot read the message: {exc!r}",
                               _recover_id(headers, properties, payload),
                               _recover_name(headers, payload)) from exc


def _check_properties(properties: dict[str, Any]) -> None:
    """The properties the worker reads (``_from_protocol2`` tests them quickly first)."""
    get = properties.get
    _opt_int(get("priority"), "property 'priority'")
    _opt_str(get("correlation_id"), "property 'correlation_id'")
    _opt_str(get("reply_to"), "property 'reply_to'")
    delivery_info = get("delivery_info")
    if delivery_info is not None and not isinstance(delivery_info, dict):
        raise _Bad("property 'delivery_info'", delivery_info, "an object or null")


def _check_headers(headers: dict[str, Any]) -> None:
    """The detailed check of the protocol 2 headers not read in ``_from_protocol2``."""
    get = headers.get
    _opt_uint(get("retries"), "header 'retries'")
    _opt_uint(get("group_index"), "header 'group_index'")
    for key in ("group", "root_id", "parent_id", "shadow"):
        _opt_str(get(key), f"header {key!r}")
    ignore_result = get("ignore_result")
    if ignore_result is not None and not _is_int(ignore_result) and \
            not isinstance(ignore_result, bool):
        raise _Bad("header 'ignore_result'", ignore_result, "true, false or null")


# Run for every message: the quick tests bind the names they use as local defaults
# (a local is read faster than a global or a builtin). A value that fails a quick test
# gets the detailed check, which also passes subclasses (a str subclass, say).
def _from_protocol2(payload: Any, headers: dict[str, Any], properties: dict[str, Any],
                    check_keys: bool, *, type: Any = type, _S: frozenset[type] = _STR_OR_NONE,
                    _I: frozenset[type] = _INT_OR_NONE, _B: frozenset[type] = _BOOL_OR_NONE,
                    _D: frozenset[type] = _DICT_OR_NONE) -> TaskMessage:
    get = headers.get
    name = get("task")
    if type(name) is not str or not name:
        if not (isinstance(name, str) and name):
            raise _Bad("header 'task'", name, "a non-empty string (the task name)")
    task_id = get("id")
    if type(task_id) is not str or not task_id:
        if not (isinstance(task_id, str) and task_id):
            raise _Bad("header 'id'", task_id, "a non-empty string (the task id)")
    # Check the shape before unpacking: a 3-character string or a 3-key object unpacks
    # too, and list/dict coercion would then turn keys into args.
    if not (isinstance(payload, (list, tuple)) and len(payload) == 3):
        raise _Bad("body", payload, "[args, kwargs, embed] (an array of 3)")
    args, kwargs, embed = payload
    if type(args) is not list:
        args = _args(args, "body args")
    if type(kwargs) is not dict or (check_keys and kwargs):
        kwargs = _kwargs(kwargs, "body kwargs", check_keys)
    if not embed:
        if embed is not None and not isinstance(embed, dict):
            raise _Bad("body embed", embed, "an object or null")
        embed = dict(EMPTY_EMBED)
    elif isinstance(embed, dict):
        eget = embed.get
        callbacks, errbacks, chain, chord = (eget("callbacks"), eget("errbacks"),
                                             eget("chain"), eget("chord"))
        if callbacks is not None or errbacks is not None or chain is not None or \
                chord is not None:
            _embed(callbacks, errbacks, chain, chord, "embed")
        # Celery accepts a partial embed ({} in minimal messages): fill in the 4 keys.
        embed = {**EMPTY_EMBED, **embed}
    else:
        raise _Bad("body embed", embed, "an object or null")
    retries = get("retries")
    if not ((retries is None or (type(retries) is int and retries >= 0))
            and type(get("group_index")) in _I and type(get("root_id")) in _S
            and type(get("parent_id")) in _S and type(get("group")) in _S
            and type(get("shadow")) in _S and type(get("ignore_result")) in _B) \
            or (get("group_index") or 0) < 0:
        _check_headers(headers)
    pget = properties.get
    if not (type(pget("priority")) in _I and type(pget("correlation_id")) in _S
            and type(pget("reply_to")) in _S and type(pget("delivery_info")) in _D):
        _check_properties(properties)
    eta = get("eta")
    expires = get("expires")
    timelimit = get("timelimit")
    return TaskMessage(
        name, task_id, args, kwargs, embed, headers, properties, 2, {},
        _when(eta, "header 'eta'") if eta else None,
        _when(expires, "header 'expires'") if expires else None,
        _NO_LIMITS if not timelimit or timelimit == [None, None]
        else _limits(timelimit, "header 'timelimit'"))


def _from_protocol1(body: dict[str, Any], message: Message, check_keys: bool) -> TaskMessage:
    # Protocol 1 keeps everything in the body; map it onto v2 headers so the worker
    # has one shape to read.
    name = body["task"]
    if not (isinstance(name, str) and name):
        raise _Bad("protocol 1 body 'task'", name, "a non-empty string (the task name)")
    task_id = body["id"]
    if not (isinstance(task_id, str) and task_id):
        raise _Bad("protocol 1 body 'id'", task_id, "a non-empty string (the task id)")
    args = _args(body.get("args"), "protocol 1 body 'args'")
    kwargs = _kwargs(body.get("kwargs"), "protocol 1 body 'kwargs'", check_keys)
    retries = body.get("retries", 0)
    _opt_uint(retries, "protocol 1 body 'retries'")
    group = body.get("taskset")
    _opt_str(group, "protocol 1 body 'taskset'")
    eta, expires = body.get("eta"), body.get("expires")
    eta_at = _when(eta, "protocol 1 body 'eta'")
    expires_at = _when(expires, "protocol 1 body 'expires'")
    timelimit = _limits(body.get("timelimit"), "protocol 1 body 'timelimit'")
    callbacks, errbacks, chord = body.get("callbacks"), body.get("errbacks"), body.get("chord")
    _embed(callbacks, errbacks, None, chord, "protocol 1 body")
    headers = {
        "task": name, "id": task_id, "eta": eta, "expires": expires, "retries": retries,
        "group": group, "timelimit": body.get("timelimit") or [None, None],
        "root_id": task_id, "parent_id": None,
    }
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": None, "chord": chord}
    return TaskMessage(name, task_id, args, kwargs, embed, headers, message.properties, 1, {},
                       eta_at, expires_at, timelimit)


# -- kombu's JSON envelope --------------------------------------------------------------
def encode_envelope(message: Message) -> str:
    """Wrap ``message`` the way kombu's Redis transport stores it."""
    props = dict(message.properties)
    props["body_encoding"] = "base64"
    props.setdefault("delivery_tag", str(uuid.uuid4()))
    return serialization._json_encoder.encode({
        "body": serialization.b64encode(message.body),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": props,
    })


def decode_envelope(raw: str | bytes) -> Message:
    """Parse a kombu JSON envelope.

    Raises:
        MalformedMessage (a DecodeError): not JSON, or not an envelope; its ``task_id``
            is set when the headers or properties still hold one.
    """
    try:
        env = serialization._json_loads(raw)
    except Exception as exc:
        raise MalformedMessage(f"envelope is not valid JSON: {exc}",
                               _id_of_broken_envelope(raw), field="envelope") from exc
    if not isinstance(env, dict) or "body" not in env:
        raise MalformedMessage("envelope is not a JSON object with a 'body'",
                               _envelope_id(env), field="envelope")
    headers = env.get("headers")
    props = env.get("properties")
    if headers is None:
        headers = {}
    elif not isinstance(headers, dict):
        raise MalformedMessage(f"invalid envelope 'headers': got {_short(headers)}, "
                               "expected an object", _recover_id(None, props),
                               field="envelope 'headers'")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise MalformedMessage(f"invalid envelope 'properties': got {_short(props)}, "
                               "expected an object", _recover_id(headers, None),
                               field="envelope 'properties'")
    content_type = env.get("content-type") or ""
    content_encoding = env.get("content-encoding") or ""
    body = env["body"]
    try:
        if not isinstance(content_type, str):
            raise _Bad("envelope 'content-type'", content_type, "a string")
        if not isinstance(content_encoding, str):
            raise _Bad("envelope 'content-encoding'", content_encoding, "a string")
        if not isinstance(body, str):
            raise _Bad("envelope 'body'", body, "a string")
        if props.get("body_encoding") == "base64":
            body = serialization.b64decode(body)
        else:
            try:
                body = body.encode(content_encoding or "utf-8")
            except (LookupError, UnicodeError) as exc:
                raise _Bad("envelope 'content-encoding'", content_encoding,
                           f"an encoding the body can be written in ({exc})") from None
    except _Bad as bad:
        raise MalformedMessage(bad.reason, _recover_id(headers, props),
                               _recover_name(headers, None), bad.field) from None
    except DecodeError as exc:
        raise MalformedMessage(str(exc), _recover_id(headers, props),
                               _recover_name(headers, None), "envelope 'body'") from exc
    return Message(headers, props, body, content_type, content_encoding)


def _envelope_id(env: Any) -> str | None:
    if not isinstance(env, dict):
        return None
    return _recover_id(env.get("headers"), env.get("properties"))


def _id_of_broken_envelope(raw: Any) -> str | None:
    # The JSON may be fine and only a kombu type marker in it unreadable: read it again
    # without the markers, only to find the id.
    try:
        text = bytes(raw).decode("utf-8") if not isinstance(raw, str) else raw
        return _envelope_id(serialization._json_decoder.decode(text))
    except Exception:
        return None


def queue_of(message: Message, default: str) -> str:
    info = message.properties.get("delivery_info") or {}
    return info.get("routing_key") or default


__all__ = [
    "Message", "TaskMessage", "task_message", "decode_task", "encode_envelope",
    "decode_envelope", "to_iso", "from_iso", "ContentDisallowed", "DecodeError",
    "MalformedMessage",
]
