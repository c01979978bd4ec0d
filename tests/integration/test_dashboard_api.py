"""Every route of the dashboard's HTTP API (Flower's and the pages' own) against a real
worker process on Redis (db 4), a real history store on disk and the real ingestor.

The module shares one worker (prefork, two processes, events on) and one dashboard;
the app has its own queue, event and control exchanges and node name, so workers of
other tests never show up. Requests are curl-like (basic auth, no Origin), so the CSRF
rule lets them through; tests/integration/test_dashboard_security.py tests the rules.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, load_proj, wait_until

from celeriac.contrib.testing import WorkerProcess

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from celeriac.dashboard.ingest import Ingestor  # noqa: E402
from celeriac.dashboard.options import DashboardOptions  # noqa: E402
from celeriac.dashboard.server import build_app  # noqa: E402
from celeriac.dashboard.store import HistoryStore  # noqa: E402

REDIS_DB = 4
AUTH = ("admin", "a-long-password")
PROJ = '''
import time
from celeriac import Celery

app = Celery("proj", broker="{url}", backend="{url}")
app.conf.task_default_queue = "{queue}"
app.conf.broker_dead_letter_queue = "{queue}.dead"
app.conf.event_exchange = "ev-{tag}"
app.conf.control_exchange = "ctl-{tag}"
app.conf.worker_heartbeat_interval = 0.5
app.conf.beat_schedule = {{"tick-{tag}": {{"task": "proj.add", "schedule": 30.0,
                                            "args": (1, 2)}}}}


@app.task
def add(x, y):
    return x + y


@app.task
def nap(seconds):
    time.sleep(seconds)
    return seconds
'''


class Env:
    def __init__(self, root: Path, proj: Any, tag: str, node: str, client: TestClient,
                 ingestor: Ingestor, store: HistoryStore) -> None:
        self.root, self.proj, self.tag, self.node = root, proj, tag, node
        self.client, self.ingestor, self.store = client, ingestor, store
        self.queue = proj.app.conf.task_default_queue

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, auth=AUTH)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        if body is None:
            return self.client.post(path, params=params, auth=AUTH)
        return self.client.post(path, params=params, json=body, auth=AUTH)

    def state(self, task_id: str) -> str | None:
        found = self.get(f"/api/task/info/{task_id}")
        return found.json().get("state") if found.status_code == 200 else None

    def inspect(self) -> Any:
        return self.proj.app.control.inspect(destination=[self.node], timeout=5)


@pytest.fixture(scope="module")
def env(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("dashboard-api")
    tag = uuid.uuid4().hex[:8]
    (root / "proj.py").write_text(PROJ.format(url=f"{redis_server}/{REDIS_DB}",
                                              queue=f"q-{tag}", tag=tag))
    proj = load_proj(root)
    node = f"dash-{tag}@{socket.gethostname()}"
    store = HistoryStore.open(str(root / "history.sqlite3"))
    ingestor = Ingestor(proj.app, store, flush_every=0.05)
    ingestor.start()
    worker = WorkerProcess("proj", cwd=root, args=["-P", "prefork", "-c", "2", "-E",
                                                   "-n", f"dash-{tag}@%h"])
    worker.start()
    try:
        options = DashboardOptions(basic_auth=[AUTH], inspect_timeout=3.0)
        with TestClient(build_app(proj.app, options, store=store, ingestor=ingestor)) as c:
            yield Env(root, proj, tag, node, c, ingestor, store)
    finally:
        worker.stop()
        ingestor.stop()
        store.close()
        proj.app.close()


def wait_state(env: Env, task_id: str, state: str, timeout: float = 60) -> bool:
    return bool(wait_until(lambda: env.state(task_id) == state, timeout))


def test_async_apply_runs_a_task_that_every_read_route_then_shows(env: Env) -> None:
    sent = env.post("/api/task/async-apply/proj.add", {"args": [2, 3]})
    assert sent.status_code == 200, sent.text
    task_id = sent.json()["task-id"]
    assert sent.json()["state"] in ("PENDING", "STARTED", "SUCCESS")
    assert wait_until(lambda: env.get(f"/api/task/result/{task_id}").json().get("result")
                      == 5, 60)
    assert env.get(f"/api/task/result/{task_id}").json() == {
        "task-id": task_id, "state": "SUCCESS", "result": 5}
    assert wait_state(env, task_id, "SUCCESS")
    info = env.get(f"/api/task/info/{task_id}").json()
    assert (info["name"], info["worker"], info["args"], info["result"]) == (
        "proj.add", env.node, "[2, 3]" if info["args"].startswith("[") else "(2, 3)", "5")
    listed = env.get("/api/tasks", taskname="proj.add", state="SUCCESS",
                     workername=env.node, limit=50).json()
    assert task_id in listed and listed[task_id]["uuid"] == task_id
    assert env.get("/api/tasks", taskname="proj.nope").json() == {}
    assert "proj.add" in env.get("/api/task/types").json()["task-types"]
    assert env.get("/api/task/info/no-such-task").status_code == 404
    page = env.get("/api/dashboard/tasks", search=task_id[:8], sort_by="-received").json()
    assert page["total"] == 1 and page["tasks"][0]["uuid"] == task_id
    detail = env.get(f"/api/dashboard/task/{task_id}").json()
    assert {"task-received", "task-started", "task-succeeded"} <= {
        e["type"] for e in detail["events"]}
    assert detail["children"] == [] and detail["parent"] is None
    missing = env.get("/api/dashboard/task/no-such-task")
    assert missing.status_code == 404 and "error" in missing.json()
    overview = env.get("/api/dashboard/overview").json()
    assert overview["counts"]["by_name"]["proj.add"]["SUCCESS"] >= 1
    assert overview["workers_online"] >= 1 and overview["ingest"]["events_total"] > 0
    plots = env.get("/api/dashboard/plots", name="proj.add").json()
    assert plots["runtimes"]["n"] >= 1 and plots["throughput"]
    assert sum(b["succeeded"] for b in plots["throughput"]) >= 1

    def metrics() -> str:
        return str(env.get("/metrics").text)

    assert wait_until(lambda: 'celeriac_task_events_total{type="task-succeeded",'
                      f'name="proj.add",worker="{env.node}"}}' in metrics(), 30)
    text = metrics()
    assert 'celeriac_tasks{state="SUCCESS",name="proj.add"}' in text
    assert f'flower_events_total{{worker="{env.node}",type="task-succeeded",' \
           f'task="proj.add"}}' in text
    assert f'celeriac_task_runtime_seconds_count{{name="proj.add"}}' in text
    assert f'flower_worker_online{{worker="{env.node}"}} 1' in text
    assert "celeriac_dashboard_events_ingested_total " in text


def test_apply_waits_for_the_result_and_send_task_needs_no_registered_task(
        env: Env) -> None:
    done = env.post("/api/task/apply/proj.add", {"args": [20], "kwargs": {"y": 1}})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["result"]) == ("SUCCESS", 21)
    sent = env.post("/api/task/send-task/proj.add", {"args": [1, 1], "countdown": 0})
    assert sent.status_code == 200, sent.text
    result = env.proj.app.AsyncResult(sent.json()["task-id"])
    assert result.get(timeout=60) == 2
    unknown = env.post("/api/task/async-apply/proj.nope", {"args": []})
    assert unknown.status_code == 404 and "proj.nope" in unknown.json()["error"]
    bad = env.post("/api/task/async-apply/proj.add", {"args": "not a list"})
    assert bad.status_code == 400
    assert env.get("/api/task/result/never-sent").json() == {
        "task-id": "never-sent", "state": "PENDING"}
    for path in ("/api/task/abort/x", f"/api/worker/pool/restart/{env.node}"):
        refused = env.post(path)
        assert refused.status_code == 501 and "celeriac" in refused.json()["error"]


def test_workers_routes_show_the_worker_from_inspect_and_the_store(env: Env) -> None:
    workers = env.get("/api/workers", refresh=1).json()
    assert env.node in workers
    mine = workers[env.node]
    assert mine["stats"]["pool"]["max-concurrency"] == 2
    assert [q["name"] for q in mine["active_queues"]] == [env.queue]
    assert "proj.add" in mine["registered"]
    assert env.get("/api/workers", workername=env.node).json().keys() == {env.node}
    assert env.get("/api/workers", workername="nobody@nowhere").status_code == 404
    assert wait_until(lambda: env.get("/api/workers", status=1).json().get(env.node), 30)
    page = env.get("/api/dashboard/workers").json()["workers"]
    row = next(w for w in page if w["hostname"] == env.node)
    assert (row["status"], row["concurrency"], row["queues"]) == ("ONLINE", 2, [env.queue])
    assert row["active_tasks"] == 0
    detail = env.get(f"/api/dashboard/worker/{env.node}").json()
    assert detail["worker"]["hostname"] == env.node
    assert "proj.add" in detail["registered"]
    assert detail["active"] == [] and detail["stats"]["pool"]["max-concurrency"] == 2
    assert env.get("/api/dashboard/worker/nobody@nowhere").status_code == 404


def concurrency(env: Env) -> int:
    stats = env.inspect().stats() or {}
    return int(stats.get(env.node, {}).get("pool", {}).get("max-concurrency", -1))


def test_pool_grow_shrink_and_autoscale_change_the_worker(env: Env) -> None:
    grown = env.post(f"/api/worker/pool/grow/{env.node}", n=1)
    assert grown.json() == {"message": f"Growing '{env.node}' worker's pool by 1"}
    assert wait_until(lambda: concurrency(env) == 3, 30)
    shrunk = env.post(f"/api/worker/pool/shrink/{env.node}", n=1)
    assert shrunk.json() == {"message": f"Shrinking '{env.node}' worker's pool by 1"}
    assert wait_until(lambda: concurrency(env) == 2, 30)
    scaled = env.post(f"/api/worker/pool/autoscale/{env.node}", min=1, max=3)
    assert scaled.status_code == 200, scaled.text
    assert scaled.json() == {"message": f"Autoscaling '{env.node}' worker (min=1, max=3)"}
    assert wait_until(lambda: (env.inspect().stats() or {}).get(env.node, {})
                      .get("autoscaler", {}).get("max") == 3, 30)
    env.post(f"/api/worker/pool/autoscale/{env.node}", min=2, max=2)
    nobody = env.post("/api/worker/pool/grow/nobody@nowhere", n=1)
    assert nobody.status_code == 404 and "no worker answered" in nobody.json()["error"]


def test_rate_limit_and_time_limits_reach_the_worker(env: Env) -> None:
    # As the pages send it: a urlencoded form.
    limited = env.client.post("/api/task/rate-limit/proj.add", auth=AUTH,
                              data={"ratelimit": "100/m", "workername": env.node})
    assert limited.json() == {"message": "new rate limit set successfully"}
    assert "proj.add [rate_limit=100/m]" in env.inspect().registered("rate_limit")[env.node]
    timed = env.post("/api/task/timeout/proj.nap", soft=30, hard=40, workername=env.node)
    assert timed.status_code == 200, timed.text
    registered = env.inspect().registered("soft_time_limit", "time_limit")[env.node]
    assert "proj.nap [soft_time_limit=30.0 time_limit=40.0]" in registered
    env.post("/api/task/rate-limit/proj.add", ratelimit="", workername=env.node)
    refused = env.post("/api/task/rate-limit/proj.nope", ratelimit="1/s",
                       workername=env.node)
    assert refused.status_code == 403 and "unknown task" in refused.json()["error"]
    assert env.post("/api/task/rate-limit/proj.add").status_code == 400


def test_add_and_cancel_consumer(env: Env) -> None:
    extra = f"extra-{env.tag}"

    def queues() -> list[str]:
        return [q["name"] for q in (env.inspect().active_queues() or {}).get(env.node, [])]

    added = env.post(f"/api/worker/queue/add-consumer/{env.node}", queue=extra)
    assert added.json() == {"message": f"add consumer {extra}"}
    assert wait_until(lambda: extra in queues(), 30)
    cancelled = env.post(f"/api/worker/queue/cancel-consumer/{env.node}", queue=extra)
    assert cancelled.status_code == 200 and extra in cancelled.json()["message"]
    assert wait_until(lambda: extra not in queues(), 30)
    assert env.post(f"/api/worker/queue/add-consumer/{env.node}").status_code == 400


def test_revoke_a_waiting_task_and_terminate_a_running_one(env: Env) -> None:
    later = env.post("/api/task/async-apply/proj.add", {"args": [1, 1], "countdown": 600})
    later_id = later.json()["task-id"]
    revoked = env.post(f"/api/task/revoke/{later_id}")
    assert revoked.json() == {"message": f"Revoked '{later_id}'"}
    assert wait_until(lambda: later_id in (env.inspect().revoked() or {}).get(env.node, []),
                      30)
    running = env.post("/api/task/async-apply/proj.nap", {"args": [120]}).json()["task-id"]
    assert wait_state(env, running, "STARTED")
    stopped = env.post(f"/api/task/terminate/{running}", signal="SIGKILL")
    assert stopped.status_code == 200, stopped.text
    assert wait_state(env, running, "REVOKED")
    assert env.post(f"/api/task/revoke/{running}", signal="SIGNOPE").status_code == 400


def test_retry_sends_the_task_again_with_its_arguments(env: Env) -> None:
    first = env.post("/api/task/async-apply/proj.add", {"args": [4, 5]}).json()["task-id"]
    assert wait_state(env, first, "SUCCESS")
    again = env.post(f"/api/task/retry/{first}")
    assert again.status_code == 200, again.text
    assert again.json()["retry_of"] == first and again.json()["task-id"] != first
    assert env.proj.app.AsyncResult(again.json()["task-id"]).get(timeout=60) == 9
    # Arguments hidden from monitors (argsrepr) and not kept by the backend: refused.
    hidden = env.post("/api/task/async-apply/proj.add",
                      {"args": [1, 2], "argsrepr": "<secret>"}).json()["task-id"]
    assert wait_state(env, hidden, "SUCCESS")
    refused = env.post(f"/api/task/retry/{hidden}")
    assert refused.status_code == 409 and "result_extended" in refused.json()["error"]
    assert env.post("/api/task/retry/no-such-task").status_code == 404


def test_queues_purge_and_dead_letters(env: Env) -> None:
    lengths = env.get("/api/queues/length").json()["active_queues"]
    assert env.queue in [q["name"] for q in lengths]
    other = f"other-{env.tag}"
    for i in range(3):
        env.proj.app.send_task("proj.add", args=[i, i], queue=other)
    purged = env.post(f"/api/queues/purge/{other}")
    assert purged.json() == {"queue": other, "purged": 3}
    env.proj.app.send_task("proj.nope", args=[1])  # the worker sets it aside

    def dead() -> list[dict[str, Any]]:
        return [d for d in env.get("/api/dashboard/queues").json()["dead_letters"]
                if d.get("task_name") == "proj.nope"]

    assert wait_until(lambda: len(dead()) == 1, 60)
    page = env.get("/api/dashboard/queues").json()
    assert env.queue in [q["name"] for q in page["queues"]]
    assert isinstance(page["series"], dict)
    letter = dead()[0]["id"]
    assert env.post(f"/api/queues/dead-letters/requeue/{letter}").status_code == 200
    assert wait_until(lambda: len(dead()) == 1 and dead()[0]["id"] != letter, 60)
    again = dead()[0]["id"]
    assert env.post(f"/api/queues/dead-letters/delete/{again}").json() == {"deleted": again}
    assert dead() == []
    gone = env.post(f"/api/queues/dead-letters/delete/{again}")
    assert gone.status_code == 404


def test_beat_schedule_and_the_pages(env: Env) -> None:
    beat = env.get("/api/dashboard/beat").json()
    assert f"tick-{env.tag}" in [e["name"] for e in beat["entries"]]
    session = env.get("/api/dashboard/session").json()
    assert session["user"] == AUTH[0] and session["can_act"] is True
    assert session["csrf_token"]
    for path in ("/", "/tasks", "/task/x", f"/worker/{env.node}", "/queues", "/beat",
                 "/plots"):
        page = env.get(path)
        assert page.status_code == 200 and "<html" in page.text
    assert env.get("/static/index.html").status_code == 200
    assert env.client.get("/healthcheck").text == "OK"


def test_the_stream_sends_a_task_as_it_changes(env: Env) -> None:
    import httpx
    import uvicorn

    port = free_port()
    web = build_app(env.proj.app, DashboardOptions(basic_auth=[AUTH]), store=env.store,
                    ingestor=env.ingestor)
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 30)
        seen: list[dict[str, Any]] = []
        sent: list[str] = []
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/dashboard/stream",
                          auth=AUTH, timeout=60) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = None
            deadline = time.monotonic() + 60
            for line in response.iter_lines():
                if line.startswith(": connected") and not sent:
                    sent.append(env.proj.add.delay(7, 7).id)
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: ") and kind == "task":
                    seen.append(json.loads(line[len("data: "):]))
                    if any(t["uuid"] == sent[0] and t["state"] == "SUCCESS" for t in seen):
                        break
                assert time.monotonic() < deadline, "no task update on the stream"
        assert any(t["uuid"] == sent[0] for t in seen)
    finally:
        server.should_exit = True
        thread.join(30)


def test_shutdown_stops_the_worker(env: Env) -> None:
    tag = uuid.uuid4().hex[:6]
    node = f"bye-{tag}@{socket.gethostname()}"
    with WorkerProcess("proj", cwd=env.root, args=["-P", "threads", "-c", "1",
                                                   "-n", f"bye-{tag}@%h"]) as worker:
        answer = env.post(f"/api/worker/shutdown/{node}")
        assert answer.json() == {"message": "Shutting down!"}
        proc = worker.proc
        assert proc is not None and wait_until(lambda: proc.poll() is not None, 60)
    assert env.post("/api/worker/shutdown/nobody@nowhere").status_code == 404
