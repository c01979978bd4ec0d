"""Messages the worker cannot understand are refused by ``decode_task`` itself.

Every header, property and body field the worker acts on is checked once, when the
message is decoded: a bad one raises ``MalformedMessage`` naming the field, the value
received and what was expected, and carrying the task id whenever the message holds one
as a string, so the worker can set the message aside at once and record FAILURE for its
caller (issue A7: such values used to fail later, inside the worker's loop, and were
retried for ever). Valid messages, Celery's included, decode as before, with ``eta``,
``expires`` and ``timelimit`` also read once into ``eta_at``, ``expires_at`` and
``timelimit``.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import pytest

from celeriac import Celery, messages, serialization
from celeriac.exceptions import ContentDisallowed, DecodeError, InvalidTaskError
from celeriac.messages import (
    EMPTY_EMBED,
    MalformedMessage,
    Message,
    TaskMessage,
    decode_envelope,
    decode_task,
    encode_envelope,
    task_message,
)

JSON = frozenset({"application/json"})
SIG = {"task": "proj.echo", "args": ["x"], "kwargs": {}, "options": {},
       "subtask_type": None, "immutable": False}


def new_id() -> str:
    return str(uuid.uuid4())


def through_the_wire(message: Message) -> Message:
    return decode_envelope(encode_envelope(message))


def refused(message: Message, accept: frozenset[str] | None = JSON) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        decode_task(message, accept)
    return info.value


def v2(tid: str, *, headers: dict[str, Any] | None = None,
       properties: dict[str, Any] | None = None, body: Any = None,
       raw_body: bytes | None = None, **options: Any) -> Message:
    """A celeriac protocol 2 message through the envelope, with fields overwritten."""
    msg = task_message("proj.add", tid, (2, 3), {"k": 1}, **options)
    msg.headers.update(headers or {})
    msg.properties.update(properties or {})
    if body is not None:
        msg.body = json.dumps(body).encode()
    if raw_body is not None:
        msg.body = raw_body
    return through_the_wire(msg)


def v1(tid: str, correlation_id: str | None = None, **fields: Any) -> Message:
    """A protocol 1 message (empty headers, everything in the body)."""
    body = {"task": "proj.add", "id": tid, "args": [2, 3], "kwargs": {}, "retries": 0,
            "eta": None, "expires": None, "utc": True, "callbacks": None,
            "errbacks": None, "timelimit": [None, None], "taskset": None, "chord": None}
    body.update(fields)
    props = {"correlation_id": correlation_id} if correlation_id else {}
    return through_the_wire(Message({}, props, json.dumps(body).encode(),
                                    "application/json", "utf-8"))


# -- one bad field at a time: the error names it and the id is recovered ---------------
# (where the bad value goes, the value, the name the error must give the field)
HEADER_CASES: list[tuple[str, Any, str]] = [
    ("eta", "not-a-date", "header 'eta'"),
    ("eta", 12345, "header 'eta'"),
    ("eta", 12.5, "header 'eta'"),
    ("eta", ["2030-01-01T00:00:00"], "header 'eta'"),
    ("eta", {"at": "tomorrow"}, "header 'eta'"),
    ("eta", True, "header 'eta'"),
    ("expires", "soon", "header 'expires'"),
    ("expires", 60, "header 'expires'"),
    ("expires", [1], "header 'expires'"),
    ("task", ["proj.add"], "header 'task'"),
    ("task", 5, "header 'task'"),
    ("task", "", "header 'task'"),
    ("task", None, "header 'task'"),
    ("timelimit", "10", "header 'timelimit'"),
    ("timelimit", ["ten", None], "header 'timelimit'"),
    ("timelimit", [None, "5"], "header 'timelimit'"),
    ("timelimit", [1, 2, 3], "header 'timelimit'"),
    ("timelimit", [-1, None], "header 'timelimit'"),
    ("timelimit", [True, None], "header 'timelimit'"),
    ("timelimit", {"hard": 10}, "header 'timelimit'"),
    ("timelimit", 10, "header 'timelimit'"),
    ("retries", "1", "header 'retries'"),
    ("retries", 1.5, "header 'retries'"),
    ("retries", -1, "header 'retries'"),
    ("retries", True, "header 'retries'"),
    ("retries", [0], "header 'retries'"),
    ("group_index", "0", "header 'group_index'"),
    ("group_index", -1, "header 'group_index'"),
    ("group_index", 1.0, "header 'group_index'"),
    ("root_id", 5, "header 'root_id'"),
    ("root_id", ["r"], "header 'root_id'"),
    ("parent_id", {"id": "p"}, "header 'parent_id'"),
    ("parent_id", 7, "header 'parent_id'"),
    ("group", ["g"], "header 'group'"),
    ("shadow", 1, "header 'shadow'"),
    ("ignore_result", "false", "header 'ignore_result'"),
    ("ignore_result", [], "header 'ignore_result'"),
    ("compression", ["application/x-gzip"], "header 'compression'"),
]


@pytest.mark.parametrize("key, value, field", HEADER_CASES,
                         ids=[f"{k}={v!r}" for k, v, _ in HEADER_CASES])
def test_a_bad_header_is_refused_naming_it_and_the_id_is_kept(key: str, value: Any,
                                                              field: str) -> None:
    tid = new_id()
    exc = refused(v2(tid, headers={key: value}))
    assert exc.task_id == tid
    assert exc.field == field
    text = str(exc)
    assert field in text and "expected" in text
    assert exc.reason == text
    if value not in ("", None):
        assert repr(value)[:20] in text  # the value received is shown
    if key != "task":
        assert exc.task_name == "proj.add"


PROPERTY_CASES: list[tuple[str, Any]] = [
    ("priority", "high"), ("priority", 1.5), ("priority", True),
    ("correlation_id", 5), ("reply_to", ["q"]), ("delivery_info", "celery"),
]


@pytest.mark.parametrize("key, value", PROPERTY_CASES,
                         ids=[f"{k}={v!r}" for k, v in PROPERTY_CASES])
def test_a_bad_property_is_refused_naming_it(key: str, value: Any) -> None:
    tid = new_id()
    exc = refused(v2(tid, properties={key: value}))
    assert exc.task_id == tid
    assert exc.field == f"property {key!r}"
    assert f"property {key!r}" in str(exc)


BODY_CASES: list[tuple[Any, str]] = [
    ([[1], {}], "body"),
    ([[1], {}, {}, {}], "body"),
    ("abc", "body"),
    ({"args": [], "kwargs": {}, "embed": {}}, "body"),
    (42, "body"),
    (None, "body"),
    (["abc", {}, {}], "body args"),
    ([{"x": 1}, {}, {}], "body args"),
    ([5, {}, {}], "body args"),
    ([[], [1, 2], {}], "body kwargs"),
    ([[], "k=v", {}], "body kwargs"),
    ([[], {}, "embed"], "body embed"),
    ([[], {}, [None, None]], "body embed"),
    ([[], {}, 0], "body embed"),
]


@pytest.mark.parametrize("body, field", BODY_CASES, ids=[repr(b)[:30] for b, _ in BODY_CASES])
def test_a_body_that_is_not_args_kwargs_embed_is_refused_naming_the_part(
        body: Any, field: str) -> None:
    tid = new_id()
    msg = v2(tid, raw_body=json.dumps(body).encode())
    exc = refused(msg)
    assert isinstance(exc, InvalidTaskError)  # what these raised before, still true
    assert exc.task_id == tid
    assert exc.field == field
    assert field in str(exc)


EMBED_CASES: list[tuple[str, Any, str]] = [
    ("callbacks", SIG, "embed callbacks"),  # one signature where a list belongs
    ("callbacks", "proj.echo", "embed callbacks"),
    ("callbacks", ["proj.echo"], "embed callbacks[0]"),
    ("callbacks", [SIG, 5], "embed callbacks[1]"),
    ("callbacks", [{"args": []}], "embed callbacks[0].task"),
    ("callbacks", [dict(SIG, task=5)], "embed callbacks[0].task"),
    ("callbacks", [dict(SIG, args="abc")], "embed callbacks[0].args"),
    ("callbacks", [dict(SIG, kwargs=[1])], "embed callbacks[0].kwargs"),
    ("callbacks", [dict(SIG, options="o")], "embed callbacks[0].options"),
    ("callbacks", [dict(SIG, subtask_type=3)], "embed callbacks[0].subtask_type"),
    ("callbacks", [dict(SIG, options={"countdown": "abc"})],
     "embed callbacks[0].options.countdown"),
    ("callbacks", [dict(SIG, options={"eta": "not-a-date"})],
     "embed callbacks[0].options.eta"),
    ("callbacks", [dict(SIG, options={"expires": [60]})],
     "embed callbacks[0].options.expires"),
    ("callbacks", [dict(SIG, options={"priority": "high"})],
     "embed callbacks[0].options.priority"),
    ("callbacks", [dict(SIG, options={"task_id": 5})],
     "embed callbacks[0].options.task_id"),
    ("callbacks", [dict(SIG, options={"time_limit": "1m"})],
     "embed callbacks[0].options.time_limit"),
    ("callbacks", [dict(SIG, options={"link": [dict(SIG, task=None)]})],
     "embed callbacks[0].options.link[0].task"),
    ("callbacks", [dict(SIG, options={"link_error": dict(SIG, args=1)})],
     "embed callbacks[0].options.link_error.args"),
    ("errbacks", {"task": "proj.echo"}, "embed errbacks"),
    ("errbacks", [None], "embed errbacks[0]"),
    ("chain", "abc", "embed chain"),
    ("chain", [SIG, {"args": []}], "embed chain[1].task"),
    ("chain", [dict(SIG, options={"group_index": "1"})], "embed chain[0].options.group_index"),
    ("chord", [SIG], "embed chord"),
    ("chord", "proj.tsum", "embed chord"),
    ("chord", dict(SIG, task=None), "embed chord.task"),
    # canvases inside: their members are signatures too
    ("chord", {"task": "celery.chord", "subtask_type": "chord", "args": [], "options": {},
               "kwargs": {"header": [SIG, {"task": 5}], "body": SIG}},
     "embed chord.kwargs.header[1].task"),
    ("chain", [{"task": "celery.group", "subtask_type": "group", "args": [], "options": {},
                "kwargs": {"tasks": [SIG, "x"]}}], "embed chain[0].kwargs.tasks[1]"),
]


@pytest.mark.parametrize("key, value, field", EMBED_CASES, ids=[f for _, _, f in EMBED_CASES])
def test_callbacks_errbacks_chain_and_chord_of_the_wrong_shape_are_refused(
        key: str, value: Any, field: str) -> None:
    tid = new_id()
    embed = dict(EMPTY_EMBED, **{key: value})
    exc = refused(v2(tid, body=[[2, 3], {}, embed]))
    assert exc.task_id == tid
    assert exc.field == field
    assert str(exc).startswith(f"invalid {field}: got ")


def test_non_string_keyword_names_are_refused_for_serializers_that_allow_them() -> None:
    pytest.importorskip("yaml")  # YAML (and pickle) maps may have keys of any type
    accept = serialization.accepted_content_types(["yaml"])
    tid = new_id()
    msg = through_the_wire(task_message("proj.add", tid, (), {1: "one"}, serializer="yaml"))
    exc = refused(msg, accept)
    assert exc.task_id == tid and exc.field == "body kwargs key"
    # the same message with string names is fine
    ok = through_the_wire(task_message("proj.add", tid, (), {"one": 1}, serializer="yaml"))
    assert decode_task(ok, accept).kwargs == {"one": 1}


def test_a_nan_or_infinite_time_limit_is_refused() -> None:
    for bad in ("NaN", "Infinity", "-Infinity"):
        tid = new_id()
        msg = v2(tid)
        env = json.loads(encode_envelope(msg))
        env["headers"]["timelimit"] = None
        raw = json.dumps(env).replace('"timelimit": null', f'"timelimit": [{bad}, null]')
        exc = refused(decode_envelope(raw))
        assert exc.field == "header 'timelimit'" and exc.task_id == tid


def test_the_bad_value_is_shown_shortened() -> None:
    tid = new_id()
    exc = refused(v2(tid, headers={"eta": "x" * 100_000}))
    assert len(str(exc)) < 250
    assert "'xxxx" in str(exc)
    exc = refused(v2(tid, body=[[], {}, {"callbacks": [[list(range(100_000))]]}]))
    assert len(str(exc)) < 250 and "..." in str(exc)


# -- the task id ---------------------------------------------------------------------------
def test_a_bad_id_header_falls_back_on_the_correlation_id() -> None:
    tid = new_id()
    exc = refused(v2(tid, headers={"id": 12345}))  # correlation_id is still the task id
    assert exc.field == "header 'id'" and exc.task_id == tid
    exc = refused(v2(tid, headers={"id": ["x"]}, properties={"correlation_id": None}))
    assert exc.task_id is None
    exc = refused(v2(tid, headers={"id": ""}, properties={"correlation_id": 5}))
    assert exc.task_id is None and exc.field == "header 'id'"


def test_missing_id_is_still_an_invalid_task_naming_the_id() -> None:
    msg = v2(new_id())
    del msg.headers["id"]
    msg.properties.pop("correlation_id")
    exc = refused(msg)
    assert isinstance(exc, InvalidTaskError) and "'id'" in str(exc)
    assert exc.task_id is None


def test_the_id_is_recovered_when_the_body_does_not_decode() -> None:
    tid = new_id()
    exc = refused(v2(tid, raw_body=b"[[1, 2], {}, {"))
    assert isinstance(exc, DecodeError)
    assert exc.task_id == tid and exc.task_name == "proj.add"
    assert "cannot decode application/json body" in str(exc)
    # protocol 1 holds its id in the body: when that does not decode, correlation_id
    msg = v1(tid, correlation_id=tid)
    msg.body = b'{"task": "proj.add", "id": '
    assert refused(msg).task_id == tid


@pytest.mark.parametrize("compression, body", [
    ("application/x-gzip", b"not zlib data"),
    ("application/x-lz99", b"whatever"),
    ("application/x-bz2", b"BZh9 broken"),
])
def test_the_id_is_recovered_when_the_body_does_not_decompress(compression: str,
                                                               body: bytes) -> None:
    tid = new_id()
    msg = v2(tid, headers={"compression": compression}, raw_body=body)
    exc = refused(msg)
    assert exc.task_id == tid
    assert compression in str(exc)


def test_kombu_type_markers_that_do_not_decode_keep_the_id() -> None:
    tid = new_id()
    msg = v2(tid, body=[[{"__type__": "datetime", "__value__": "garbage"}], {}, {}])
    assert refused(msg).task_id == tid


def test_message_task_id_is_only_ever_a_string() -> None:
    msg = Message({"id": 5}, {"correlation_id": ["x"]}, b"", "application/json", "utf-8")
    assert msg.task_id is None
    msg = Message({"id": 5}, {"correlation_id": "c1"}, b"", "application/json", "utf-8")
    assert msg.task_id == "c1"
    msg = Message({"id": "i1"}, {"correlation_id": "c1"}, b"", "application/json", "utf-8")
    assert msg.task_id == "i1"


def test_refused_content_is_still_content_disallowed_not_malformed() -> None:
    # The worker records ContentDisallowed on its own path; it must stay that type.
    msg = through_the_wire(task_message("proj.add", new_id(), (1,), serializer="pickle"))
    with pytest.raises(ContentDisallowed) as info:
        decode_task(msg, JSON)
    assert not isinstance(info.value, MalformedMessage)


def test_malformed_message_is_a_decode_error_with_json_safe_args() -> None:
    assert issubclass(MalformedMessage, InvalidTaskError)
    assert issubclass(MalformedMessage, DecodeError)
    exc = refused(v2(new_id(), headers={"eta": "not-a-date"}))
    # stored as a task's exception: only the reason travels, and it rebuilds
    assert exc.args == (exc.reason,)
    json.dumps(exc.args)
    again = MalformedMessage(*exc.args)
    assert str(again) == str(exc)


# -- protocol 1 ----------------------------------------------------------------------------
PROTOCOL1_CASES: list[tuple[str, Any]] = [
    ("eta", "not-a-date"), ("eta", 12345), ("expires", [1]), ("timelimit", ["a", None]),
    ("timelimit", 3), ("args", "abc"), ("args", {"a": 1}), ("kwargs", [1]),
    ("retries", "0"), ("taskset", 5), ("callbacks", SIG), ("errbacks", ["x"]),
    ("chord", [SIG]), ("task", ["proj.add"]),
]


@pytest.mark.parametrize("key, value", PROTOCOL1_CASES,
                         ids=[f"{k}={v!r}" for k, v in PROTOCOL1_CASES])
def test_protocol1_bad_fields_are_refused_and_the_id_kept(key: str, value: Any) -> None:
    tid = new_id()
    exc = refused(v1(tid, **{key: value}))
    assert exc.task_id == tid
    assert exc.field is not None
    assert exc.field.startswith(f"protocol 1 body {key!r}") or \
        exc.field.startswith(f"protocol 1 body {key}")


def test_protocol1_id_that_is_not_a_string_falls_back_on_the_correlation_id() -> None:
    tid = new_id()
    exc = refused(v1(5, correlation_id=tid))  # type: ignore[arg-type]
    assert exc.field == "protocol 1 body 'id'" and exc.task_id == tid


# -- the envelope --------------------------------------------------------------------------
def envelope(**fields: Any) -> dict[str, Any]:
    tid = fields.pop("tid")
    env = json.loads(encode_envelope(task_message("proj.add", tid, (1, 2))))
    env.update(fields)
    return env


def test_an_envelope_that_is_not_json_is_malformed_without_an_id() -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_envelope("{not json")
    assert info.value.task_id is None and info.value.field == "envelope"


@pytest.mark.parametrize("fields, field", [
    ({"headers": ["task", "id"]}, "envelope 'headers'"),
    ({"properties": "p"}, "envelope 'properties'"),
    ({"body": 12345}, "envelope 'body'"),
    ({"body": None}, "envelope 'body'"),
    ({"content-type": ["application/json"]}, "envelope 'content-type'"),
    ({"content-encoding": 5}, "envelope 'content-encoding'"),
])
def test_envelope_fields_of_the_wrong_type_are_malformed_with_the_id(
        fields: dict[str, Any], field: str) -> None:
    tid = new_id()
    with pytest.raises(MalformedMessage) as info:
        decode_envelope(json.dumps(envelope(tid=tid, **fields)))
    assert info.value.field == field
    assert info.value.task_id == tid  # from the headers, or else the correlation_id
    assert field in str(info.value)


def test_envelope_with_an_unknown_text_encoding_is_malformed() -> None:
    tid = new_id()
    env = envelope(tid=tid, **{"content-encoding": "no-such-codec"})
    env["properties"].pop("body_encoding")
    env["body"] = "[[1, 2], {}, {}]"
    with pytest.raises(MalformedMessage) as info:
        decode_envelope(json.dumps(env))
    assert info.value.task_id == tid and "no-such-codec" in str(info.value)


def test_envelope_with_an_unreadable_type_marker_in_its_headers_keeps_the_id() -> None:
    tid = new_id()
    env = envelope(tid=tid)
    env["headers"]["x-when"] = {"__type__": "datetime", "__value__": "garbage"}
    with pytest.raises(MalformedMessage) as info:
        decode_envelope(json.dumps(env))
    assert info.value.task_id == tid


def test_envelope_that_is_not_an_object_with_a_body() -> None:
    tid = new_id()
    env = envelope(tid=tid)
    del env["body"]
    with pytest.raises(MalformedMessage) as info:
        decode_envelope(json.dumps(env))
    assert info.value.task_id == tid
    with pytest.raises(MalformedMessage):
        decode_envelope("[1, 2]")


# -- what valid messages decode to -----------------------------------------------------------
def test_eta_expires_and_timelimit_are_read_once() -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    expires = datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    task = decode_task(v2(new_id(), eta=eta, expires=expires, time_limit=10,
                          soft_time_limit=2.5), JSON)
    assert task.eta_at == eta and task.eta_at.tzinfo is not None
    assert task.expires_at == expires and task.expires_at.utcoffset() == timedelta(hours=2)
    assert task.timelimit == (10.0, 2.5)
    assert all(type(x) is float for x in task.timelimit)
    # the headers are kept as sent: request.eta is Celery's string
    assert task.eta == "2030-01-02T03:04:05+00:00"
    assert task.headers["timelimit"] == [10, 2.5]


def test_no_eta_expires_or_limits() -> None:
    task = decode_task(v2(new_id()), JSON)
    assert task.eta_at is None and task.expires_at is None
    assert task.timelimit == (None, None)
    for timelimit in (None, [], [None, None], (None, None)):
        task = decode_task(v2(new_id(), headers={"timelimit": timelimit}), JSON)
        assert task.timelimit == (None, None)
    task = decode_task(v2(new_id(), headers={"timelimit": [None, 5]}), JSON)
    assert task.timelimit == (None, 5.0)
    # a zero limit is kept: "no limit", overriding the task's own (as before)
    task = decode_task(v2(new_id(), headers={"timelimit": [0, 0]}), JSON)
    assert task.timelimit == (0.0, 0.0)


@pytest.mark.parametrize("value, expected", [
    ("2030-01-02T03:04:05+00:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2030-01-02T03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),  # naive: UTC
    ("2030-01-02T05:04:05+02:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2030-01-02T03:04:05.123456+00:00",
     datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)),
    ("2030-01-02", datetime(2030, 1, 2, tzinfo=timezone.utc)),
    ("", None), (None, None), (0, None),  # empty means none, as in Celery
])
def test_eta_forms_celery_accepts(value: Any, expected: datetime | None) -> None:
    task = decode_task(v2(new_id(), headers={"eta": value, "expires": value}), JSON)
    assert task.eta_at == expected and task.expires_at == expected


def test_iso_forms_only_dateutil_reads_are_accepted_when_it_is_installed() -> None:
    pytest.importorskip("dateutil")
    task = decode_task(v2(new_id(), headers={"eta": "2030-01", "expires": "2030"}), JSON)
    assert task.eta_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert task.expires_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert messages.from_iso("2030-01-02T24:00:00") == datetime(2030, 1, 3,
                                                                 tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        messages.from_iso("not-a-date")


def test_an_eta_already_a_datetime_is_accepted() -> None:
    # kombu's JSON writes datetimes in headers as typed markers, read back as datetimes
    tid = new_id()
    env = envelope(tid=tid)
    env["headers"]["eta"] = {"__type__": "datetime", "__value__": "2030-01-02T03:04:05"}
    task = decode_task(decode_envelope(json.dumps(env)), JSON)
    assert task.eta_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert messages.from_iso(datetime(2030, 1, 2)) == datetime(2030, 1, 2,
                                                               tzinfo=timezone.utc)


def test_optional_headers_accept_null_and_celery_types() -> None:
    task = decode_task(v2(new_id(), headers={
        "group": None, "group_index": None, "root_id": None, "parent_id": None,
        "shadow": None, "ignore_result": None, "retries": None}), JSON)
    assert task.retries == 0
    task = decode_task(v2(new_id(), headers={
        "group": "g", "group_index": 3, "root_id": "r", "parent_id": "p", "shadow": "s",
        "ignore_result": True, "retries": 4}), JSON)
    assert (task.retries, task.headers["group_index"]) == (4, 3)
    task = decode_task(v2(new_id(), headers={"ignore_result": 0}), JSON)
    assert task.headers["ignore_result"] == 0


def test_signature_options_celery_sends_are_accepted() -> None:
    opts = {"task_id": new_id(), "countdown": 5, "expires": 30, "priority": 3,
            "eta": "2030-01-01T00:00:00", "link": SIG, "link_error": [SIG],
            "group_id": None, "group_index": 0, "queue": "q", "reply_to": "oid",
            "time_limit": 1.5, "soft_time_limit": None, "x-anything": [1, {"a": 2}]}
    chord_sig = {"task": "celery.chord", "args": [], "subtask_type": "chord",
                 "options": {}, "immutable": False,
                 "kwargs": {"kwargs": {}, "header": [SIG, SIG], "body": SIG}}
    embed = {"callbacks": [dict(SIG, options=opts)], "errbacks": [SIG],
             "chain": [chord_sig, SIG], "chord": dict(SIG, options={"task_id": "b"})}
    task = decode_task(v2(new_id(), body=[[1], {"a": 1}, embed]), JSON)
    assert task.embed == embed


# -- valid messages decode exactly as before -------------------------------------------
def reference_decode(message: Message) -> dict[str, Any]:
    """What decode_task returned before these checks (the fields the worker reads)."""
    payload = json.loads(message.body)
    if "task" in message.headers:
        args, kwargs, embed = payload
        return {"name": message.headers["task"], "id": message.headers["id"],
                "args": list(args or ()), "kwargs": dict(kwargs or {}),
                "embed": {**EMPTY_EMBED, **(embed or {})}, "headers": message.headers,
                "properties": message.properties, "protocol": 2}
    return {"name": payload["task"], "id": payload["id"],
            "args": list(payload.get("args") or ()),
            "kwargs": dict(payload.get("kwargs") or {}),
            "embed": {"callbacks": payload.get("callbacks"),
                      "errbacks": payload.get("errbacks"), "chain": None,
                      "chord": payload.get("chord")},
            "headers": {"task": payload["task"], "id": payload["id"],
                        "eta": payload.get("eta"), "expires": payload.get("expires"),
                        "retries": payload.get("retries", 0), "group": payload.get("taskset"),
                        "timelimit": payload.get("timelimit") or [None, None],
                        "root_id": payload["id"], "parent_id": None},
            "properties": message.properties, "protocol": 1}


def as_before(task: TaskMessage) -> dict[str, Any]:
    return {"name": task.name, "id": task.id, "args": task.args, "kwargs": task.kwargs,
            "embed": task.embed, "headers": task.headers, "properties": task.properties,
            "protocol": task.protocol}


def check_decodes_as_before(message: Message) -> TaskMessage:
    task = decode_task(message, JSON)
    assert as_before(task) == reference_decode(message)
    headers = task.headers
    assert task.eta_at == messages.from_iso(headers.get("eta"))
    assert task.expires_at == messages.from_iso(headers.get("expires"))
    hard, soft = headers.get("timelimit") or (None, None)
    assert task.timelimit == (hard if hard is None else float(hard),
                              soft if soft is None else float(soft))
    return task


def celery_envelopes(protocol: int = 2) -> Iterator[tuple[str, Message]]:
    """What a real Celery 5 client publishes, taken off kombu's in-memory transport
    (the same envelope Celery LPUSHes onto a Redis list)."""
    celery = pytest.importorskip("celery")
    queue = f"a7-{uuid.uuid4().hex}"  # kombu's memory queues are shared per process
    app = celery.Celery("a7", broker="memory://", backend="cache+memory://",
                        set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.task_protocol = protocol

    @app.task(name="a7.add", shared=False)
    def add(x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="a7.tsum", shared=False)
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    sends: list[tuple[str, Callable[[], Any]]] = [
        ("delay", lambda: add.delay(2, 3)),
        ("kwargs", lambda: add.apply_async(kwargs={"x": 1, "y": 2})),
        ("send_task", lambda: app.send_task("a7.add", (5, 6))),
        ("countdown+expires+limits", lambda: add.apply_async(
            (1, 2), countdown=30, expires=60, time_limit=10, soft_time_limit=5,
            priority=5, shadow="custom-shadow-name", headers={"x-custom": "v"})),
        ("naive eta+expires", lambda: add.apply_async(
            (1, 2), eta=datetime(2029, 1, 1), expires=datetime(2030, 1, 1))),
        ("aware eta", lambda: add.apply_async(
            (1, 2), eta=datetime.now(timezone(timedelta(hours=-5))) + timedelta(hours=1))),
        ("link+link_error", lambda: add.apply_async(
            (1, 1), link=tsum.s(), link_error=add.si(0, 0))),
        ("chain", lambda: celery.chain(add.s(1, 2), add.s(3), tsum.s()).apply_async()),
        ("chain with a group and a chord", lambda: celery.chain(
            add.s(1, 2), celery.group(add.s(1), add.s(2)),
            celery.chord([add.s(1, 1)], tsum.s()), tsum.s()).apply_async()),
        ("group", lambda: celery.group(add.s(0, 0), add.s(1, 1)).apply_async()),
        ("chord", lambda: celery.chord([add.s(1, 1), add.s(2, 2)], tsum.s())()),
        ("ignore_result", lambda: add.apply_async((1, 2), ignore_result=True)),
    ]
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for label, send in sends:
            send()
            while True:
                try:
                    env = channel._get(queue)
                except Exception:  # queue.Empty
                    break
                yield label, decode_envelope(json.dumps(env))


def test_celery_protocol2_messages_decode_as_before() -> None:
    seen = 0
    for label, message in celery_envelopes(2):
        task = check_decodes_as_before(message)
        assert task.protocol == 2, label
        if label == "countdown+expires+limits":
            assert task.eta_at is not None and task.eta_at > datetime.now(timezone.utc)
            assert task.expires_at is not None and task.expires_at > task.eta_at
            assert task.timelimit == (10.0, 5.0)
            assert task.properties["priority"] == 5
        if label == "naive eta+expires":
            assert task.eta_at == datetime(2029, 1, 1, tzinfo=timezone.utc)
            assert task.expires_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
        if label.startswith("chain"):
            assert task.embed["chain"], label
        if label == "chord":
            assert task.embed["chord"]["task"] == "a7.tsum"
        seen += 1
    assert seen >= 14  # one per send, one per group/chord member


def test_celery_protocol1_messages_decode_as_before() -> None:
    seen = 0
    for label, message in celery_envelopes(1):
        task = check_decodes_as_before(message)
        assert task.protocol == 1, label
        seen += 1
    assert seen >= 10


def test_celery_as_task_v2_messages_decode_as_before() -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    for options in ({}, {"countdown": 3, "expires": 9.5}, {"time_limit": 1, "soft_time_limit": 0.5},
                    {"eta": datetime(2030, 1, 2, 3, 4, 5), "group_id": "g", "group_index": 2,
                     "retries": 3, "root_id": "r", "parent_id": "p"},
                    {"callbacks": [SIG], "errbacks": [SIG], "chain": [SIG], "chord": SIG}):
        tid = new_id()
        sent = app.amqp.as_task_v2(tid, "proj.add", args=(2, 3), kwargs={"a": 1}, **options)
        body, content_type, content_encoding = serialization.dumps(list(sent.body), "json")
        message = through_the_wire(Message(dict(sent.headers), {"correlation_id": tid},
                                           body, content_type, content_encoding))
        check_decodes_as_before(message)


def test_celeriac_messages_of_every_kind_decode_as_before() -> None:
    name = uuid.uuid4().hex
    app = Celery("a7", broker=f"memory://{name}", backend=f"memory://{name}")

    @app.task(name="a7.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="a7.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    from celeriac import chain, chord, group

    add.delay(1, 2)
    add.apply_async((1, 2), expires=60, time_limit=3, soft_time_limit=1, priority=3,
                    link=tsum.s(), link_error=add.si(0, 0), shadow="s")
    chain(add.s(1, 2), add.s(3), tsum.s()).apply_async()
    chain(add.s(1, 2), group(add.s(1), add.s(2)), tsum.s()).apply_async()
    group(add.s(0, 0), add.s(1, 1)).apply_async()
    chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    app.send_task("a7.add", (5, 6), kwargs={}, ignore_result=None)
    deliveries = app.producer_broker().fetch(["celery"], 100, timeout=0.1)
    assert len(deliveries) >= 9
    for delivery in deliveries:
        check_decodes_as_before(decode_envelope(delivery.payload))
