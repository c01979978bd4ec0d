"""The worker's start-up check: what is retried, how often, and the one line it ends with."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import UnknownTransport
from celeriac.worker.main import (
    StartupError,
    check_connection,
    classify,
    retry_pause,
    startup_retry_policy,
)


def conf(**settings: Any) -> Any:
    return Celery("startup", broker="memory://", set_as_current=False, **settings).conf


class Probe:
    """Fails with the given errors in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "pong"


def refused() -> ConnectionError:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as cause:
        try:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.") \
                from cause
        except ConnectionError as exc:
            return exc


def test_retry_policy_follows_celery() -> None:
    assert startup_retry_policy(conf()) == (True, 100)
    assert startup_retry_policy(conf(broker_connection_retry=False)) == (False, 100)
    assert startup_retry_policy(conf(broker_connection_retry=False,
                                      broker_connection_retry_on_startup=True)) == (True, 100)
    assert startup_retry_policy(conf(broker_connection_max_retries=0)) == (True, None)
    assert startup_retry_policy(conf(broker_connection_max_retries=None)) == (True, None)


def test_pauses_are_short_and_backed_off() -> None:
    pauses = [retry_pause(n) for n in range(1, 10)]
    assert pauses[0] == pytest.approx(0.1) and pauses == sorted(pauses)
    assert max(pauses) == 2.0


def test_a_healing_outage_is_retried_until_it_answers() -> None:
    slept: list[float] = []
    probe = Probe(refused(), refused(), socket.timeout("timed out"))
    assert check_connection("broker", "redis://:pw@h/0", "broker_url", probe, conf(),
                            sleep=slept.append) == "pong"
    assert probe.calls == 4 and len(slept) == 3


def test_gives_up_after_max_retries_with_one_line() -> None:
    slept: list[float] = []
    probe = Probe(*[refused() for _ in range(10)])
    with pytest.raises(StartupError) as info:
        check_connection("result backend", "redis://:hunter22@127.0.0.1:1/0",
                         "result_backend", probe, conf(broker_connection_max_retries=3),
                         sleep=slept.append)
    message = str(info.value)
    assert probe.calls == 4 and len(slept) == 3
    assert "\n" not in message and "hunter22" not in message
    assert message.startswith("Cannot start: result backend redis://:**@127.0.0.1:1/0: "
                              "connection refused")
    assert "after 3 retries" in message and "result_backend" in message


def test_no_retry_on_startup_fails_at_once() -> None:
    probe = Probe(refused())
    with pytest.raises(StartupError) as info:
        check_connection("broker", "redis://h/0", "broker_url", probe,
                         conf(broker_connection_retry_on_startup=False), sleep=pytest.fail)
    assert probe.calls == 1 and "retries" not in str(info.value)


@pytest.mark.parametrize("error, reason, transient", [
    (UnknownTransport("broker", "foo", ["redis", "sqlite"]), "unknown broker scheme", False),
    (type("AuthenticationError", (ConnectionError,), {})("invalid username-password pair"),
     "authentication failed", False),
    (Exception("NOAUTH Authentication required."), "authentication failed", False),
    (refused(), "connection refused", True),
    (socket.gaierror(-2, "Name or service not known"), "host name not found", True),
    (TimeoutError("timed out"), "timed out", True),
    (type("BusyLoadingError", (Exception,), {})("loading"), "still loading", True),
    (Exception("unable to open database file"), "cannot open the database file", False),
    (ValueError("something else"), "ValueError('something else')", False),
])
def test_classify(error: BaseException, reason: str, transient: bool) -> None:
    got_reason, got_transient, hint = classify(error, "broker", "broker_url")
    assert reason in got_reason and got_transient is transient and hint


def test_an_error_that_cannot_heal_is_not_retried() -> None:
    probe = Probe(Exception("WRONGPASS invalid username-password pair"))
    with pytest.raises(StartupError) as info:
        check_connection("broker", "redis://:pw@h/0", "broker_url", probe, conf(),
                         sleep=pytest.fail)
    assert "authentication failed" in str(info.value) and probe.calls == 1
