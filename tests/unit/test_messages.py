"""Unit tests for celeriac.messages: Celery protocol 2 messages and kombu's JSON envelope.

The expected shapes come from CELERY-WIRE.md section 1 (headers, properties, body) and
section 2.2/6.2 (the envelope a Celery worker reads off a Redis list).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import messages, serialization
from celeriac.exceptions import ContentDisallowed, DecodeError, InvalidTaskError
from celeriac.messages import (
    Message,
    decode_envelope,
    decode_task,
    encode_envelope,
    task_message,
)

JSON = frozenset({"application/json"})

# Every header a Celery 5.7 client writes (CELERY-WIRE.md 1.1), with its JSON type(s).
PROTOCOL2_HEADERS: dict[str, tuple[type, ...]] = {
    "lang": (str,),
    "task": (str,),
    "id": (str,),
    "shadow": (str, type(None)),
    "eta": (str, type(None)),
    "expires": (str, type(None)),
    "group": (str, type(None)),
    "group_index": (int, type(None)),
    "retries": (int,),
    "timelimit": (list,),
    "root_id": (str,),
    "parent_id": (str, type(None)),
    "argsrepr": (str,),
    "kwargsrepr": (str,),
    "origin": (str,),
    "ignore_result": (bool, type(None)),
    "replaced_task_nesting": (int,),
    "stamped_headers": (list, type(None)),
    "stamps": (dict,),
}


def new_id() -> str:
    return str(uuid.uuid4())


def body_of(message: Message) -> Any:
    return json.loads(message.body)


def wire_roundtrip(message: Message) -> Message:
    """What a consumer sees after the message went through a Redis list."""
    return decode_envelope(encode_envelope(message))


# -- headers ----------------------------------------------------------------------------
def test_standalone_task_has_every_protocol2_header_with_celerys_types() -> None:
    tid = new_id()
    msg = task_message("proj.add", tid, (2, 3), {"a": "b", "n": None})
    # The headers must survive JSON (they are the envelope's "headers" object).
    headers = json.loads(encode_envelope(msg))["headers"]
    missing = set(PROTOCOL2_HEADERS) - set(headers)
    assert not missing, f"headers Celery always sends are missing: {missing}"
    for key, types in PROTOCOL2_HEADERS.items():
        assert isinstance(headers[key], types), (key, headers[key])
    assert headers["lang"] == "py"
    assert headers["task"] == "proj.add"
    assert headers["id"] == tid
    assert headers["root_id"] == tid  # standalone task: its own root
    assert headers["parent_id"] is None
    assert headers["retries"] == 0
    assert headers["timelimit"] == [None, None]
    assert headers["eta"] is None and headers["expires"] is None
    assert headers["argsrepr"] == "(2, 3)"
    assert headers["kwargsrepr"] == "{'a': 'b', 'n': None}"
    assert headers["ignore_result"] is False
    assert headers["replaced_task_nesting"] == 0
    assert headers["stamps"] == {}


def test_header_keys_match_those_of_real_celery() -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    theirs = app.amqp.as_task_v2("abc", "proj.add", args=(2, 3), kwargs={"a": 1}).headers
    ours = task_message("proj.add", "abc", (2, 3), {"a": 1}).headers
    assert set(ours) == set(theirs)
    for key in ("argsrepr", "kwargsrepr", "root_id", "timelimit", "retries", "lang"):
        assert ours[key] == theirs[key], key


def test_origin_is_gen_pid_at_hostname() -> None:
    msg = task_message("t", new_id())
    assert msg.headers["origin"] == f"gen{os.getpid()}@{socket.gethostname()}"


def test_workflow_ids_and_options_reach_the_headers() -> None:
    root, parent, group = new_id(), new_id(), new_id()
    msg = task_message(
        "t", new_id(), root_id=root, parent_id=parent, group_id=group, group_index=2,
        retries=3, time_limit=10, soft_time_limit=5, shadow="custom-shadow-name",
        ignore_result=True)
    h = msg.headers
    assert h["root_id"] == root
    assert h["parent_id"] == parent
    assert h["group"] == group and h["group_index"] == 2
    assert h["retries"] == 3
    assert h["timelimit"] == [10, 5]  # [hard, soft]
    assert h["shadow"] == "custom-shadow-name"
    assert h["ignore_result"] is True


def test_ignore_result_none_is_kept_as_null() -> None:
    # send_task() writes null, not false (CELERY-WIRE.md 1.1, 7.6).
    msg = task_message("t", new_id(), ignore_result=None)
    assert json.loads(encode_envelope(msg))["headers"]["ignore_result"] is None


def test_argsrepr_and_kwargsrepr_can_be_given() -> None:
    msg = task_message("t", new_id(), ["secret"], {"password": "x"},
                       argsrepr="('***',)", kwargsrepr="{'password': '***'}")
    assert msg.headers["argsrepr"] == "('***',)"
    assert msg.headers["kwargsrepr"] == "{'password': '***'}"


def test_eta_and_expires_are_iso_with_offset() -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    expires = datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    msg = task_message("t", new_id(), eta=eta, expires=expires)
    assert msg.headers["eta"] == "2030-01-02T03:04:05+00:00"
    # Any explicit offset is fine for Celery; the instant must be the same.
    assert datetime.fromisoformat(msg.headers["expires"]) == expires
    assert datetime.fromisoformat(msg.headers["expires"]).utcoffset() is not None


def test_naive_datetimes_are_taken_as_utc() -> None:
    msg = task_message("t", new_id(), eta=datetime(2030, 1, 2, 3, 4, 5),
                       expires=datetime(2030, 1, 2, 3, 4, 6, 250000))
    assert msg.headers["eta"] == "2030-01-02T03:04:05+00:00"
    assert msg.headers["expires"] == "2030-01-02T03:04:06.250000+00:00"


def test_from_iso_reads_offsets_and_treats_naive_as_utc() -> None:
    assert messages.from_iso("2030-01-02T03:04:05+00:00") == datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert messages.from_iso("2030-01-02T03:04:05") == datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert messages.from_iso("2030-01-02T05:04:05+02:00") == datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert messages.from_iso(None) is None and messages.from_iso("") is None


def test_custom_headers_are_merged_at_the_top_level() -> None:
    msg = task_message("t", new_id(), headers={"x-custom": "v", "tenant": 7})
    h = json.loads(encode_envelope(msg))["headers"]
    assert h["x-custom"] == "v"
    assert h["tenant"] == 7
    assert "headers" not in h
    assert h["task"] == "t"  # the protocol headers are still there


# -- properties -------------------------------------------------------------------------
def test_properties_carry_correlation_id_delivery_info_and_priority() -> None:
    tid = new_id()
    msg = task_message("t", tid, queue="videos", priority=5, reply_to="oid-1")
    p = msg.properties
    assert p["correlation_id"] == tid
    assert p["delivery_info"] == {"exchange": "", "routing_key": "videos"}
    assert p["priority"] == 5
    assert p["delivery_mode"] == 2
    assert p["reply_to"] == "oid-1"
    assert "expiration" not in p


def test_default_priority_is_zero_and_routing_key_overrides_queue() -> None:
    msg = task_message("t", new_id(), queue="videos", exchange="media",
                       routing_key="media.video")
    assert msg.properties["priority"] == 0
    assert msg.properties["delivery_info"] == {"exchange": "media", "routing_key": "media.video"}


def test_expiration_property_is_a_millisecond_string() -> None:
    msg = task_message("t", new_id(), expiration_ms=60000)
    assert msg.properties["expiration"] == "60000"


# -- body -------------------------------------------------------------------------------
def test_body_is_args_kwargs_embed_with_the_four_embed_keys() -> None:
    msg = task_message("t", new_id(), (2, 3), {"k": 1})
    assert msg.content_type == "application/json"
    assert msg.content_encoding == "utf-8"
    assert body_of(msg) == [[2, 3], {"k": 1},
                            {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_embed_carries_callbacks_errbacks_chain_and_chord() -> None:
    sig = {"task": "proj.echo", "args": ["linked"], "kwargs": {}, "options": {},
           "subtask_type": None, "immutable": False}
    err = dict(sig, immutable=True)
    body_sig = dict(sig, options={"task_id": new_id()})
    msg = task_message("t", new_id(), callbacks=[sig], errbacks=[err], chain=[sig, sig],
                       chord=body_sig)
    embed = body_of(msg)[2]
    assert embed == {"callbacks": [sig], "errbacks": [err], "chain": [sig, sig],
                     "chord": body_sig}
    decoded = decode_task(wire_roundtrip(msg), JSON)
    assert decoded.embed == embed


# -- envelope ---------------------------------------------------------------------------
def test_envelope_has_kombus_keys_and_a_base64_body() -> None:
    tid = new_id()
    msg = task_message("proj.add", tid, (2, 3), queue="celery")
    env = json.loads(encode_envelope(msg))
    assert set(env) == {"body", "content-type", "content-encoding", "headers", "properties"}
    assert env["content-type"] == "application/json"
    assert env["content-encoding"] == "utf-8"
    assert env["properties"]["body_encoding"] == "base64"
    assert base64.b64decode(env["body"], validate=True) == msg.body
    tag = env["properties"]["delivery_tag"]
    assert isinstance(tag, str) and uuid.UUID(tag)
    assert env["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert env["properties"]["correlation_id"] == tid
    assert env["headers"]["id"] == tid


def test_each_envelope_gets_its_own_delivery_tag_and_a_given_one_is_kept() -> None:
    # kombu keys its unacked hash by delivery_tag: it must be unique per message.
    tags = {json.loads(encode_envelope(task_message("t", new_id())))["properties"]["delivery_tag"]
            for _ in range(5)}
    assert len(tags) == 5
    msg = task_message("t", new_id())
    msg.properties["delivery_tag"] = "fixed-tag"
    assert json.loads(encode_envelope(msg))["properties"]["delivery_tag"] == "fixed-tag"


def test_encode_envelope_does_not_change_the_message() -> None:
    msg = task_message("t", new_id())
    before = dict(msg.properties)
    encode_envelope(msg)
    assert msg.properties == before


def test_envelope_round_trip_gives_back_the_task() -> None:
    tid, parent = new_id(), new_id()
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    msg = task_message("proj.add", tid, [1, "two", None], {"x": [1, 2], "ü": "é"},
                       parent_id=parent, eta=eta, retries=2, queue="q1", priority=3,
                       headers={"x-custom": "v"})
    back = wire_roundtrip(msg)
    assert back.headers == json.loads(json.dumps(msg.headers))
    assert back.body == msg.body
    assert back.content_type == "application/json"
    assert back.properties["priority"] == 3
    assert back.task_id == tid
    task = decode_task(back, JSON)
    assert task.name == "proj.add"
    assert task.id == tid
    assert task.args == [1, "two", None]
    assert task.kwargs == {"x": [1, 2], "ü": "é"}
    assert task.protocol == 2
    assert task.eta == "2030-01-02T03:04:05+00:00"
    assert task.eta_at == eta  # parsed once, for the worker
    assert task.expires_at is None and task.timelimit == (None, None)
    assert task.retries == 2
    assert task.headers["parent_id"] == parent
    assert task.headers["x-custom"] == "v"
    assert messages.queue_of(back, "celery") == "q1"


def test_decodes_the_envelope_captured_from_a_celery_client() -> None:
    # CELERY-WIRE.md 2.2, verbatim body and headers as LPUSHed by Celery 5.7.
    raw = json.dumps({
        "body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWlu"
                "IjogbnVsbCwgImNob3JkIjogbnVsbH1d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "wiretasks.add",
                    "id": "0756f489-0661-4173-b46f-3acc75c3c748", "shadow": None,
                    "eta": None, "expires": None, "group": None, "group_index": None,
                    "retries": 0, "timelimit": [None, None],
                    "root_id": "0756f489-0661-4173-b46f-3acc75c3c748", "parent_id": None,
                    "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen13520@vm",
                    "ignore_result": False, "replaced_task_nesting": 0,
                    "stamped_headers": None, "stamps": {}},
        "properties": {"correlation_id": "0756f489-0661-4173-b46f-3acc75c3c748",
                       "reply_to": "3f9e2055-36bb-3551-9500-3c629766499f",
                       "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "celery"},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": "f658249c-aa96-4447-9d27-db88e12ad06d"},
    })
    task = decode_task(decode_envelope(raw), JSON)
    assert task.name == "wiretasks.add"
    assert task.id == "0756f489-0661-4173-b46f-3acc75c3c748"
    assert task.args == [2, 3]
    assert task.kwargs == {}
    assert task.embed == messages.EMPTY_EMBED
    assert task.properties["reply_to"] == "3f9e2055-36bb-3551-9500-3c629766499f"


@pytest.mark.parametrize("full", [True, False], ids=["6.2-headers", "task-and-id-only"])
def test_decodes_a_hand_written_celery_envelope(full: bool) -> None:
    # The 6.2 shape; also with only {task, id} headers and an empty embed, as verified to
    # run on a Celery worker. Given as bytes, as a Redis client returns it.
    tid = new_id()
    body = base64.b64encode(b'[[1, 2], {"z": 3}, {}]').decode()
    headers: dict[str, Any] = {"task": "proj.add", "id": tid}
    if full:
        headers.update({"lang": "py", "root_id": tid, "parent_id": None, "group": None,
                        "group_index": None, "retries": 0, "eta": None, "expires": None,
                        "timelimit": [None, None], "shadow": None, "argsrepr": "(1, 2)",
                        "kwargsrepr": "{'z': 3}", "origin": "gen1@elsewhere",
                        "ignore_result": False})
    raw = json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": headers,
        "properties": {"correlation_id": tid, "reply_to": "", "delivery_mode": 2,
                       "priority": 0, "delivery_info": {"exchange": "", "routing_key": "celery"},
                       "body_encoding": "base64", "delivery_tag": new_id()},
    }).encode()
    task = decode_task(decode_envelope(raw), JSON)
    assert (task.name, task.id, task.args, task.kwargs) == ("proj.add", tid, [1, 2], {"z": 3})
    assert task.eta is None and task.expires is None and task.retries == 0
    # A partial embed still has the four keys the worker reads.
    assert task.embed == messages.EMPTY_EMBED


def test_envelope_without_body_encoding_reads_the_body_as_text() -> None:
    raw = json.dumps({"body": '[[5], {}, {"callbacks": null, "errbacks": null, '
                              '"chain": null, "chord": null}]',
                      "content-type": "application/json", "content-encoding": "utf-8",
                      "headers": {"task": "t", "id": "i1"}, "properties": {}})
    task = decode_task(decode_envelope(raw), JSON)
    assert task.args == [5]


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"headers": {}}', b"\xff\xfe"])
def test_decode_envelope_rejects_what_is_not_an_envelope(raw: str | bytes) -> None:
    with pytest.raises(DecodeError):
        decode_envelope(raw)


def test_decode_envelope_rejects_bad_base64() -> None:
    raw = json.dumps({"body": "@@not base64@@", "content-type": "application/json",
                      "headers": {}, "properties": {"body_encoding": "base64"}})
    with pytest.raises(DecodeError):
        decode_envelope(raw)


# -- protocol 1 -------------------------------------------------------------------------
def test_protocol1_body_decodes() -> None:
    # CELERY-WIRE.md 1.9: empty headers, everything in a JSON object body.
    tid = new_id()
    body = {"task": "wiretasks.add", "id": tid, "args": [2, 3], "kwargs": {"k": 1},
            "retries": 1, "eta": "2026-11-21T13:46:51.727131+00:00",
            "expires": "2026-11-21T13:48:21.727131+00:00", "utc": True,
            "callbacks": [{"task": "wiretasks.add", "args": [3], "kwargs": {},
                           "options": {"task_id": "c1"}}],
            "errbacks": None, "timelimit": [10, 5], "taskset": "g1", "chord": None,
            "group": None, "group_index": None}
    msg = Message({}, {"correlation_id": tid}, json.dumps(body).encode(),
                  "application/json", "utf-8")
    task = decode_task(wire_roundtrip(msg), JSON)
    assert task.protocol == 1
    assert task.name == "wiretasks.add"
    assert task.id == tid
    assert task.args == [2, 3]
    assert task.kwargs == {"k": 1}
    assert task.retries == 1
    assert task.eta == "2026-11-21T13:46:51.727131+00:00"
    assert task.expires == "2026-11-21T13:48:21.727131+00:00"
    assert task.headers["timelimit"] == [10, 5]
    assert task.timelimit == (10.0, 5.0)
    assert task.eta_at == datetime(2026, 11, 21, 13, 46, 51, 727131, tzinfo=timezone.utc)
    assert task.headers["group"] == "g1"
    assert task.embed["callbacks"][0]["options"]["task_id"] == "c1"
    assert task.embed["chain"] is None


# -- refusals ---------------------------------------------------------------------------
def raw_message(body: bytes, content_type: str = "application/json",
                headers: dict[str, Any] | None = None) -> Message:
    return Message({"task": "t", "id": "i1"} if headers is None else headers, {}, body,
                   content_type, "utf-8")


def test_content_type_not_accepted_is_refused_with_a_hint() -> None:
    msg = task_message("t", new_id(), (1,), serializer="pickle")
    assert msg.content_type == "application/x-python-serialize"
    with pytest.raises(ContentDisallowed) as info:
        decode_task(wire_roundtrip(msg), JSON)
    text = str(info.value)
    assert "application/x-python-serialize" in text
    assert "accept_content" in text


def test_pickle_is_decoded_when_accepted() -> None:
    msg = task_message("t", new_id(), (1, {2, 3}), serializer="pickle")
    accept = serialization.accepted_content_types(["json", "pickle"])
    task = decode_task(wire_roundtrip(msg), accept)
    assert task.args == [1, {2, 3}]


def test_missing_content_type_is_refused() -> None:
    with pytest.raises(ContentDisallowed):
        decode_task(raw_message(b"[[], {}, {}]", content_type=""), JSON)
    # even with no accept list at all: never guess
    with pytest.raises(ContentDisallowed):
        decode_task(raw_message(b"[[], {}, {}]", content_type=""), None)


def test_bad_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_task(raw_message(b"[[1, 2], {}, {"), JSON)


@pytest.mark.parametrize("body", [
    b'"abc"',                      # a 3-character string
    b'{"a": 1, "b": 2, "c": 3}',   # an object with 3 keys
    b"[1, 2, 3]",
    b"[[1], {}]",
    b"[[1], {}, {}, {}]",
    b"null",
    b"42",
    b'[{"x": 1}, [], {}]',         # args and kwargs swapped
    b'[[1], {}, "embed"]',
])
def test_body_that_is_not_args_kwargs_embed_is_an_invalid_task(body: bytes) -> None:
    with pytest.raises(InvalidTaskError):
        decode_task(raw_message(body), JSON)


def test_missing_id_is_an_invalid_task() -> None:
    with pytest.raises(InvalidTaskError, match="id"):
        decode_task(raw_message(b"[[], {}, {}]", headers={"task": "t"}), JSON)


def test_no_task_header_and_no_protocol1_body_is_an_invalid_task() -> None:
    with pytest.raises(InvalidTaskError):
        decode_task(raw_message(b"[[], {}, {}]", headers={}), JSON)


def test_invalid_task_error_is_a_decode_error() -> None:
    # The worker sets aside anything raising DecodeError: the subclass must be caught too.
    assert issubclass(InvalidTaskError, DecodeError)
    assert issubclass(messages.MalformedMessage, InvalidTaskError)


# -- compression ------------------------------------------------------------------------
@pytest.mark.parametrize("method, content_type", [
    ("zlib", "application/x-gzip"),
    ("gzip", "application/x-gzip"),
    ("bzip2", "application/x-bz2"),
])
def test_compressed_message_round_trip(method: str, content_type: str) -> None:
    args = ["x" * 500, list(range(50))]
    msg = task_message("t", new_id(), args, {"k": "v" * 200}, compression=method)
    assert msg.headers["compression"] == content_type
    assert msg.body != serialization.dumps([args, {"k": "v" * 200}, messages.EMPTY_EMBED],
                                           "json")[0]
    env = json.loads(encode_envelope(msg))
    assert env["headers"]["compression"] == content_type
    task = decode_task(decode_envelope(json.dumps(env)), JSON)
    assert task.args == args
    assert task.kwargs == {"k": "v" * 200}


@pytest.mark.parametrize("method", ["zlib", "bzip2"])
def test_compressed_body_is_readable_by_kombu(method: str) -> None:
    compression = pytest.importorskip("kombu.compression")
    msg = task_message("t", new_id(), [1, 2], compression=method)
    plain = compression.decompress(msg.body, msg.headers["compression"])
    assert json.loads(plain)[0] == [1, 2]


def test_kombu_compressed_body_is_readable() -> None:
    compression = pytest.importorskip("kombu.compression")
    data, content_type = compression.compress(b'[[7], {}, {}]', "zlib")
    msg = Message({"task": "t", "id": "i", "compression": content_type}, {}, data,
                  "application/json", "utf-8")
    assert decode_task(msg, JSON).args == [7]


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="zlib"):
        task_message("t", new_id(), compression="lz99")
    msg = Message({"task": "t", "id": "i", "compression": "application/x-lz99"}, {}, b"..",
                  "application/json", "utf-8")
    with pytest.raises(DecodeError):
        decode_task(msg, JSON)


def test_corrupt_compressed_body_is_a_decode_error() -> None:
    msg = Message({"task": "t", "id": "i", "compression": "application/x-gzip"}, {},
                  b"not zlib data", "application/json", "utf-8")
    with pytest.raises(DecodeError):
        decode_task(msg, JSON)
