"""Basic auth, bearer token, CSRF and read-only, as one ASGI middleware.

Every request is judged here before any route runs, in this order:

1. ``/healthcheck`` (and ``/metrics`` with ``--metrics-public``) pass untouched.
   Without credentials, only requests for a loopback ``Host`` are answered (a page
   elsewhere cannot read the dashboard through DNS rebinding).
2. With credentials configured, the request must carry them (``Authorization: Basic``
   or ``Bearer``), else 401. Secrets are compared with ``hmac.compare_digest``.
3. A state-changing method (POST, PUT, PATCH, DELETE) is an action: refused with 403
   in ``--read-only`` or when no credentials are configured at all.
4. Then the CSRF rule: a bearer token, or an ``X-CSRF-Token`` header equal to the
   ``celeriac_csrf`` cookie, or a request with neither ``Origin`` nor
   ``Sec-Fetch-Site`` (curl, a script: browsers always send one of them on a
   cross-site POST). Otherwise 403.

Each response to a request that had no ``celeriac_csrf`` cookie sets one
(``SameSite=Strict``); the route ``/api/dashboard/session`` tells the pages its value.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable

from .options import DashboardOptions, is_loopback

CSRF_COOKIE = "celeriac_csrf"
CSRF_HEADER = b"x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NO_USER = "actions need a user: start the dashboard with --basic-auth or --token"
READ_ONLY = "the dashboard is read-only (--read-only)"
CSRF_FAILED = ("CSRF check failed: send the X-CSRF-Token header with the value of the "
               "celeriac_csrf cookie (GET /api/dashboard/session gives it), or use a "
               "bearer token")
FOREIGN_HOST = ("without credentials the dashboard answers only requests for a loopback "
                "host (127.0.0.1, localhost, [::1]): another Host may be a web page's DNS "
                "rebinding trick; behind a proxy, send Host 127.0.0.1 or start the "
                "dashboard with --basic-auth or --token")
STATE_KEY = "celeriac"  # scope["state"]["celeriac"]: what routes learn of the caller

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityMiddleware:
    """Wraps the dashboard's ASGI app; see the module docstring for the rules."""

    def __init__(self, app: ASGIApp, options: DashboardOptions) -> None:
        self.app = app
        self.options = options
        prefix = options.url_prefix
        self.public = {f"{prefix}/healthcheck"}
        if options.metrics_public:
            self.public.add(f"{prefix}/metrics")
        # Encoded once: the compare is over bytes of the same kind each time.
        self._users = [(u.encode(), p.encode()) for u, p in options.basic_auth]
        self._token = options.token.encode() if options.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none are served: refused before any route
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if not self.options.auth_enabled and not is_loopback(_host(headers)):
            await self._deny(send, 403, FOREIGN_HOST)
            return
        user, bearer = self.authenticate(headers.get(b"authorization", b""))
        if self.options.auth_enabled and user is None:
            await self._deny(send, 401, "authentication needed: send HTTP basic auth "
                             "credentials or 'Authorization: Bearer <token>'")
            return
        cookie = _cookie(headers, CSRF_COOKIE)
        method = scope["method"].upper()
        if method in UNSAFE_METHODS:
            refusal = self.refuse_action(headers, bearer, cookie)
            if refusal is not None:
                await self._deny(send, 403, refusal)
                return
        fresh = None if cookie else secrets.token_urlsafe(24)
        scope.setdefault("state", {})[STATE_KEY] = {
            "user": user, "bearer": bearer, "csrf_token": cookie or fresh}
        if fresh is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._with_cookie(send, fresh))

    def authenticate(self, header: bytes) -> tuple[str | None, bool]:
        """(user name, by bearer token) for an ``Authorization`` header; (None, False)
        when it names nobody configured."""
        scheme, _, value = header.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer" and self._token is not None:
            if hmac.compare_digest(value.strip(), self._token):
                return "token", True
            return None, False
        if scheme == b"basic" and self._users:
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None, False
            name, _, password = decoded.partition(b":")
            found = None
            for user, secret in self._users:  # every entry compared: no early exit
                if hmac.compare_digest(name, user) & hmac.compare_digest(password, secret):
                    found = user
            if found is not None:
                return found.decode(errors="replace"), False
        return None, False

    def refuse_action(self, headers: dict[bytes, bytes], bearer: bool,
                      cookie: str | None) -> str | None:
        """Why a state-changing request may not go on, or None when it may (``cookie``:
        the request's ``celeriac_csrf`` cookie, parsed once by the caller)."""
        if not self.options.auth_enabled:
            return NO_USER
        if self.options.read_only:
            return READ_ONLY
        if bearer:
            return None
        sent = headers.get(CSRF_HEADER, b"").decode("latin-1")
        if sent and cookie and hmac.compare_digest(sent.encode(), cookie.encode()):
            return None
        if b"origin" not in headers and b"sec-fetch-site" not in headers:
            return None  # not a browser: nothing a third-party page could forge
        return CSRF_FAILED

    def _with_cookie(self, send: Send, token: str) -> Send:
        path = self.options.url_prefix or "/"
        secure = "; Secure" if self.options.certfile else ""
        value = f"{CSRF_COOKIE}={token}; Path={path}; SameSite=Strict{secure}".encode()

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []),
                                                 (b"set-cookie", value)])
            await send(message)

        return sending

    async def _deny(self, send: Send, status: int, error: str) -> None:
        body = json.dumps({"error": error}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if status == 401:
            if self._users:
                headers.append((b"www-authenticate", b'Basic realm="celeriac"'))
            else:
                headers.append((b"www-authenticate", b'Bearer realm="celeriac"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def caller(scope_state: Any) -> dict[str, Any]:
    """What the middleware learnt of the request (``request.state``): user, bearer,
    csrf_token."""
    found = getattr(scope_state, STATE_KEY, None)
    return found if isinstance(found, dict) else {"user": None, "bearer": False,
                                                   "csrf_token": ""}


def _host(headers: dict[bytes, bytes]) -> str:
    """The Host header's name, without its port (``[::1]:5555`` -> ``::1``)."""
    host = headers.get(b"host", b"").decode("latin-1").strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    raw = headers.get(b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except Exception:  # noqa: BLE001 - a malformed Cookie header counts as none
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None
