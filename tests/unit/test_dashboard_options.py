"""The dashboard's options (parsing and rules), its start lines, and the metrics text."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from celeriac.dashboard.metrics import EventCounters, render
from celeriac.dashboard.options import (
    DashboardOptions,
    OptionsError,
    is_loopback,
    normalise_prefix,
    parse_basic_auth,
    parse_duration,
)
from celeriac.dashboard.server import start_lines
from celeriac.dashboard.store import HistoryStore


def test_basic_auth_pairs_and_their_errors_never_repeat_the_text() -> None:
    assert parse_basic_auth("alice:s3cret") == [("alice", "s3cret")]
    assert parse_basic_auth("a:b:c, bob:pw") == [("a", "b:c"), ("bob", "pw")]
    for bad in ("alice", "alice:", ":pw", "a:b,,"):
        with pytest.raises(OptionsError) as info:
            parse_basic_auth(bad)
        assert "is not user:password" in str(info.value)
    with pytest.raises(OptionsError) as info:
        parse_basic_auth("ok:fine,secretpassword")
    assert "entry 2" in str(info.value) and "secretpassword" not in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400.0), ("12h", 43200.0), ("30m", 1800.0), ("90s", 90.0), ("3600", 3600.0),
    ("1.5h", 5400.0), ("2w", 14 * 86400.0), (" 10 M ", 600.0), ("0", None), (0, None),
    (60, 60.0)])
def test_durations(text: str | int, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7 days", "-5", "1y", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(OptionsError):
        parse_duration(text)


def test_prefixes_and_loopback() -> None:
    assert [normalise_prefix(p) for p in ("", "/", "flower", "/flower/", "a//b/")] == [
        "", "", "/flower", "/flower", "/a/b"]
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.1.2.3", "::1", "[::1]",
                                        "localhost", "LOCALHOST"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "10.0.0.1", "example.com",
                                            "192.168.1.2"))


def test_no_credentials_means_loopback_only_and_read_only() -> None:
    options = DashboardOptions().check()
    assert (options.auth_enabled, options.can_act) == (False, False)
    with pytest.raises(OptionsError) as info:
        DashboardOptions(address="0.0.0.0").check()
    assert "--basic-auth=user:password" in str(info.value)
    assert DashboardOptions(address="0.0.0.0", token="t").check().can_act
    assert not DashboardOptions(basic_auth=[("a", "b")], read_only=True).check().can_act


def test_other_rules() -> None:
    for bad in (dict(port=70000), dict(max_tasks=0), dict(inspect_timeout=0),
                dict(certfile="cert.pem"), dict(log_level="loud")):
        with pytest.raises(OptionsError):
            DashboardOptions(**bad).check()
    options = DashboardOptions(url_prefix="flower/", port=8080).check()
    assert options.url() == "http://127.0.0.1:8080/flower/"
    tls = DashboardOptions(certfile="c.pem", keyfile="k.pem", address="::1").check()
    assert tls.url() == "https://[::1]:5555/"


def test_secrets_stay_out_of_repr_and_start_lines() -> None:
    options = DashboardOptions(basic_auth=[("alice", "pw-123456")], token="tok-654321",
                               max_age=None).check()
    assert "pw-123456" not in repr(options) and "tok-654321" not in repr(options)
    lines = "\n".join(start_lines(options, "sqlite:///h.sqlite3"))
    assert "pw-123456" not in lines and "tok-654321" not in lines and "alice" not in lines
    assert "basic auth and bearer token" in lines and "no age limit" in lines
    plain = "\n".join(start_lines(DashboardOptions().check(), "x"))
    assert "loopback only" in plain and "read-only (no credentials)" in plain


def event(type_: str, uuid: str, **fields: object) -> dict[str, object]:
    return {"type": type_, "uuid": uuid, "hostname": "w1@h", **fields}


def test_event_counters_count_every_event_once_under_its_tasks_name() -> None:
    counters = EventCounters()
    rows = {"a": {"uuid": "a", "name": "proj.add"}, "b": {"uuid": "b", "name": "proj.add"}}
    counters.observe([event("task-received", "a", name="proj.add"),
                      event("task-started", "a")], rows)
    # task-succeeded carries no name: the task's row gives it
    counters.observe([event("task-succeeded", "a", runtime=0.5),
                      {"type": "worker-heartbeat", "hostname": "w1@h"}, "not an event"], rows)
    counters.observe([event("task-received", "b"), event("task-retried", "b"),
                      event("task-received", "b"), event("task-retried", "b")], rows)
    events, runtimes = counters.snapshot()
    assert events == {("task-received", "proj.add", "w1@h"): 3,
                      ("task-started", "proj.add", "w1@h"): 1,
                      ("task-succeeded", "proj.add", "w1@h"): 1,
                      ("task-retried", "proj.add", "w1@h"): 2}
    hist = runtimes[("proj.add", "w1@h")]
    assert (hist.n, hist.total) == (1, 0.5)


SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="(\\.|[^"\\])*",?)*\})? -?[0-9.e+inf]+$')


def test_metrics_text_is_prometheus_format(tmp_path: Path) -> None:
    store = HistoryStore.open(str(tmp_path / "h.sqlite3"))
    try:
        now = time.time()
        store.ingest([
            {"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": now, "freq": 2.0,
             "active": 1, "local_received": now, "clock": 1},
            {"type": "task-received", "uuid": "u1", "name": 'odd"name\\', "hostname": "w1@h",
             "timestamp": now, "local_received": now, "clock": 2},
            {"type": "task-succeeded", "uuid": "u1", "hostname": "w1@h", "runtime": 0.2,
             "timestamp": now, "local_received": now, "clock": 3}])
        store.record_queue_depths(now, {"celery": 4})
        counters = EventCounters()
        counters.observe([event("task-received", "u1", name='odd"name\\'),
                          event("task-succeeded", "u1", runtime=0.2)],
                         {"u1": {"uuid": "u1", "name": 'odd"name\\'}})
        text = render(store, counters, {"events_total": 3, "lag_seconds": 0.0})
    finally:
        store.close()
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or \
            SAMPLE.match(line), line
    assert 'celeriac_tasks{state="SUCCESS",name="odd\\"name\\\\"} 1' in text
    assert 'celeriac_queue_messages{queue="celery"} 4' in text
    assert "celeriac_workers_online 1" in text
    assert 'celeriac_worker_active_tasks{worker="w1@h"} 1' in text
    assert 'celeriac_task_runtime_seconds_bucket{name="odd\\"name\\\\",le="0.25"} 1' in text
    assert 'celeriac_task_runtime_seconds_bucket{name="odd\\"name\\\\",le="0.1"} 0' in text
    assert 'flower_task_runtime_seconds_bucket{worker="w1@h",task="odd\\"name\\\\",' \
           'le="+Inf"} 1' in text
    assert "celeriac_dashboard_events_ingested_total 3" in text
    assert "celeriac_dashboard_ingest_lag_seconds 0.0" in text
    assert 'flower_worker_number_of_currently_executing_tasks{worker="w1@h"} 1' in text
