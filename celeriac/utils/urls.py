"""URL helpers shared by brokers and backends."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else url.lower()


def mask_password(url: str) -> str:
    """``redis://:secret@host/0`` -> ``redis://:**@host/0``, for banners and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:**@{host}", parts.path, parts.query, parts.fragment))


def sqlite_path(url: str) -> str:
    """Path of an SQLite URL: ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``db+sqlite://...``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"
