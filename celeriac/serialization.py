"""Serializers and compressors, by name and by content type.

JSON is built in; msgpack and YAML load their packages on first use; pickle is available
but a worker only accepts it when the user lists it in ``accept_content``.
"""

from __future__ import annotations

import base64
import bz2
import datetime
import decimal
import gzip
import json
import pickle
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .exceptions import ContentDisallowed, DecodeError, MissingDependency


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    content_type: str
    content_encoding: str  # "utf-8" for text formats, "binary" otherwise
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_default(obj: Any) -> Any:
    # The same typed markers kombu >= 5.3 writes, so a Celery peer and a celeriac one
    # both get datetimes, UUIDs, Decimals and bytes back as those types.
    if isinstance(obj, datetime.datetime):
        return {"__type__": "datetime", "__value__": obj.isoformat()}
    if isinstance(obj, datetime.date):
        return {"__type__": "date", "__value__": obj.isoformat()}
    if isinstance(obj, datetime.time):
        return {"__type__": "time", "__value__": obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return {"__type__": "decimal", "__value__": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": obj.hex}}
    if isinstance(obj, bytes):
        try:
            return {"__type__": "bytes", "__value__": obj.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_json_encoder = json.JSONEncoder(default=_json_default, ensure_ascii=False,
                                 separators=(", ", ": "))
_json_decoder = json.JSONDecoder()


def _json_dumps(obj: Any) -> bytes:
    return _json_encoder.encode(obj).encode("utf-8")


# kombu >= 5.3 (every Celery client since 5.3) writes these types as
# {"__type__": marker, "__value__": value}; a Celery worker reads them back as the
# Python objects, so a celeriac worker (and AsyncResult) must too.
_KOMBU_TYPES: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.datetime.fromisoformat,
    "date": lambda v: datetime.datetime.fromisoformat(v).date(),
    "time": datetime.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": lambda v: uuid.UUID(**v) if isinstance(v, dict) else uuid.UUID(v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("utf-8")),
}


def _kombu_object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        decode = _KOMBU_TYPES.get(obj["__type__"])
        if decode is not None:
            return decode(obj["__value__"])
    return obj


_json_kombu_decoder = json.JSONDecoder(object_hook=_kombu_object_hook)


def _json_loads(data: bytes | str) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).decode("utf-8")
    # The hook costs a call per object; only pay it when a marker can be present.
    if "__type__" in data:
        return _json_kombu_decoder.decode(data)
    return _json_decoder.decode(data)


def _msgpack_dumps(obj: Any) -> bytes:
    return _require("msgpack", "msgpack").packb(obj, use_bin_type=True, default=_json_default)


def _msgpack_loads(data: bytes) -> Any:
    return _require("msgpack", "msgpack").unpackb(data, raw=False,
                                                   object_hook=_kombu_object_hook)


def _yaml_dumps(obj: Any) -> bytes:
    return _require("yaml", "yaml").safe_dump(obj).encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    return _require("yaml", "yaml").safe_load(data)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - only reached when the user accepts pickle


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependency(module, extra, f"the {module} serializer") from None


_SERIALIZERS: dict[str, Serializer] = {}
_BY_CONTENT_TYPE: dict[str, Serializer] = {}


def register(serializer: Serializer, aliases: Iterable[str] = ()) -> None:
    """Register a serializer under its name, its aliases and its content type."""
    _SERIALIZERS[serializer.name] = serializer
    for alias in aliases:
        _SERIALIZERS[alias] = serializer
    _BY_CONTENT_TYPE[serializer.content_type] = serializer


register(Serializer("json", "application/json", "utf-8", _json_dumps, _json_loads))
register(Serializer("msgpack", "application/x-msgpack", "binary", _msgpack_dumps, _msgpack_loads))
register(Serializer("yaml", "application/x-yaml", "utf-8", _yaml_dumps, _yaml_loads))
register(Serializer("pickle", "application/x-python-serialize", "binary",
                    lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),
                    _pickle_loads))


def serializer(name: str) -> Serializer:
    """Return the serializer called ``name`` (or with that content type)."""
    found = _SERIALIZERS.get(name) or _BY_CONTENT_TYPE.get(name)
    if found is None:
        known = ", ".join(sorted(set(_SERIALIZERS)))
        raise ContentDisallowed(f"unknown serializer {name!r}; known serializers: {known}")
    return found


def accepted_content_types(accept: Iterable[str] | None) -> frozenset[str]:
    """Turn ``accept_content`` (names or content types) into a set of content types."""
    if accept is None:
        accept = ("json",)
    return frozenset(serializer(item).content_type for item in accept)


def dumps(obj: Any, name: str) -> tuple[bytes, str, str]:
    """Serialize ``obj``; returns ``(data, content_type, content_encoding)``."""
    s = serializer(name)
    return s.dumps(obj), s.content_type, s.content_encoding


def loads(data: bytes, content_type: str | None, accept: frozenset[str] | None = None) -> Any:
    """Deserialize ``data``, refusing content types not in ``accept``.

    Raises:
        ContentDisallowed: the content type is missing, unknown or not accepted.
        DecodeError: the data does not decode with its declared serializer.
    """
    if not content_type:
        raise ContentDisallowed("message has no content type; refusing to guess")
    if not isinstance(content_type, str):
        raise ContentDisallowed(f"content type {content_type!r} is not a string")
    if accept is not None and content_type not in accept:
        known = _BY_CONTENT_TYPE.get(content_type)
        label = f"{content_type!r} ({known.name})" if known else repr(content_type)
        raise ContentDisallowed(
            f"refused content of type {label}; accepted: {sorted(accept)} "
            "(add it to accept_content if you trust the senders)"
        )
    s = _BY_CONTENT_TYPE.get(content_type)
    if s is None:
        raise ContentDisallowed(f"unknown content type {content_type!r}")
    try:
        return s.loads(data)
    except MissingDependency:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc


# -- compression --------------------------------------------------------------------
# Content types follow kombu's, so compressed messages interoperate with Celery.
_COMPRESSORS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "zlib": ("application/x-gzip", zlib.compress),
    "gzip": ("application/x-gzip", zlib.compress),
    "bzip2": ("application/x-bz2", bz2.compress),
    "bz2": ("application/x-bz2", bz2.compress),
}
_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": zlib.decompress,
    "application/gzip": gzip.decompress,
    "application/x-bz2": bz2.decompress,
}


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress with ``method`` (zlib, gzip, bzip2); returns ``(data, content type)``."""
    try:
        content_type, fn = _COMPRESSORS[method]
    except KeyError:
        raise ValueError(
            f"unknown compression {method!r}; known: {', '.join(sorted(_COMPRESSORS))}"
        ) from None
    return fn(data), content_type


def decompress(data: bytes, content_type: str) -> bytes:
    """Undo ``compress``; ``content_type`` is the message's ``compression`` header.

    Raises:
        DecodeError: an unknown compression (or not a name at all), or corrupt data.
    """
    fn = _DECOMPRESSORS.get(content_type) if isinstance(content_type, str) else None
    if fn is None:
        raise DecodeError(f"unknown compression {content_type!r}; known: "
                          f"{', '.join(sorted(_DECOMPRESSORS))}")
    try:
        return fn(data)
    except Exception as exc:
        raise DecodeError(f"cannot decompress {content_type} body: {exc}") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(data: str | bytes) -> bytes:
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise DecodeError(f"body is not valid base64: a {type(data).__name__}, not text")
    try:
        return base64.b64decode(data)
    except Exception as exc:
        raise DecodeError(f"body is not valid base64: {exc}") from exc
