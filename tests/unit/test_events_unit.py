"""Events without a worker: the fields, the routing keys, the clock, batching, topic
matching of receivers, and State folding a task's life (on memory://)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers import Fanout, Notice
from celeriac.brokers.base import topic_matches
from celeriac.events import Event, EventDispatcher, LamportClock, State, group_from, routing_key
from celeriac.events.dumper import Dumper, humanize_type
from celeriac.events.event import MULTI, short_repr, utcoffset


@pytest.fixture
def app() -> Any:
    app = Celery("evunit", broker=f"memory://evunit-{time.monotonic_ns()}", backend="memory://")
    yield app
    app.close()


class Recorder:
    """A fanout that keeps what it is asked to broadcast."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Notice]] = []

    def broadcast(self, exchange: str, notices: Any) -> None:
        self.sent.extend((exchange, n) for n in notices)


def recording(app: Any, **options: Any) -> tuple[EventDispatcher, Recorder]:
    recorder = Recorder()
    dispatcher = EventDispatcher(app, "w1@host", **options)
    dispatcher._fanout = recorder  # type: ignore[assignment]
    return dispatcher, recorder


def test_event_is_a_dict_with_type_and_timestamp() -> None:
    event = Event("task-succeeded", uuid="u1", result="5")
    assert event["type"] == "task-succeeded" and event["uuid"] == "u1"
    assert isinstance(event["timestamp"], float)
    assert Event("x-y", timestamp=1.5)["timestamp"] == 1.5
    assert group_from("task-sent") == "task" and group_from("worker-online") == "worker"


@pytest.mark.parametrize("type_, key", [("task-succeeded", "task.succeeded"),
                                        ("worker-heartbeat", "worker.heartbeat"),
                                        ("task-sent", "task.sent"), ("custom", "custom")])
def test_routing_keys(type_: str, key: str) -> None:
    assert routing_key(type_) == key


def test_sent_events_carry_celerys_common_fields(app: Any) -> None:
    dispatcher, recorder = recording(app)
    dispatcher.send("worker-online", freq=2.0, active=0, processed=0)
    exchange, notice = recorder.sent[0]
    assert exchange == "celeryev" and notice.routing_key == "worker.online"
    assert notice.headers == {"hostname": "w1@host"}
    event = json.loads(notice.body)
    assert event["type"] == "worker-online" and event["hostname"] == "w1@host"
    assert isinstance(event["pid"], int) and isinstance(event["clock"], int)
    assert isinstance(event["timestamp"], float)
    assert isinstance(event["utcoffset"], float) and event["utcoffset"] == utcoffset()
    assert event["freq"] == 2.0


def test_event_exchange_setting_names_the_exchange(app: Any) -> None:
    app.conf.event_exchange = "myev"
    dispatcher, recorder = recording(app)
    dispatcher.send("worker-heartbeat")
    assert recorder.sent[0][0] == "myev"


def test_lamport_clock_moves_forward_and_past_what_it_sees() -> None:
    clock = LamportClock()
    assert clock.forward() == 1 and clock.forward() == 2
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12


def test_each_event_forwards_the_apps_clock(app: Any) -> None:
    dispatcher, recorder = recording(app)
    for _ in range(3):
        dispatcher.send("worker-heartbeat")
    clocks = [json.loads(n.body)["clock"] for _, n in recorder.sent]
    assert clocks == sorted(clocks) and len(set(clocks)) == 3
    assert app.clock.value == clocks[-1]


def test_task_events_are_batched_and_flushed_when_the_buffer_is_full(app: Any) -> None:
    dispatcher, recorder = recording(app, buffer_group=("task",), buffer_limit=5,
                                     flush_interval=60)
    for i in range(4):
        dispatcher.send("task-received", uuid=str(i))
    assert recorder.sent == []
    dispatcher.send("task-started", uuid="4")
    assert len(recorder.sent) == 1
    notice = recorder.sent[0][1]
    assert notice.routing_key == MULTI
    assert [e["uuid"] for e in json.loads(notice.body)] == ["0", "1", "2", "3", "4"]
    dispatcher.close()


def test_the_rest_goes_on_close_and_worker_events_at_once(app: Any) -> None:
    dispatcher, recorder = recording(app, buffer_group=("task",), buffer_limit=100,
                                     flush_interval=60)
    dispatcher.send("task-succeeded", uuid="a", result="1", runtime=0.1)
    dispatcher.send("worker-heartbeat")
    assert [n.routing_key for _, n in recorder.sent] == ["worker.heartbeat"]
    dispatcher.close()
    assert [n.routing_key for _, n in recorder.sent] == ["worker.heartbeat", MULTI]


def test_a_lone_task_event_goes_out_after_the_flush_interval(app: Any) -> None:
    dispatcher, recorder = recording(app, buffer_group=("task",), flush_interval=0.05)
    dispatcher.send("task-started", uuid="a")
    deadline = time.monotonic() + 10
    while not recorder.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [n.routing_key for _, n in recorder.sent] == [MULTI]
    dispatcher.close()


def test_disabled_or_other_groups_send_nothing(app: Any) -> None:
    dispatcher, recorder = recording(app, enabled=False)
    dispatcher.send("worker-heartbeat")
    dispatcher.enabled = True
    dispatcher.groups = {"worker"}
    dispatcher.send("task-started", uuid="x")
    dispatcher.send("worker-heartbeat")
    assert [n.routing_key for _, n in recorder.sent] == ["worker.heartbeat"]


def test_a_broker_that_fails_does_not_fail_the_sender(app: Any) -> None:
    dispatcher = EventDispatcher(app, "w@h")

    class Down:
        def broadcast(self, *_: Any) -> None:
            raise ConnectionError("down")

    dispatcher._fanout = Down()  # type: ignore[assignment]
    dispatcher.send("worker-heartbeat")  # logged, not raised


def test_short_repr_cuts_and_never_raises() -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert short_repr(5) == "5" and short_repr("x") == "'x'"
    assert len(short_repr("a" * 5000)) == 1024
    assert "unrepresentable" in short_repr(Bad())


@pytest.mark.parametrize("pattern, key, matches", [
    ("#", "task.multi", True), ("task.#", "task.multi", True),
    ("worker.*", "worker.heartbeat", True), ("worker.*", "task.multi", False),
    ("task.succeeded", "task.multi", False), ("*.heartbeat", "worker.heartbeat", True),
])
def test_topic_matching(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


def test_receiver_gets_batches_and_single_events_by_topic(app: Any) -> None:
    seen: list[str] = []
    workers: list[str] = []
    receiver = app.events.Receiver(app.connection(), handlers={
        "task-succeeded": lambda e: seen.append(e["uuid"]), "*": lambda e: seen.append(e["type"])})
    only_workers = app.events.Receiver(app.connection(), routing_key="worker.*",
                                       handlers={"*": lambda e: workers.append(e["type"])})
    with app.connection() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="w@h", buffer_group=("task",))
        dispatcher.send("task-received", uuid="t1", name="add")
        dispatcher.send("task-succeeded", uuid="t1", result="2", runtime=0.0)
        dispatcher.flush()
        dispatcher.send("worker-online", freq=2.0)
        receiver.capture(limit=3, timeout=5)
        only_workers.capture(limit=1, timeout=5)
    assert seen == ["task-received", "t1", "worker-online"]
    assert workers == ["worker-online"]
    receiver.close()
    only_workers.close()


def test_capture_times_out_when_nothing_comes(app: Any) -> None:
    receiver = app.events.Receiver(app.connection(), handlers={})
    with pytest.raises(socket.timeout):
        receiver.capture(timeout=0.2)
    receiver.close()


def test_should_stop_ends_capture(app: Any) -> None:
    receiver = app.events.Receiver(app.connection(), handlers={})
    thread = threading.Thread(target=receiver.capture)
    thread.start()
    receiver.should_stop = True
    thread.join(10)
    assert not thread.is_alive()
    receiver.close()


def test_receiver_needs_a_fanout_broker(app: Any) -> None:
    assert isinstance(app.connection().broker, Fanout)


def _task_events(now: float) -> list[dict[str, Any]]:
    base = {"hostname": "w1@h", "utcoffset": 0.0, "pid": 1, "local_received": now}
    return [
        dict(base, type="worker-online", freq=2.0, active=0, processed=0, clock=1,
             timestamp=now, loadavg=[0.1, 0.2, 0.3], sw_ident="py-celeriac", sw_ver="1",
             sw_sys="Linux"),
        dict(base, type="task-received", uuid="t1", name="proj.add", args="(2, 2)",
             kwargs="{}", root_id="t1", parent_id=None, retries=0, eta=None, expires=None,
             clock=2, timestamp=now + 0.1),
        dict(base, type="task-started", uuid="t1", clock=3, timestamp=now + 0.2),
        dict(base, type="task-succeeded", uuid="t1", result="4", runtime=0.05, clock=4,
             timestamp=now + 0.3),
        dict(base, type="task-received", uuid="t2", name="proj.fail", args="()", kwargs="{}",
             root_id="t1", parent_id="t1", retries=0, eta=None, expires=None, clock=5,
             timestamp=now + 0.4),
        dict(base, type="task-failed", uuid="t2", exception="ValueError('boom')",
             traceback="Traceback...", clock=6, timestamp=now + 0.5),
    ]


def test_state_folds_a_task_life() -> None:
    state = State()
    now = time.time()
    for event in _task_events(now):
        state.event(event)
    assert state.event_count == 6 and state.task_count == 2
    t1, t2 = state.tasks["t1"], state.tasks["t2"]
    assert (t1.name, t1.state, t1.result, t1.args) == ("proj.add", "SUCCESS", "4", "(2, 2)")
    assert t1.received == now + 0.1 and t1.started == now + 0.2
    assert t1.succeeded == now + 0.3 and t1.runtime == 0.05 and t1.ready
    assert t2.state == "FAILURE" and t2.exception == "ValueError('boom')"
    assert t2.traceback == "Traceback..." and t2.parent is t1 and t2 in t1.children
    assert t1.worker is t2.worker is state.workers["w1@h"]
    worker = state.workers["w1@h"]
    assert worker.freq == 2.0 and worker.alive and worker.sw_ident == "py-celeriac"
    assert state.alive_workers() == [worker]
    assert [u for u, _ in state.tasks_by_time()] == ["t2", "t1"]
    assert [u for u, _ in state.tasks_by_type("proj.add")] == ["t1"]
    assert set(state.tasks_by_type["proj.fail"]) == {t2}
    assert state.task_types() == ["proj.add", "proj.fail"]


def test_an_event_out_of_order_does_not_move_a_task_back() -> None:
    state = State()
    now = time.time()
    events = _task_events(now)
    for event in (events[3], events[1]):  # succeeded first, then received
        state.event(event)
    task = state.tasks["t1"]
    assert task.state == "SUCCESS" and task.name == "proj.add" and task.args == "(2, 2)"


def test_worker_offline_and_expired_heartbeats() -> None:
    state = State()
    now = time.time()
    state.event(dict(_task_events(now)[0]))
    state.event({"type": "worker-heartbeat", "hostname": "old@h", "freq": 1.0,
                 "timestamp": now - 10, "local_received": now - 10, "clock": 1})
    assert [w.hostname for w in state.alive_workers()] == ["w1@h"]
    left: list[str] = []
    state.on_node_leave = lambda w: left.append(w.hostname)
    state.event({"type": "worker-offline", "hostname": "w1@h", "timestamp": now,
                 "local_received": now, "clock": 9})
    assert left == ["w1@h"] and "w1@h" not in state.workers


def test_state_keeps_at_most_max_tasks_in_memory() -> None:
    state = State(max_tasks_in_memory=3)
    for i in range(10):
        state.event({"type": "task-received", "uuid": f"t{i}", "name": "n", "clock": i,
                     "hostname": "w@h", "timestamp": float(i), "local_received": float(i)})
    assert list(state.tasks) == ["t7", "t8", "t9"] and state.task_count == 10


def test_dump_lines_look_like_celerys() -> None:
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    dumper = Dumper(Out())  # type: ignore[arg-type]
    dumper.on_event({"type": "worker-heartbeat", "hostname": "w@h", "timestamp": 0.0,
                     "freq": 2.0, "active": 0})
    dumper.on_event({"type": "task-received", "hostname": "w@h", "timestamp": 0.0,
                     "uuid": "u", "name": "add", "args": "(1,)", "kwargs": "{}", "clock": 3})
    dumper.on_event({"type": "task-succeeded", "hostname": "w@h", "timestamp": 0.0,
                     "uuid": "u", "result": "1"})
    text = [line for line in lines if line.strip()]
    assert text[0] == "w@h [1970-01-01 00:00:00+00:00] heartbeat: active=0, freq=2.0"
    assert text[1] == ("w@h [1970-01-01 00:00:00+00:00] task received: add(u) args=(1,) "
                       "kwargs={} clock=3")
    assert text[2] == ("w@h [1970-01-01 00:00:00+00:00] task succeeded: add(u) args=(1,) "
                       "kwargs={} result=1")
    assert humanize_type("worker-online") == "started"
