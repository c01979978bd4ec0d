"""Unit tests for celeriac.serialization: serializers by name and content type, accept lists."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from celeriac import serialization
from celeriac.exceptions import CeleriacError, ContentDisallowed, DecodeError

JSON_CT = "application/json"
PICKLE_CT = "application/x-python-serialize"
MSGPACK_CT = "application/x-msgpack"
YAML_CT = "application/x-yaml"


def roundtrip(obj: object, name: str, accept: frozenset[str] | None = None) -> object:
    data, content_type, _ = serialization.dumps(obj, name)
    return serialization.loads(data, content_type, accept)


# -- json -------------------------------------------------------------------------------
def test_json_is_utf8_application_json() -> None:
    data, content_type, encoding = serialization.dumps({"ü": [1, 2.5, None, True]}, "json")
    assert (content_type, encoding) == (JSON_CT, "utf-8")
    assert json.loads(data.decode("utf-8")) == {"ü": [1, 2.5, None, True]}


def test_json_round_trip_of_plain_data() -> None:
    value = {"a": [1, "two", None, {"n": -3.5}], "b": True, "empty": {}}
    assert roundtrip(value, "json") == value


def test_json_keeps_datetimes_as_datetimes_like_kombu() -> None:
    aware = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    naive = datetime(2030, 1, 2, 3, 4, 5)
    value = {"aware": aware, "naive": naive, "day": date(2030, 1, 2)}
    assert roundtrip(value, "json") == value
    data, _, _ = serialization.dumps(aware, "json")
    assert json.loads(data) == {"__type__": "datetime",
                                "__value__": "2030-01-02T03:04:05.123456+00:00"}


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_uuid_decimal_and_bytes_keep_their_types(name: str) -> None:
    u = uuid.uuid4()
    value = [u, Decimal("1.10"), b"text", b"\xff\x00"]
    assert roundtrip(value, name) == value  # Decimal keeps its exact digits


def test_typed_markers_match_kombu() -> None:
    kombu_json = pytest.importorskip("kombu.utils.json")
    value = {"d": datetime(2030, 1, 2, tzinfo=timezone.utc), "u": uuid.uuid4(),
             "x": Decimal("2.5"), "b": b"ab", "raw": b"\xff"}
    ours, _, _ = serialization.dumps(value, "json")
    assert json.loads(ours) == json.loads(kombu_json.dumps(value))


def test_json_turns_tuples_and_sets_into_lists() -> None:
    out = roundtrip({"t": (1, (2, 3)), "s": {4}}, "json")
    assert out == {"t": [1, [2, 3]], "s": [4]}


def test_json_refuses_objects_it_cannot_represent() -> None:
    with pytest.raises(TypeError, match="object"):
        serialization.dumps({"x": object()}, "json")


def test_json_bad_data_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        serialization.loads(b"{not json", JSON_CT, frozenset({JSON_CT}))
    with pytest.raises(DecodeError):
        serialization.loads(b"\xff\xfe", JSON_CT, frozenset({JSON_CT}))


# -- msgpack and yaml -------------------------------------------------------------------
def test_msgpack_round_trip() -> None:
    pytest.importorskip("msgpack")
    value = {"a": [1, 2, 3], "b": "ü", "c": None, "d": 2.5, "raw": b"\x00\x01"}
    data, content_type, encoding = serialization.dumps(value, "msgpack")
    assert (content_type, encoding) == (MSGPACK_CT, "binary")
    assert serialization.loads(data, content_type, frozenset({MSGPACK_CT})) == value


def test_msgpack_bad_data_is_a_decode_error() -> None:
    pytest.importorskip("msgpack")
    with pytest.raises(DecodeError):
        serialization.loads(b"\xc1", MSGPACK_CT, frozenset({MSGPACK_CT}))


def test_yaml_round_trip() -> None:
    pytest.importorskip("yaml")
    value = {"a": [1, 2, 3], "b": "ü", "c": None, "nested": {"x": [True, False]}}
    data, content_type, encoding = serialization.dumps(value, "yaml")
    assert (content_type, encoding) == (YAML_CT, "utf-8")
    assert serialization.loads(data, content_type, frozenset({YAML_CT})) == value


def test_yaml_loads_safely() -> None:
    pytest.importorskip("yaml")
    evil = b"!!python/object/apply:os.system ['echo pwned']"
    with pytest.raises(DecodeError):
        serialization.loads(evil, YAML_CT, frozenset({YAML_CT}))


# -- pickle -----------------------------------------------------------------------------
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_pickle_round_trip_when_accepted() -> None:
    value = {"p": Point(1, 2), "t": (1, 2), "s": {3}}
    accept = serialization.accepted_content_types(["json", "pickle"])
    assert roundtrip(value, "pickle", accept) == value


def test_pickle_is_refused_by_default() -> None:
    data, content_type, _ = serialization.dumps(Point(1, 2), "pickle")
    assert content_type == PICKLE_CT
    default = serialization.accepted_content_types(None)
    with pytest.raises(ContentDisallowed, match="accept_content"):
        serialization.loads(data, content_type, default)
    with pytest.raises(ContentDisallowed):
        serialization.loads(data, content_type, frozenset({JSON_CT}))


def test_no_content_type_is_refused() -> None:
    with pytest.raises(ContentDisallowed):
        serialization.loads(b"[]", None)
    with pytest.raises(ContentDisallowed):
        serialization.loads(b"[]", "", frozenset({JSON_CT}))


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(ContentDisallowed):
        serialization.loads(b"[]", "application/x-unknown")


# -- names and accept lists -------------------------------------------------------------
def test_unknown_serializer_error_lists_the_known_ones() -> None:
    with pytest.raises(CeleriacError) as info:
        serialization.dumps([1], "protobuf9")
    text = str(info.value)
    assert "protobuf9" in text
    for known in ("json", "msgpack", "yaml", "pickle"):
        assert known in text


def test_serializer_is_found_by_name_or_content_type() -> None:
    assert serialization.serializer("json").content_type == JSON_CT
    assert serialization.serializer(JSON_CT).name == "json"
    assert serialization.serializer(PICKLE_CT).name == "pickle"


def test_accepted_content_types_maps_names_and_content_types() -> None:
    assert serialization.accepted_content_types(["json"]) == {JSON_CT}
    assert serialization.accepted_content_types(["json", "pickle", "msgpack", "yaml"]) == {
        JSON_CT, PICKLE_CT, MSGPACK_CT, YAML_CT}
    # Celery lets accept_content list content types as well as names.
    assert serialization.accepted_content_types([JSON_CT, "pickle"]) == {JSON_CT, PICKLE_CT}
    assert serialization.accepted_content_types(("json", JSON_CT)) == {JSON_CT}


def test_accept_defaults_to_json_only() -> None:
    assert serialization.accepted_content_types(None) == {JSON_CT}


def test_accept_list_with_an_unknown_name_is_an_error() -> None:
    with pytest.raises(CeleriacError, match="nosuch"):
        serialization.accepted_content_types(["json", "nosuch"])


# -- compression ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["zlib", "gzip", "bzip2", "bz2"])
def test_compress_round_trip(method: str) -> None:
    data = b"hello world " * 100
    packed, content_type = serialization.compress(data, method)
    assert len(packed) < len(data)
    assert serialization.decompress(packed, content_type) == data


# -- what Celery clients send -----------------------------------------------------------
def test_json_reads_kombus_typed_values() -> None:
    # kombu >= 5.3 tags these types; a Celery worker gets the Python objects back.
    raw = json.dumps([
        {"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"},
        {"__type__": "date", "__value__": "2030-01-02"},
        {"__type__": "decimal", "__value__": "1.10"},
        {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000001"}},
        {"__type__": "bytes", "__value__": "raw"},
        {"nested": {"__type__": "datetime", "__value__": "2030-01-02T03:04:05"}},
        {"__type__": "unknown-marker", "__value__": 1},
        {"__type__": "datetime", "__value__": "x", "other": 1},
    ]).encode()
    out = serialization.loads(raw, JSON_CT, frozenset({JSON_CT}))
    assert out == [
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        date(2030, 1, 2),
        Decimal("1.10"),
        uuid.UUID(int=1),
        b"raw",
        {"nested": datetime(2030, 1, 2, 3, 4, 5)},
        {"__type__": "unknown-marker", "__value__": 1},       # left alone
        {"__type__": "datetime", "__value__": "x", "other": 1},  # not a marker object
    ]


def test_json_reads_what_kombu_writes() -> None:
    kombu_json = pytest.importorskip("kombu.utils.json")
    value = [datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc), uuid.uuid4(),
             Decimal("2.50"), b"\x00\xffbin", {"k": date(2030, 1, 2)}]
    raw = kombu_json.dumps(value).encode()
    assert serialization.loads(raw, JSON_CT, frozenset({JSON_CT})) == value
