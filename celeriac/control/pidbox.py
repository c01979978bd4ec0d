"""Celery's remote-control messages ("pidbox") as they travel, both directions.

A request goes to the fanout exchange ``<control_exchange>.pidbox`` with an empty
routing key; its body names the method, the arguments, the destination nodes and, when
an answer is wanted, a ticket and where to reply. Each node that runs it replies to the
direct exchange ``reply.<control_exchange>.pidbox`` with the requester's routing key:
a one-key map ``{node name: reply}`` and the ticket in the headers.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..brokers import Notice


def request_exchange(conf: Any) -> str:
    return f"{conf.control_exchange or 'celery'}.pidbox"


def reply_exchange(conf: Any) -> str:
    return f"reply.{conf.control_exchange or 'celery'}.pidbox"


@dataclass
class Request:
    """One remote-control request."""

    method: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination: list[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: dict[str, str] | None = None
    expires: float | None = None
    clock: int | None = None

    def to_notice(self, clock: int) -> Notice:
        body = {"method": self.method, "arguments": self.arguments,
                "destination": self.destination, "pattern": self.pattern,
                "matcher": self.matcher}
        if self.ticket:
            body["ticket"] = self.ticket
            body["reply_to"] = self.reply_to
        headers: dict[str, Any] = {"clock": clock}
        if self.expires is not None:
            headers["expires"] = self.expires
        return Notice("", json.dumps(body), headers)

    def for_node(self, hostname: str) -> bool:
        """Whether ``hostname`` should run this request."""
        if self.destination and hostname not in self.destination:
            return False
        if self.pattern:
            if self.matcher in (None, "glob"):
                return fnmatch.fnmatchcase(hostname, self.pattern)
            if self.matcher == "pcre":
                return re.search(self.pattern, hostname) is not None
            return False
        return True

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) > self.expires


class BadRequest(ValueError):
    """A message on the control exchange that is not a request."""


def parse_request(notice: Notice) -> Request:
    """The request in ``notice``.

    Raises:
        BadRequest: not JSON, or not shaped like Celery's request.
    """
    try:
        body = json.loads(notice.body)
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise BadRequest("no 'method' string in the body")
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise BadRequest("'arguments' is not a mapping")
    destination = body.get("destination")
    if isinstance(destination, str):
        destination = [destination]
    if destination is not None and not isinstance(destination, list):
        raise BadRequest("'destination' is not a list of node names")
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict)
                                     and isinstance(reply_to.get("routing_key"), str)):
        raise BadRequest("'reply_to' has no routing_key")
    expires = notice.headers.get("expires")
    return Request(body["method"], arguments, destination, body.get("pattern"),
                   body.get("matcher"), body.get("ticket"), reply_to,
                   float(expires) if isinstance(expires, (int, float)) else None,
                   notice.headers.get("clock"))


def new_ticket() -> str:
    return str(uuid.uuid4())


def reply_notice(request: Request, hostname: str, value: Any, clock: int) -> Notice:
    assert request.reply_to is not None
    return Notice(request.reply_to["routing_key"],
                  json.dumps({hostname: value}, default=repr),
                  {"ticket": request.ticket, "clock": clock})
