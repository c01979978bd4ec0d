"""Remote-control messages and fanout delivery, without a worker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from celeriac.brokers import Notice, connect
from celeriac.brokers.base import topic_matches
from celeriac.control.pidbox import BadRequest, Request, parse_request


@pytest.mark.parametrize("pattern, key, expected", [
    ("#", "task.multi", True), ("#", "", True), ("task.#", "task.multi", True),
    ("task.#", "task", True), ("task.*", "task.multi", True), ("task.*", "task", False),
    ("worker.*", "task.sent", False), ("*.heartbeat", "worker.heartbeat", True),
    ("abc", "abc", True), ("abc", "abd", False), ("a.#.z", "a.b.c.z", True),
])
def test_topic_patterns_match_as_amqp_does(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_a_request_from_celery_is_read_as_sent() -> None:
    # As captured from Celery 5.7's client (CELERY-WIRE §4.6).
    body = {"method": "ping", "arguments": {}, "destination": ["w1@vm"], "pattern": None,
            "matcher": None, "ticket": "c8bf", "reply_to": {
                "exchange": "reply.celery.pidbox", "routing_key": "bc6e"}}
    request = parse_request(Notice("", json.dumps(body), {"clock": 7, "expires": 1e12}))
    assert (request.method, request.ticket, request.clock) == ("ping", "c8bf", 7)
    assert request.for_node("w1@vm") and not request.for_node("w2@vm")
    assert not request.expired()


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"method": 5}',
                                  '{"method": "ping", "arguments": [1]}',
                                  '{"method": "ping", "destination": 3}',
                                  '{"method": "ping", "reply_to": {"exchange": "x"}}'])
def test_malformed_requests_are_refused_with_a_reason(body: str) -> None:
    with pytest.raises(BadRequest):
        parse_request(Notice("", body))


def test_patterns_and_expiry_select_nodes() -> None:
    assert Request("ping", pattern="w*", matcher="glob").for_node("w1@x")
    assert not Request("ping", pattern="w*").for_node("x1@x")
    assert Request("ping", pattern=r"^w\d@", matcher="pcre").for_node("w7@x")
    assert not Request("ping", pattern="w", matcher="unknown").for_node("w")
    assert Request("ping", expires=1.0).expired()


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_listeners_get_only_what_was_sent_after_they_started(scheme: str,
                                                             tmp_path: Path) -> None:
    url = "memory://pidbox-unit" if scheme == "memory" else f"sqlite:///{tmp_path}/f.db"
    broker = connect(url)
    broker.broadcast("celeryev", [Notice("task.multi", "[]")])
    listener = broker.listen("celeryev", ["task.#"])
    broker.broadcast("celeryev", [Notice("worker.heartbeat", "{}"),
                                  Notice("task.succeeded", '{"a": 1}', {"hostname": "h"})])
    got = listener.get(1.0)
    assert [(n.routing_key, n.body, n.headers) for n in got] == [
        ("task.succeeded", '{"a": 1}', {"hostname": "h"})]
    assert listener.get(0.05) == []
    replies = broker.replies("reply.celery.pidbox", "me")
    broker.reply("reply.celery.pidbox", [Notice("someone-else", "1"), Notice("me", "2")])
    assert [n.body for n in replies.get(1.0)] == ["2"]
    replies.close()
    listener.close()


def test_redis_fanout_is_where_kombu_puts_it(redis_server: str) -> None:
    import redis

    broker = connect(f"{redis_server}/12")
    client = redis.Redis.from_url(f"{redis_server}/12")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/12.celeryev/*")
    pubsub.get_message(timeout=1)  # reads the confirmation: the server has subscribed us
    broker.broadcast("celeryev", [Notice("worker.heartbeat", '{"type": "worker-heartbeat"}',
                                         {"hostname": "w@x"})])
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            break
    assert message is not None and message["channel"] == b"/12.celeryev/worker.heartbeat"
    envelope = json.loads(message["data"])
    assert envelope["headers"] == {"hostname": "w@x"}
    assert envelope["properties"]["delivery_info"] == {"exchange": "celeryev",
                                                       "routing_key": "worker.heartbeat"}
    assert json.loads(base64.b64decode(envelope["body"])) == {"type": "worker-heartbeat"}
    # A reply queue is bound in kombu's table, so a Celery worker finds it.
    replies = broker.replies("reply.celery.pidbox", "oid-1")
    member = b"oid-1\x06\x16\x06\x16oid-1.reply.celery.pidbox"
    assert member in client.smembers("_kombu.binding.reply.celery.pidbox")
    replies.close()
    assert member not in client.smembers("_kombu.binding.reply.celery.pidbox")
    pubsub.close()
    client.close()
    broker.close()
