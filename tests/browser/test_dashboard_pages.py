"""The dashboard's pages in a real browser: headless Chromium (Debian's ``chromium`` and
``chromedriver``) driven by Selenium, against a real worker and real dashboard processes
on Redis db 5, with docs/dashboard.md's example project.

The pages are loaded once and then watched: a task sent after the tasks page loaded
must appear without a reload, its page must show its arguments and result, and retry
must show a new run that succeeds. A second dashboard, ``--read-only`` under a url
prefix on the same history store, must show every action disabled with the reason.

``CELERIAC_DASHBOARD_SCREENSHOTS=docs/img`` also saves the main pages there at 1280x800.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import answers, free_port, load_proj, require, wait_until  # noqa: E402

from celeriac.contrib.testing import WorkerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "dashboard.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", re.S)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REQUIRE_SERVICES = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1"
REDIS_URL = "redis://127.0.0.1:6379/5"
USER, PASSWORD = "admin", "s3cret-pages"
WAIT = 60  # seconds: a loaded 2-core machine starts a browser, a worker and two servers

# What the browser tests add to the docs' project: their own queues, exchanges and node
# names on the shared Redis (so no other test's worker shows up), a queue no worker
# consumes (the queues page counts its messages) and a task routed to it.
EXTRA = '''
app.conf.task_default_queue = "{queue}"
app.conf.broker_dead_letter_queue = "{queue}.dead"
app.conf.event_exchange = "ev-{tag}"
app.conf.control_exchange = "ctl-{tag}"
app.conf.worker_heartbeat_interval = 0.5
# results of its own: a fresh history store backfills a week of results from the backend,
# and earlier runs' tasks on this db must not show up in this run's searches
app.conf.result_backend_transport_options = {{"global_keyprefix": "pages-{tag}:"}}
app.conf.task_routes = {{"proj.parked": {{"queue": "{queue}-parked"}}}}
app.conf.beat_schedule = {{"tidy-up": {{"task": "proj.add", "schedule": 30.0, "args": (1, 2)}}}}


@app.task
def parked(n):
    return n


@app.task
def resize(width, height):  # the screenshots' second kind of task, slower and varied
    import random
    import time

    time.sleep(random.uniform(0.005, 0.3))
    return [width // 2, height // 2]


@app.task
def charge(order, cents):  # and a third, which sometimes fails
    if order % 4 == 0:
        raise ValueError(f"card declined for order {{order}}")
    return {{"order": order, "charged": cents}}
'''


def _require_browser() -> None:
    present = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
    if REQUIRE_SERVICES:
        assert present, f"the browser tests need {CHROMIUM} and {CHROMEDRIVER}"
    elif not present:
        pytest.skip("Chromium or chromedriver is not installed")
    pytest.importorskip("selenium") if not REQUIRE_SERVICES else None


class Dashboard:
    """``celeriac -A proj dashboard`` as a subprocess, ready once /healthcheck says OK."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.log = open(cwd / f"dashboard-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", "proj", "dashboard",
             "--port", str(self.port), *args],
            cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.path = Path(self.log.name)

    def wait_ready(self, prefix: str = "") -> None:
        import urllib.request

        def up() -> bool:
            assert self.proc.poll() is None, f"dashboard exited:\n{self.path.read_text()}"
            try:
                url = f"http://127.0.0.1:{self.port}{prefix}/healthcheck"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        assert wait_until(up, WAIT), f"dashboard not ready:\n{self.path.read_text()}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The docs' project with a worker, a dashboard with a user, a read-only one."""
    _require_browser()
    pytest.importorskip("redis") if not REQUIRE_SERVICES else None
    require("Redis is not reachable on its standard loopback port",
            answers(6379, b"PING\r\n", b"+PONG"))
    where = tmp_path_factory.mktemp("dashboard-pages")
    files = dict(FILE_BLOCK.findall(DOC.read_text()))
    tag = uuid.uuid4().hex[:10]
    queue = f"q-{tag}"
    source = files["proj.py"].replace("redis://127.0.0.1:6379/0", REDIS_URL)
    (where / "proj.py").write_text(source + EXTRA.format(queue=queue, tag=tag))
    node = f"pages-{tag}@%h"
    worker = WorkerProcess("proj", cwd=where, args=["-c", "2", "-n", node, "-P", "threads"],
                           ready_timeout=WAIT)
    db = where / "history.sqlite3"
    servers: list[Dashboard] = []
    proj = None
    try:
        worker.start()
        main = Dashboard(where, "--basic-auth", f"{USER}:{PASSWORD}", "--db", str(db))
        servers.append(main)
        readonly = Dashboard(where, "--basic-auth", f"{USER}:{PASSWORD}", "--db", str(db),
                             "--read-only", "--url-prefix", "/ro")
        servers.append(readonly)
        main.wait_ready()
        readonly.wait_ready("/ro")
        sys.modules.pop("proj", None)
        proj = load_proj(where)
        yield {"proj": proj, "where": where, "queue": queue,
               "node": node.replace("%h", _hostname()),
               "url": f"http://127.0.0.1:{main.port}/",
               "readonly_url": f"http://127.0.0.1:{readonly.port}/ro/"}
    finally:
        if proj is not None:
            proj.app.close()
        sys.modules.pop("proj", None)
        for server in reversed(servers):
            server.stop()
        if worker.proc is not None:
            worker.stop()


def _hostname() -> str:
    import socket

    return socket.gethostname()


@pytest.fixture(scope="module")
def browser(cluster: dict[str, Any]) -> Iterator[Any]:
    """Headless Chromium sending the user's basic-auth header with every request."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": f"Basic {credentials}"}})
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, predicate: Any, what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a redraw may replace an element between finding and reading it, or remove it for
    # a moment: looked for again
    return WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException,
                                                           IndexError]) \
        .until(predicate, message=what)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _click(driver: Any, selector: str) -> None:
    """Click the first match, finding it again if a redraw replaced it meanwhile (a
    stale element is retried by ``_wait``)."""
    _wait(driver, lambda d: _css(d, selector)[0].click() or True, f"a click on {selector}")


def _text(driver: Any, selector: str) -> str:
    found = _css(driver, selector)
    return found[0].text if found else ""


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: _css(d, "main h1"), f"the page {url} to draw")


def _no_errors_shown(driver: Any) -> None:
    notes = [n.text for n in _css(driver, ".notice.error, .error-text")]
    assert not notes, notes


def test_workers_page_lists_the_worker_online(cluster: dict[str, Any], browser: Any) -> None:
    _open(browser, cluster["url"])
    row = f'tr[data-key="{cluster["node"]}"]'
    _wait(browser, lambda d: "online" in _text(d, row), "the worker's row, online")
    assert "thread" in _text(browser, row)  # its pool (-P threads)
    assert cluster["queue"] in _text(browser, row)
    _wait(browser, lambda d: _text(d, "#live") == "live", "the live stream to open")
    _no_errors_shown(browser)


def test_a_task_sent_after_the_page_loaded_appears_live(cluster: dict[str, Any],
                                                        browser: Any) -> None:
    _open(browser, cluster["url"] + "tasks")
    _wait(browser, lambda d: _text(d, "#live") == "live", "the live stream to open")
    _wait(browser, lambda d: _css(d, "main table"), "the tasks table")
    # A reload would drop this mark: the row must come from the stream.
    browser.execute_script("window.loadedOnce = true")
    result = cluster["proj"].add.delay(4100, 5)
    row = f'tr[data-key="{result.id}"]'
    _wait(browser, lambda d: "SUCCESS" in _text(d, row), "the new task's row, succeeded")
    assert "4100" in _text(browser, row)
    assert browser.execute_script("return window.loadedOnce === true")
    cluster["sent"] = result.id


def test_tasks_filter_search_and_sort(cluster: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    proj = cluster["proj"]
    failed = proj.charge.delay(8, 250)  # order 8: declined
    found = proj.add.delay(31337, 1)
    failed.get(timeout=WAIT, propagate=False)
    found.get(timeout=WAIT)
    _open(browser, cluster["url"] + "tasks")
    _wait(browser, lambda d: _css(d, f'tr[data-key="{found.id}"]') or d.refresh(), "the task")

    Select(_css(browser, "#filter-state")[0]).select_by_value("FAILURE")
    _wait(browser, lambda d: "state=FAILURE" in d.current_url, "the filter in the address")
    _wait(browser, lambda d: _css(d, f'tr[data-key="{failed.id}"]'), "the failed task listed")

    def states(d: Any) -> set[str]:  # read again if a live redraw is under way
        return {r.text for r in _css(d, "tbody tr[data-key] td:nth-child(3)")}

    _wait(browser, lambda d: states(d) == {"FAILURE"}, "only failed tasks listed")

    Select(_css(browser, "#filter-state")[0]).select_by_value("")
    search = _css(browser, "#filter-search")[0]
    search.send_keys("31337")
    search.submit()
    _wait(browser, lambda d: [r.get_attribute("data-key") for r in _css(d, "tbody tr[data-key]")]
          == [found.id], "only the task whose args hold 31337")

    search.clear()
    search.submit()
    _click(browser, 'button[data-sort="runtime"]')
    header = 'th[aria-sort="ascending"] button[data-sort="runtime"]'
    _wait(browser, lambda d: _css(d, header), "the list sorted by runtime")
    assert "sort_by=runtime" in browser.current_url
    _no_errors_shown(browser)


def test_task_page_shows_args_result_and_retry_runs_it_again(cluster: dict[str, Any],
                                                             browser: Any) -> None:
    task_id = cluster.get("sent") or cluster["proj"].add.delay(4100, 5).id
    cluster["proj"].app.AsyncResult(task_id).get(timeout=WAIT)
    _open(browser, cluster["url"] + f"task/{task_id}")
    _wait(browser, lambda d: _text(d, "#task-result") == "4105", "the task's result")
    assert "4100" in _text(browser, "#task-args")
    assert _text(browser, "#task-uuid") == task_id
    assert "task-succeeded" in _text(browser, "main")
    browser.execute_script("window.loadedOnce = true")
    _click(browser, 'button[data-action="retry"]')
    _wait(browser, lambda d: task_id not in d.current_url, "the page of the new run")
    new_id = browser.current_url.rstrip("/").rsplit("/", 1)[1]
    _wait(browser, lambda d: _text(d, "#task-uuid") == new_id, "the new run's page")
    _wait(browser, lambda d: _text(d, "#task-result") == "4105", "the new run's result")
    assert "SUCCESS" in _text(browser, "main h1")
    assert "4100" in _text(browser, "#task-args")
    assert browser.execute_script("return window.loadedOnce === true")
    assert cluster["proj"].app.AsyncResult(new_id).get(timeout=WAIT) == 4105
    _no_errors_shown(browser)


def test_worker_page_shows_inspect_and_reports_a_refused_action(cluster: dict[str, Any],
                                                                browser: Any) -> None:
    _open(browser, cluster["url"] + f"worker/{cluster['node']}")
    _wait(browser, lambda d: "proj.add" in _text(d, "main"), "the registered tasks")
    assert cluster["queue"] in _text(browser, "main")
    # No queue named: the API refuses, and the page says why instead of swallowing it.
    # clicked again until the notice shows: a redraw (inspect's answers arriving) may
    # replace the button as it is clicked; a refused action changes nothing
    _wait(browser, lambda d: "queue" in _text(d, ".notice.error")
          or _css(d, 'button[data-action="add consumer"]')[0].click(), "the API's error shown")


def test_queues_page_shows_a_depth_and_purges(cluster: dict[str, Any], browser: Any) -> None:
    parked = f"{cluster['queue']}-parked"
    for n in range(3):
        cluster["proj"].parked.delay(n)
    _open(browser, cluster["url"] + "queues")
    cell = f'[data-depth="{parked}"]'
    _wait(browser, lambda d: _text(d, cell) == "3", "three messages waiting in the queue")
    row = f'tr[data-key="{parked}"] button[data-action="purge"]'
    _click(browser, row)
    _wait(browser, lambda d: d.switch_to.alert, "the purge confirmation")
    browser.switch_to.alert.accept()
    _wait(browser, lambda d: _text(d, cell) == "0", "the queue purged")
    _no_errors_shown(browser)


def _dead_letter_row(driver: Any, task_id: str) -> Any:
    rows = [r for r in _css(driver, "tr[data-key]") if task_id in r.text]
    return rows[0] if rows else None


def test_queues_page_lists_a_dead_letter_and_deletes_it(cluster: dict[str, Any],
                                                        browser: Any) -> None:
    from selenium.webdriver.common.by import By

    # A task no worker knows is set aside by the worker as a dead letter, with a reason.
    task_id = cluster["proj"].app.send_task("proj.nobody_has_this", args=[1]).id
    _open(browser, cluster["url"] + "queues")
    # The page redraws every 10 s; a reload makes the wait shorter.
    _wait(browser, lambda d: _dead_letter_row(d, task_id) or d.refresh(), "the dead letter")
    row = _dead_letter_row(browser, task_id)
    assert "nobody_has_this" in row.text
    row.find_element(By.CSS_SELECTOR, 'button[data-action="delete"]').click()
    _wait(browser, lambda d: d.switch_to.alert, "the delete confirmation")
    browser.switch_to.alert.accept()
    _wait(browser, lambda d: _dead_letter_row(d, task_id) is None, "the dead letter deleted")
    _no_errors_shown(browser)


def test_plots_page_draws_svg_charts(cluster: dict[str, Any], browser: Any) -> None:
    cluster["proj"].add.delay(1, 1).get(timeout=WAIT)
    _open(browser, cluster["url"] + "plots")
    _wait(browser, lambda d: _css(d, "svg.chart path.series"), "the throughput lines")
    _wait(browser, lambda d: _css(d, "svg.chart rect.bar"), "the runtime histogram's bars")
    _no_errors_shown(browser)


def test_beat_page_lists_the_schedule(cluster: dict[str, Any], browser: Any) -> None:
    _open(browser, cluster["url"] + "beat")
    _wait(browser, lambda d: "tidy-up" in _text(d, "main table"), "the beat entry")
    assert "proj.add" in _text(browser, "main table")
    _no_errors_shown(browser)


def test_read_only_dashboard_disables_actions(cluster: dict[str, Any], browser: Any) -> None:
    task_id = cluster["proj"].add.delay(7, 8).id
    cluster["proj"].app.AsyncResult(task_id).get(timeout=WAIT)
    _open(browser, cluster["readonly_url"] + f"task/{task_id}")
    _wait(browser, lambda d: _text(d, "#task-result") == "15", "the task under the prefix")
    for action in ("retry", "revoke", "terminate"):
        button = _css(browser, f'button[data-action="{action}"]')[0]
        assert not button.is_enabled(), action
    assert "read-only" in _text(browser, ".why")
    _open(browser, cluster["readonly_url"] + f"worker/{cluster['node']}")
    _wait(browser, lambda d: _css(d, 'button[data-action="shut down"]'), "the worker's actions")
    assert all(not b.is_enabled() for b in _css(browser, "main button.btn[data-action]"))


def test_pages_left_give_their_stream_back(cluster: dict[str, Any], browser: Any) -> None:
    # Chromium keeps six connections to a server; a stream left open by each page would
    # stall the seventh page's requests.
    for _ in range(8):
        _open(browser, cluster["url"] + "beat")
    _open(browser, cluster["url"] + "tasks")
    _wait(browser, lambda d: _css(d, "main table tbody tr[data-key]"), "the tasks list")
    _wait(browser, lambda d: _text(d, "#live") == "live", "the live stream to open")


@pytest.mark.skipif(not os.environ.get("CELERIAC_DASHBOARD_SCREENSHOTS"),
                    reason="screenshots only when CELERIAC_DASHBOARD_SCREENSHOTS names a folder")
def test_screenshots(cluster: dict[str, Any], browser: Any) -> None:
    folder = ROOT / os.environ["CELERIAC_DASHBOARD_SCREENSHOTS"]
    folder.mkdir(parents=True, exist_ok=True)
    proj = cluster["proj"]
    sent: list[Any] = []
    # Rounds a few seconds apart, so that the throughput charts have a shape.
    for round_ in range(8):
        sent += [proj.add.delay(i, round_) for i in range(6 + 3 * (round_ % 3))]
        sent += [proj.resize.delay(640 + i, 480) for i in range(4)]
        sent += [proj.charge.delay(round_ * 3 + i, 1999) for i in range(3)]
        time.sleep(4)  # not an assert: spreads the tasks over half a minute
    for result in sent:
        result.get(timeout=WAIT, propagate=False)
    for n in range(5):
        proj.parked.apply_async((n,), priority=n % 3)
    proj.app.send_task("proj.nobody_has_this", args=[42])
    task_id = next(r.id for r in reversed(sent) if r.state == "FAILURE")
    for name, path, ready in [
            ("workers", "", "main table tbody tr[data-key]"),
            ("tasks", "tasks", "main table tbody tr[data-key]"),
            ("task", f"task/{task_id}", "#task-uuid"),
            ("queues", "queues", "main table tbody tr[data-key]"),
            ("plots", "plots?range=900", "svg.chart rect.bar"),
            ("worker", f"worker/{cluster['node']}", "main ul.columns li"),
            ("beat", "beat", "main table tbody tr")]:
        _open(browser, cluster["url"] + path)
        _wait(browser, lambda d: _css(d, ready), f"the {name} page")
        time.sleep(0.5)  # not an assert: lets the charts take their final width
        browser.save_screenshot(str(folder / f"dashboard-{name}.png"))
