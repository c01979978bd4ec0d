"""RabbitMQ without a server: URLs, fail-over order, the topology settings give, delay
routing keys, and the error when py-amqp is missing."""

from __future__ import annotations

import sys

import pytest

from celeriac import Celery, Exchange, Queue
from celeriac.brokers import amqp as amqp_broker
from celeriac.exceptions import ImproperlyConfigured, MissingDependency
from celeriac.utils import amqp as amqp_util


@pytest.mark.parametrize("url, expected", [
    ("amqp://guest@localhost//", ("localhost", 5672, "guest", "guest", "/", False)),
    ("amqp://", ("localhost", 5672, "guest", "guest", "/", False)),
    ("pyamqp://u:p%40ss@rabbit:5673/prod", ("rabbit", 5673, "u", "p@ss", "prod", False)),
    ("amqps://u:p@rabbit/%2Fstaging", ("rabbit", 5671, "u", "p", "/staging", True)),
    ("amqp://u:p@h/", ("h", 5672, "u", "p", "/", False)),
])
def test_urls_as_kombu_reads_them(url: str, expected: tuple[object, ...]) -> None:
    server = amqp_util.parse_url(url)
    assert (server.host, server.port, server.userid, server.password, server.virtual_host,
            server.tls) == expected


def test_a_failover_list_is_tried_in_the_strategy_order() -> None:
    endpoints = amqp_util.Endpoints("amqp://h1//;amqp://h2//;amqp://h3//")
    assert [s.host for _, s in endpoints.attempts()] == ["h1", "h2", "h3"]
    assert [s.host for _, s in endpoints.attempts()] == ["h1", "h2", "h3"]
    first_hosts = {amqp_util.Endpoints("amqp://h1//;amqp://h2//", "shuffle").attempts()[0][1]
                   .host for _ in range(50)}
    assert first_hosts == {"h1", "h2"}


def test_broker_use_ssl_and_amqps_turn_tls_on() -> None:
    plain, tls = amqp_util.parse_url("amqp://h//"), amqp_util.parse_url("amqps://h//")
    assert amqp_util.ssl_context(False, plain) is False
    assert amqp_util.ssl_context(None, tls) is True
    options = {"ca_certs": "/etc/ca.pem", "cert_reqs": 2}
    assert amqp_util.ssl_context(options, plain) == options
    with pytest.raises(ImproperlyConfigured, match="broker_use_ssl"):
        amqp_util.ssl_context("yes", plain)


def test_a_missing_py_amqp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amqp", None)
    with pytest.raises(MissingDependency, match=r"celeriac\[amqp\]"):
        amqp_broker.AMQPBroker("amqp://guest@localhost//")


def test_delay_routing_keys_carry_the_delay_in_bits() -> None:
    key = amqp_broker.delay_routing_key(5, "celery")
    words = key.split(".")
    assert len(words) == amqp_broker.DELAY_BITS + 1 and words[-1] == "celery"
    assert "".join(words[:-1]) == format(5, "028b")


def topology(app: Celery) -> amqp_broker.Topology:
    options: dict[str, object] = {}
    app._amqp_options(options)
    return amqp_broker.Topology(options["topology"])  # type: ignore[arg-type]


def test_the_default_queue_is_declared_from_the_settings() -> None:
    app = Celery("t", broker="amqp://", set_as_current=False)
    app.conf.task_default_queue = "jobs"
    app.conf.task_default_queue_type = "quorum"
    app.conf.task_default_exchange = "work"
    app.conf.task_default_exchange_type = "topic"
    app.conf.task_default_routing_key = "jobs.#"
    spec = topology(app).spec_for("jobs")
    assert spec.arguments == {"x-queue-type": "quorum"}
    assert (spec.exchange, spec.exchange_type, spec.routing_key) == ("work", "topic", "jobs.#")


def test_missing_queues_and_priorities() -> None:
    app = Celery("t", broker="amqp://", set_as_current=False)
    app.conf.task_queue_max_priority = 10
    app.conf.task_create_missing_queue_type = "classic"
    spec = topology(app).spec_for("made-for-a-route")
    assert spec.arguments == {"x-max-priority": 10}
    assert (spec.exchange, spec.routing_key) == ("made-for-a-route", "made-for-a-route")
    app.conf.task_create_missing_queue_type = "quorum"
    # quorum queues take no x-max-priority (RabbitMQ 3.x refuses it)
    assert topology(app).spec_for("other").arguments == {"x-queue-type": "quorum"}


def test_declared_queues_keep_their_own_arguments() -> None:
    app = Celery("t", broker="amqp://", set_as_current=False)
    app.conf.task_queues = [Queue("media", Exchange("media", type="topic"), "media.*",
                                  queue_arguments={"x-queue-type": "quorum"}),
                            Queue("urgent", max_priority=5)]
    top = topology(app)
    media = top.spec_for("media")
    assert media.arguments == {"x-queue-type": "quorum"}
    assert (media.exchange, media.exchange_type, media.routing_key) == (
        "media", "topic", "media.*")
    assert top.spec_for("urgent").arguments == {"x-max-priority": 5}


def test_an_unknown_queue_type_is_refused() -> None:
    app = Celery("t", broker="amqp://", set_as_current=False)
    app.conf.broker_native_delayed_delivery_queue_type = "stream"
    with pytest.raises(ImproperlyConfigured, match="broker_native_delayed_delivery_queue_type"):
        topology(app)


def test_monitor_and_control_queues_follow_their_settings() -> None:
    app = Celery("t", broker="amqp://", set_as_current=False)
    app.conf.event_queue_ttl = 2.5
    app.conf.event_queue_expires = 30
    app.conf.event_queue_prefix = "watch"
    app.conf.control_queue_ttl = 60
    app.conf.control_queue_expires = 5
    app.conf.broker_heartbeat = 30
    app.conf.broker_login_method = "AMQPLAIN"
    options: dict[str, object] = {}
    app._amqp_options(options)
    assert options["heartbeat"] == 30 and options["login_method"] == "AMQPLAIN"
    top = amqp_broker.Topology(options["topology"])  # type: ignore[arg-type]
    assert top.event_queue == {"prefix": "watch", "ttl": 2.5, "expires": 30}
    assert top.control_queue == {"ttl": 60, "expires": 5}
