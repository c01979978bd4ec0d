"""URL helpers shared by brokers and backends, and the masking of credentials.

Everything the worker prints about a connection goes through :func:`mask_password`
(a URL) or :func:`mask_options` (transport options); anything else it prints (log lines,
tracebacks, error messages of client libraries) can be scrubbed with :func:`redact`
and the secrets :func:`secrets_of` found in the configuration.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import unquote

MASK = "**"

#: names of query parameters, options and settings whose value is a credential
SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|credential|api_?key|access_?key|private_?key|security_key"
    r"|^auth$",
    re.IGNORECASE,
)

# A scheme, as RFC 3986 spells it (``redis``, ``rediss``, ``redis+socket``, ``db+sqlite``).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# kombu's fail-over lists: ``sentinel://:p@h1:26379;sentinel://:p@h2:26379``.
_FAILOVER_SPLIT = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
_QUERY_PAIR = re.compile(r"(?P<sep>^|[?&;])(?P<name>[^=&;#]+)=(?P<value>[^&;#]*)")
_PORT = re.compile(r"\d*")

# Secrets shorter than this are not scrubbed from free text: replacing every ``a`` in a
# log line would hide more than it protects. URLs and options are masked whatever the
# length.
MIN_REDACTED_LENGTH = 4


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else url.lower()


def _split(url: str) -> tuple[str, str | None, str] | None:
    """``(scheme://, userinfo or None, rest after the '@')``, or None without a scheme.

    The authority normally ends at the first ``/``, ``?`` or ``#``; a password that
    holds one of those unescaped is still found, by the last ``@`` after it (unless what
    precedes is plainly ``host:port``). This errs on the side of masking too much.
    """
    match = _SCHEME.match(url)
    if not match:
        return None
    prefix, rest = match.group(0), url[match.end():]
    end = len(rest)
    for char in "/?#":
        i = rest.find(char)
        if i != -1:
            end = min(end, i)
    at = rest.rfind("@", 0, end)
    if at == -1 and "@" in rest[end:]:
        host, colon, port = rest[:end].partition(":")
        if colon and not (host and _PORT.fullmatch(port)):
            at = rest.rfind("@")
    if at == -1:
        return prefix, None, rest
    return prefix, rest[:at], rest[at + 1:]


def _mask_query(text: str) -> str:
    """``...?password=x&db=1`` -> ``...?password=**&db=1`` (only past the ``?``)."""
    head, mark, query = text.partition("?")
    if not mark:
        return text

    def repl(m: re.Match[str]) -> str:
        if SECRET_NAME.search(unquote(m.group("name"))):
            return f"{m.group('sep')}{m.group('name')}={MASK}"
        return m.group(0)

    return head + mark + _QUERY_PAIR.sub(repl, query)


def mask_password(url: Any) -> Any:
    """Every credential in a URL replaced with ``**``, for banners, logs and errors.

    ``redis://:secret@host/0`` -> ``redis://:**@host/0``; ``amqp://u:p@h//`` ->
    ``amqp://u:**@h//``; ``redis://h/0?password=p`` -> ``redis://h/0?password=**``;
    each URL of a ``;``-separated fail-over list is masked. A URL with no credential is
    returned unchanged, and so is anything that is not a string.
    """
    if not isinstance(url, str) or not url:
        return url
    parts = _FAILOVER_SPLIT.split(url)
    if len(parts) > 1:
        return ";".join(mask_password(part) for part in parts)
    split = _split(url)
    if split is None:
        return _mask_query(url)
    prefix, userinfo, rest = split
    if userinfo is None:
        return prefix + _mask_query(rest)
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else user
    return f"{prefix}{masked}@{_mask_query(rest)}"


def mask_options(options: Any) -> Any:
    """A copy of transport options (or any settings) with credentials masked.

    Values of secret-looking names (``password``, ``sentinel_kwargs['password']``,
    ``ssl_keyfile_password`` ...) become ``**``; URLs inside are masked.
    """
    if isinstance(options, Mapping):
        return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k)
                    and v not in (None, "") else mask_options(v))
                for k, v in options.items()}
    if isinstance(options, (list, tuple)):
        return type(options)(mask_options(v) for v in options)
    if isinstance(options, str):
        return mask_password(options)
    return options


def _url_secrets(url: str) -> Iterator[str]:
    for one in _FAILOVER_SPLIT.split(url):
        split = _split(one)
        if split is None:
            rest = one
        else:
            _, userinfo, rest = split
            if userinfo is not None and ":" in userinfo:
                yield userinfo.partition(":")[2]
        _, mark, query = rest.partition("?")
        for m in _QUERY_PAIR.finditer(query if mark else ""):
            if SECRET_NAME.search(unquote(m.group("name"))):
                yield m.group("value")


def secrets_of(*values: Any) -> set[str]:
    """The credentials held by URLs, option mappings or settings, for :func:`redact`.

    Each is given as written and percent-decoded (an error message may show either).
    """
    found: set[str] = set()

    def walk(value: Any, secret: bool = False) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            if secret:
                found.add(value)
            elif "://" in value or "?" in value:
                found.update(_url_secrets(value))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or (isinstance(k, str) and bool(SECRET_NAME.search(k))))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                walk(v, secret)

    for value in values:
        walk(value)
    decoded = {unquote(s) for s in found}
    return {s for s in found | decoded if s}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (of at least ``MIN_REDACTED_LENGTH`` characters) as ``**``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACTED_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


def sqlite_path(url: str) -> str:
    """Path of an SQLite URL: ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``db+sqlite://...``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"
