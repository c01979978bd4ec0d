"""Celery message protocol v2 (and reading v1), and kombu's JSON envelope.

A task message is headers + properties + a serialized body ``[args, kwargs, embed]``.
On Redis, SQLite and memory the three travel inside kombu's JSON envelope with a base64
body, so a Celery producer's ``LPUSH`` and a celeriac worker's fetch agree byte for byte.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from . import serialization
from .exceptions import ContentDisallowed, DecodeError, InvalidTaskError
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
        return self.headers.get("id") or self.properties.get("correlation_id")


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

    @property
    def eta(self) -> str | None:
        return self.headers.get("eta")

    @property
    def expires(self) -> str | None:
        return self.headers.get("expires")

    @property
    def retries(self) -> int:
        return self.headers.get("retries") or 0


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


def from_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


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


def decode_task(message: Message, accept: frozenset[str] | None) -> TaskMessage:
    """Decode a task message body, enforcing ``accept`` (a set of content types).

    Raises:
        ContentDisallowed: the content type is missing or not accepted.
        DecodeError / InvalidTaskError: the message cannot be read as a task.
    """
    body = message.body
    compression = message.headers.get("compression")
    if compression:
        body = serialization.decompress(body, compression)
    payload = serialization.loads(body, message.content_type, accept)
    headers = message.headers
    if "task" in headers:
        # Check the shape before unpacking: a 3-character string or a 3-key object
        # unpacks too, and dict/list coercion would then turn keys into args.
        if not (isinstance(payload, (list, tuple)) and len(payload) == 3):
            raise InvalidTaskError("protocol 2 body must be [args, kwargs, embed]")
        args, kwargs, embed = payload
        if not (isinstance(args, (list, tuple)) or args is None) or \
                not (isinstance(kwargs, dict) or kwargs is None) or \
                not (isinstance(embed, dict) or embed is None):
            raise InvalidTaskError(
                "protocol 2 body must be [args (array), kwargs (object), embed (object)]")
        task_id = headers.get("id")
        if not task_id:
            raise InvalidTaskError("message has a task name but no 'id' header")
        # Celery accepts a partial embed ({} in minimal messages): fill in the 4 keys.
        return TaskMessage(headers["task"], task_id, list(args or ()), dict(kwargs or {}),
                           {**EMPTY_EMBED, **(embed or {})}, headers, message.properties)
    if isinstance(payload, dict) and "task" in payload and "id" in payload:
        return _from_protocol1(payload, message)
    raise InvalidTaskError("message has no 'task' header and is not a protocol 1 task")


def _from_protocol1(body: dict[str, Any], message: Message) -> TaskMessage:
    # Protocol 1 keeps everything in the body; map it onto v2 headers so the worker
    # has one shape to read.
    headers = {
        "task": body["task"], "id": body["id"], "eta": body.get("eta"),
        "expires": body.get("expires"), "retries": body.get("retries", 0),
        "group": body.get("taskset"), "timelimit": body.get("timelimit") or [None, None],
        "root_id": body["id"], "parent_id": None,
    }
    embed = {"callbacks": body.get("callbacks"), "errbacks": body.get("errbacks"),
             "chain": None, "chord": body.get("chord")}
    return TaskMessage(body["task"], body["id"], list(body.get("args") or ()),
                       dict(body.get("kwargs") or {}), embed, headers, message.properties,
                       protocol=1)


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
        DecodeError: not JSON, or not an envelope.
    """
    try:
        env = serialization._json_loads(raw)
    except Exception as exc:
        raise DecodeError(f"envelope is not valid JSON: {exc}") from exc
    if not isinstance(env, dict) or "body" not in env:
        raise DecodeError("envelope is not a JSON object with a 'body'")
    props = env.get("properties") or {}
    body = env["body"]
    if props.get("body_encoding") == "base64":
        body = serialization.b64decode(body)
    elif isinstance(body, str):
        body = body.encode(env.get("content-encoding") or "utf-8")
    return Message(env.get("headers") or {}, props, body,
                   env.get("content-type") or "", env.get("content-encoding") or "")


def queue_of(message: Message, default: str) -> str:
    info = message.properties.get("delivery_info") or {}
    return info.get("routing_key") or default


__all__ = [
    "Message", "TaskMessage", "task_message", "decode_task", "encode_envelope",
    "decode_envelope", "to_iso", "from_iso", "ContentDisallowed", "DecodeError",
]
