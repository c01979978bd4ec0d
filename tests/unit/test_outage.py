"""OutageLog: an outage told as a few lines of changes of state."""

from __future__ import annotations

import logging
import threading

import pytest

from celeriac.utils.outage import OutageLog, describe


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="test-outage")
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test-outage"]


def test_first_failure_then_summaries_then_recovery(logged: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = OutageLog(logging.getLogger("test-outage"), "broker", "redis://:**@h:6379/0",
                       clock=clock)
    error = ConnectionError("Error 111 connecting to h:6379. Connection refused.")
    outage.failed(error)
    assert outage.down
    for _ in range(299):  # every 0.1 s for 29.9 s: nothing more
        clock.now += 0.1
        outage.failed(error)
    assert len(lines(logged)) == 1
    clock.now += 0.2  # 30.1 s into the outage: one summary
    outage.failed(error)
    clock.now += 15
    outage.failed(error)
    clock.now += 15
    outage.failed(error)  # 60.1 s: the second summary
    clock.now += 0.5
    outage.recovered()
    outage.recovered()  # nothing changed: nothing logged
    assert not outage.down and outage.retries == 0
    assert lines(logged) == [
        ("ERROR", "broker redis://:**@h:6379/0 unreachable: "
                  "ConnectionError('Error 111 connecting to h:6379. Connection refused.')"),
        ("ERROR", "broker still unreachable after 30 s: ConnectionError('Error 111 "
                  "connecting to h:6379. Connection refused.'); 300 retries"),
        ("ERROR", "broker still unreachable after 60 s: ConnectionError('Error 111 "
                  "connecting to h:6379. Connection refused.'); 302 retries"),
        ("WARNING", "broker reachable again after 60.6 s (302 retries)"),
    ]


def test_recovered_without_an_outage_says_nothing(logged: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("test-outage"), "result backend", clock=Clock())
    outage.recovered()
    assert lines(logged) == [] and not outage.down and outage.elapsed() == 0


def test_a_second_outage_is_told_from_its_own_start(logged: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = OutageLog(logging.getLogger("test-outage"), "result backend", clock=clock,
                       level=logging.WARNING)
    outage.failed(TimeoutError("timed out"), note="retrying")
    clock.now += 2
    outage.recovered()
    clock.now += 100
    outage.failed(OSError("no route"))
    clock.now += 1.25
    assert outage.elapsed() == pytest.approx(1.25)
    outage.recovered()
    assert lines(logged) == [
        ("WARNING", "result backend unreachable: TimeoutError('timed out'); retrying"),
        ("WARNING", "result backend reachable again after 2.0 s (0 retries)"),
        ("WARNING", "result backend unreachable: OSError('no route')"),
        ("WARNING", "result backend reachable again after 1.2 s (0 retries)"),
    ]


def test_many_threads_report_one_outage_once(logged: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("test-outage"), "broker", clock=Clock())
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(200):
            outage.failed(ConnectionError("down"))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outage.retries == 8 * 200 - 1
    start = threading.Barrier(8)

    def recover() -> None:
        start.wait()
        outage.recovered()

    threads = [threading.Thread(target=recover) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [level for level, _ in lines(logged)] == ["ERROR", "WARNING"]


def test_describe_is_one_line() -> None:
    assert describe(ConnectionError("first\nsecond")) == "ConnectionError('first')"
    assert describe(KeyError()) == "KeyError"
    assert len(describe(ValueError("x" * 5000))) < 400
