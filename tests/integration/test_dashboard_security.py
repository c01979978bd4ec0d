"""The dashboard's security: loopback and read-only without credentials, basic auth,
bearer token, CSRF, ``--read-only``; and the command as a real process (refusal to
listen in the open without auth, /healthcheck, no password in its output).

In-process tests use the app on ``memory://`` (revoking there needs no worker) and a
real history store on tmp_path; the process tests use Redis db 4.
"""

from __future__ import annotations

import base64
import re
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from support import free_port, wait_until

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from celeriac import Celery  # noqa: E402
from celeriac.dashboard.options import DashboardOptions  # noqa: E402
from celeriac.dashboard.security import CSRF_COOKIE  # noqa: E402
from celeriac.dashboard.server import build_app  # noqa: E402
from celeriac.dashboard.store import HistoryStore  # noqa: E402

PASSWORD = "pw-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex
BROWSER = {"Origin": "http://127.0.0.1:5555", "Sec-Fetch-Site": "same-origin"}
REVOKE = "/api/task/revoke/some-task-id"
LOCAL = "http://127.0.0.1:5555"


@pytest.fixture
def client_for(tmp_path: Path) -> Iterator[Any]:
    """``client_for(**options)``: a TestClient over a dashboard with these options."""
    app = Celery("sec", broker="memory://", backend="memory://")
    store = HistoryStore.open(str(tmp_path / "history.sqlite3"))
    opened: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        client = TestClient(build_app(app, DashboardOptions(**options), store=store),
                            base_url=LOCAL)
        opened.append(client.__enter__())
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    store.close()
    app.close()


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_without_credentials_pages_read_but_every_action_is_refused(client_for: Any) -> None:
    client = client_for()
    assert client.get("/api/tasks").status_code == 200
    session = client.get("/api/dashboard/session").json()
    assert (session["user"], session["can_act"], session["read_only"]) == (None, False, True)
    refused = client.post(REVOKE)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "actions need a user: start the dashboard with --basic-auth or --token"}


def test_without_credentials_only_a_loopback_host_is_answered(client_for: Any) -> None:
    client = client_for()
    for host in ("127.0.0.1:5555", "localhost", "[::1]:5555", "LOCALHOST:80"):
        assert client.get("/api/tasks", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:5555", "10.0.0.1", "127.0.0.1.evil.example"):
        refused = client.get("/api/tasks", headers={"Host": host})
        assert refused.status_code == 403, host
        assert "DNS rebinding" in refused.json()["error"]
    assert client.get("/healthcheck", headers={"Host": "evil.example"}).text == "OK"
    with_auth = client_for(token=TOKEN)
    assert with_auth.get("/api/tasks", headers={"Host": "dashboard.example",
                                                "Authorization": f"Bearer {TOKEN}"}
                         ).status_code == 200


def test_basic_auth_is_needed_everywhere_but_the_healthcheck(client_for: Any) -> None:
    client = client_for(basic_auth=[("alice", PASSWORD), ("bob", "other-pw")])
    for path in ("/", "/tasks", "/api/tasks", "/api/dashboard/session", "/metrics",
                 "/static/index.html"):
        denied = client.get(path)
        assert denied.status_code == 401, path
        assert denied.headers["www-authenticate"] == 'Basic realm="celeriac"'
        assert "error" in denied.json()
    assert client.get("/healthcheck").text == "OK"
    assert client.get("/api/tasks", headers=basic("alice", "wrong")).status_code == 401
    assert client.get("/api/tasks", headers=basic("carol", PASSWORD)).status_code == 401
    assert client.get("/api/tasks", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.get("/api/tasks", headers=basic("bob", "other-pw")).status_code == 200
    session = client.get("/api/dashboard/session", headers=basic("alice", PASSWORD)).json()
    assert (session["user"], session["can_act"]) == ("alice", True)
    assert client.get("/metrics", headers=basic("alice", PASSWORD)).status_code == 200


def test_metrics_public_opens_only_metrics(client_for: Any) -> None:
    client = client_for(basic_auth=[("alice", PASSWORD)], metrics_public=True)
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/tasks").status_code == 401


def test_bearer_token(client_for: Any) -> None:
    client = client_for(token=TOKEN)
    denied = client.get("/api/tasks")
    assert denied.status_code == 401 and "Bearer" in denied.headers["www-authenticate"]
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert client.get("/api/tasks", headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/tasks", headers=right).status_code == 200
    # A bearer token is never sent by a browser on its own: no CSRF check.
    assert client.post(REVOKE, headers={**right, **BROWSER}).status_code == 200


def test_csrf_refuses_a_browser_post_without_the_cookie_value(client_for: Any) -> None:
    client = client_for(basic_auth=[("alice", PASSWORD)])
    auth = basic("alice", PASSWORD)
    page = client.get("/", headers=auth)
    cookie = page.cookies.get(CSRF_COOKIE)
    assert cookie and "samesite=strict" in page.headers["set-cookie"].lower()
    session = client.get("/api/dashboard/session", headers=auth).json()
    assert session["csrf_token"] == cookie  # the same one, once set
    forged = client.post(REVOKE, headers={**auth, **BROWSER})
    assert forged.status_code == 403 and "CSRF check failed" in forged.json()["error"]
    only_origin = client.post(REVOKE, headers={**auth, "Origin": "http://evil.example"})
    assert only_origin.status_code == 403
    wrong = client.post(REVOKE, headers={**auth, **BROWSER, "X-CSRF-Token": cookie + "x"})
    assert wrong.status_code == 403
    ok = client.post(REVOKE, headers={**auth, **BROWSER, "X-CSRF-Token": cookie})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"message": "Revoked 'some-task-id'"}
    # A script with basic auth and no browser headers (curl): nothing to forge.
    client.cookies.clear()
    assert client.post(REVOKE, headers=auth).status_code == 200


def test_read_only_refuses_every_action(client_for: Any) -> None:
    client = client_for(basic_auth=[("alice", PASSWORD)], read_only=True)
    auth = basic("alice", PASSWORD)
    session = client.get("/api/dashboard/session", headers=auth).json()
    assert (session["can_act"], session["read_only"]) == (False, True)
    dashboard = client.app.state.dashboard
    posts = [r.path for r in dashboard.routes() if "POST" in (r.methods or ())]
    assert len(posts) == 19  # Flower's 14 and the pages' 5
    for path in posts:
        concrete = re.sub(r"{[^}]+}", "x", path)
        refused = client.post(concrete, headers=auth)
        assert refused.status_code == 403, path
        assert refused.json() == {"error": "the dashboard is read-only (--read-only)"}
    assert client.get("/api/tasks", headers=auth).status_code == 200


def test_a_broker_away_is_a_json_error_without_its_password(tmp_path: Path) -> None:
    app = Celery("away", broker=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
                 backend="memory://")
    store = HistoryStore.open(str(tmp_path / "history.sqlite3"))
    try:
        with TestClient(build_app(app, DashboardOptions(), store=store),
                        base_url=LOCAL) as client:
            answer = client.get("/api/queues/length")
            assert answer.status_code == 503
            assert "broker" in answer.json()["error"] and PASSWORD not in answer.text
            assert client.get("/api/tasks").status_code == 200  # the store still answers
    finally:
        store.close()
        app.close()


def test_url_prefix_serves_everything_below_it(client_for: Any) -> None:
    client = client_for(url_prefix="flower/")
    assert client.get("/flower/healthcheck").text == "OK"
    assert client.get("/flower/api/tasks").status_code == 200
    assert client.get("/flower/tasks").status_code == 200
    assert client.get("/flower/api/dashboard/session").json()["url_prefix"] == "/flower"
    assert client.get("/api/tasks").status_code == 404


# -- the command, as a real process ------------------------------------------------------
@pytest.fixture
def redis_project(redis_server: str, tmp_path: Path) -> Path:
    tag = uuid.uuid4().hex[:8]
    (tmp_path / "proj.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('proj', broker='{redis_server}/4', backend='{redis_server}/4')\n"
        f"app.conf.task_default_queue = 'q-{tag}'\n"
        f"app.conf.event_exchange = 'ev-{tag}'\n"
        f"app.conf.control_exchange = 'ctl-{tag}'\n")
    return tmp_path


def command(redis_project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "celeriac", "-A", "proj", *args]


def run(redis_project: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(redis_project, *args), cwd=redis_project,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_the_command_refuses_an_open_address_without_credentials(redis_project: Path) -> None:
    for name in ("dashboard", "flower"):
        done = run(redis_project, name, "--address", "0.0.0.0", "--port", str(free_port()))
        assert done.returncode == 2
        assert "refusing to listen on 0.0.0.0 without credentials" in done.stderr
        assert "--basic-auth=user:password" in done.stderr and "--token" in done.stderr


def test_the_command_refuses_flower_options_it_does_not_take(redis_project: Path) -> None:
    done = run(redis_project, "flower", "--broker_api", "http://localhost:15672/api/")
    assert done.returncode == 2 and "--broker-api is not supported" in done.stderr
    done = run(redis_project, "flower", "--persistent=False")
    assert done.returncode == 2 and "always kept on disk" in done.stderr
    done = run(redis_project, "flower", "--basic-auth", f"alice{PASSWORD}")
    assert done.returncode == 2 and "is not user:password" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


def test_an_unreachable_broker_is_one_line_and_a_failure(redis_project: Path) -> None:
    broker = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    done = run(redis_project, "-b", broker, "dashboard", "--port", str(free_port()))
    assert done.returncode == 1
    assert "cannot reach the broker" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert PASSWORD not in done.stderr + done.stdout


def test_the_started_command_serves_and_never_prints_the_password(redis_project: Path) -> None:
    import httpx

    port = free_port()
    log = redis_project / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command(redis_project, "dashboard", "--port", str(port), "--address", "127.0.0.1",
                    "--basic-auth", f"alice:{PASSWORD}", "--db",
                    str(redis_project / "history.sqlite3"), "--inspect_timeout", "500",
                    "--logging", "info"),
            cwd=redis_project, stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, CELERIAC_DASHBOARD_TOKEN=TOKEN, PYTHONUNBUFFERED="1",
                     FLOWER_BASIC_AUTH=f"bob:{PASSWORD}"))
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthcheck", timeout=2).text == "OK"
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_until(healthy, 60) and proc.poll() is None, log.read_text()
        assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
        assert httpx.get(f"{base}/api/tasks", auth=("alice", "wrong"),
                         timeout=10).status_code == 401
        assert httpx.get(f"{base}/api/tasks", auth=("alice", PASSWORD),
                         timeout=10).status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/api/tasks", headers=bearer, timeout=10).status_code == 200
        assert httpx.post(f"{base}{REVOKE}", headers=bearer, timeout=10).status_code == 200
    finally:
        proc.terminate()
        code = proc.wait(30)
    output = log.read_text()
    assert code == 0, output
    assert f"celeriac dashboard on http://127.0.0.1:{port}/" in output
    assert "auth: basic auth and bearer token" in output
    assert "FLOWER_BASIC_AUTH is not read (Flower's variable); set " \
           "CELERIAC_DASHBOARD_BASIC_AUTH instead" in output
    assert '"GET /api/tasks HTTP/1.1" 401' in output  # request lines are logged...
    assert PASSWORD not in output and TOKEN not in output  # ...never a credential


def test_tls_with_certfile_and_keyfile(redis_project: Path) -> None:
    import shutil

    import httpx

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the test makes its certificate with it")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=redis_project, check=True, capture_output=True, timeout=60)
    port = free_port()
    log = redis_project / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command(redis_project, "dashboard", "--port", str(port), "--certfile",
                    "cert.pem", "--keyfile", "key.pem", "--db", "history.sqlite3"),
            cwd=redis_project, stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, CELERIAC_DASHBOARD_TOKEN=TOKEN, PYTHONUNBUFFERED="1"))
    base = f"https://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthcheck", verify=False, timeout=2).text == "OK"
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_until(healthy, 60) and proc.poll() is None, log.read_text()
        page = httpx.get(f"{base}/", verify=False, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and "secure" in page.headers["set-cookie"].lower()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    assert f"celeriac dashboard on https://127.0.0.1:{port}/" in log.read_text()
