"""A real Django project, generated here, with a worker and beat started through the CLI.

The project is the layout Celery's Django guide gives (``proj/celery.py`` configured from
``django.conf:settings`` with the ``CELERY`` namespace, ``autodiscover_tasks()``, an app
``polls`` with ``@shared_task``s that use the ORM), on SQLite and on PostgreSQL (a
schema of its own in the shared ``test`` database). Django itself runs only in the
subprocesses (``manage.py`` and a client script), never in the pytest process, so no
other test sees its settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import support
from celeriac import Celery
from celeriac.contrib.testing import WorkerProcess

pytest.importorskip("django")

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "django.md"


def doc_files() -> dict[str, str]:
    """The files docs/django.md shows (code blocks whose first line is ``# <path>``):
    the project tested here is the documented one."""
    blocks = re.findall(r"```python\n# ([\w/]+\.py)\n(.*?)```", DOCS.read_text(), re.S)
    return {path: body for path, body in blocks}



SETTINGS_PY = """
import json
import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = os.environ["TEST_DJANGO_USE_TZ"] == "1"  # both ways: Django < 5 defaulted to off
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "proj.urls"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages",
    "polls.apps.PollsConfig",
    "celeriac.contrib.django.results", "celeriac.contrib.django.beat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages"]},
}]
DATABASES = {"default": json.loads(os.environ["TEST_DJANGO_DATABASE"])}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

CELERY_BROKER_URL = "sqlite:///" + os.path.join(BASE_DIR, "broker.sqlite3")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = os.environ["TEST_DJANGO_QUEUE"]
# beat -S django copies these into the database when it starts (never due in a test)
from celeriac.schedules import crontab

CELERY_BEAT_SCHEDULE = {
    "hourly": {"task": "polls.tasks.create_question", "schedule": 3600.0,
               "args": ["hourly"], "options": {"queue": "hourly-" + CELERY_TASK_DEFAULT_QUEUE}},
    "yearly": {"task": "polls.tasks.create_question", "args": ["yearly"],
               "schedule": crontab(minute=0, hour=3, day_of_month=1, month_of_year=1)},
}
"""

URLS_PY = """
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""

POLLS_APPS_PY = """
from django.apps import AppConfig


class PollsConfig(AppConfig):
    name = "polls"
"""


POLLS_MIGRATION = """
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [migrations.CreateModel(name="Question", fields=[
        ("id", models.AutoField(primary_key=True, serialize=False)),
        ("text", models.CharField(max_length=200))])]
"""


# beside the documented tasks: which database session a task ran on, a chord's body
TEST_TASKS = """

@shared_task
def total(values):
    return sum(values)

@shared_task
def database_session():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
"""

MANAGE_PY = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

# Runs in the project: sets Django up, then the code given on stdin, which fills `out`
CLIENT_PY = """
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
import django

django.setup()
out = {}
exec(sys.stdin.read())
print("RESULT " + json.dumps(out, default=str))
"""


def write_project(root: Path, settings: str = SETTINGS_PY) -> Path:
    files = doc_files()
    files["polls/tasks.py"] += TEST_TASKS
    files.update({
        "proj/settings.py": settings, "proj/urls.py": URLS_PY,
        "polls/__init__.py": "", "polls/apps.py": POLLS_APPS_PY,
        "polls/migrations/__init__.py": "", "polls/migrations/0001_initial.py": POLLS_MIGRATION,
        "manage.py": MANAGE_PY, "client.py": CLIENT_PY,
    })
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


class Project:
    """A generated project, its environment, and ways to run Python in it."""

    def __init__(self, root: Path, database: dict[str, Any], use_tz: bool = True) -> None:
        self.root = root
        self.queue = f"dj-{uuid.uuid4().hex[:10]}"
        self.env = dict(os.environ, TEST_DJANGO_DATABASE=json.dumps(database),
                        TEST_DJANGO_QUEUE=self.queue, PYTHONPATH=str(root),
                        TEST_DJANGO_USE_TZ="1" if use_tz else "0")
        self.env.pop("DJANGO_SETTINGS_MODULE", None)

    def run(self, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=self.root, env=self.env,
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def client(self, code: str) -> dict[str, Any]:
        """Run ``code`` in a set-up Django process; returns what it put in ``out``."""
        done = self.run("client.py", stdin=textwrap.dedent(code))
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]
        raise AssertionError(f"client failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def migrate(self) -> None:
        done = self.run("manage.py", "migrate", "--noinput", "-v", "0")
        assert done.returncode == 0, done.stdout + done.stderr

    def broker(self) -> Celery:
        """An app on the project's broker, outside Django (to count messages)."""
        return Celery("counter", broker=f"sqlite:///{self.root / 'broker.sqlite3'}",
                      set_as_current=False)

    def worker(self, *args: str) -> WorkerProcess:
        return WorkerProcess("proj", cwd=self.root, args=list(args), env={
            k: self.env[k] for k in ("TEST_DJANGO_DATABASE", "TEST_DJANGO_QUEUE",
                                     "TEST_DJANGO_USE_TZ", "PYTHONPATH")})



def _postgresql_schema() -> Iterator[dict[str, Any]]:
    support.require("PostgreSQL on 127.0.0.1:5432", support.postgresql_answers())
    psycopg = pytest.importorskip("psycopg")
    schema = f"dj_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield {"ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
               "HOST": "127.0.0.1", "PORT": "5432",
               "OPTIONS": {"options": f"-c search_path={schema}"}}
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# SQLite with the threads pool, PostgreSQL with prefork (connections must not cross a fork)
@pytest.fixture(scope="module", params=[("sqlite", "threads"), ("postgresql", "prefork")],
                ids=["sqlite-threads", "postgresql-prefork"])
def project(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    kind, pool = request.param
    root = write_project(tmp_path_factory.mktemp(f"django-{kind}"))
    if kind == "sqlite":
        databases: Iterator[dict[str, Any]] = iter(
            [{"ENGINE": "django.db.backends.sqlite3", "NAME": str(root / "db.sqlite3")}])
    else:
        databases = _postgresql_schema()
    database = next(databases)
    try:
        # SQLite with naive datetimes (USE_TZ = False), PostgreSQL with aware ones
        proj = Project(root, database, use_tz=kind != "sqlite")
        proj.migrate()
        with proj.worker("-P", pool, "-c", "2") as worker:
            proj.worker_process = worker  # type: ignore[attr-defined]
            yield proj
    finally:
        next(databases, None)


def test_orm_tasks_run_and_results_are_rows(project: Project) -> None:
    out = project.client("""
        from celeriac.contrib.django.results.models import TaskResult
        from polls.models import Question
        from polls.tasks import create_question, missing_question, question_text

        ids = [create_question.delay(f"question {i}").get(timeout=30) for i in range(4)]
        out["texts"] = [question_text.delay(i).get(timeout=30) for i in ids]
        out["in_db"] = sorted(Question.objects.values_list("text", flat=True))
        failed = missing_question.delay(10**6)
        try:
            failed.get(timeout=30)
        except Question.DoesNotExist as exc:
            out["raised"] = type(exc).__name__
        except Exception as exc:
            out["raised"] = f"other: {type(exc).__name__}: {exc}"
        row = TaskResult.objects.get(task_id=failed.id)
        out["failed_row"] = [row.status, row.task_name, row.traceback or "", row.worker]
        # what beat's daily celery.backend_cleanup does, for a row older than a day
        from datetime import timedelta

        from django.utils import timezone

        TaskResult.objects.filter(task_id=failed.id).update(
            date_done=timezone.now() - timedelta(days=2))
        out["cleaned"] = [missing_question.app.backend.cleanup() >= 1,
                          TaskResult.objects.filter(task_id=failed.id).exists(),
                          TaskResult.objects.filter(task_name__isnull=False).exists()]
        # sent as beat -S django sends a periodic task: its name in a header
        r = create_question.apply_async(("read back",),
                                        headers={"periodic_task_name": "nightly"})
        r.get(timeout=30)
        row = TaskResult.objects.get(task_id=r.id)
        out["ok_row"] = [row.status, row.result, row.task_args, row.content_type,
                         row.date_done is not None, row.periodic_task_name]
        out["state"] = r.state
        from celeriac import group
        from celeriac.contrib.django.results.models import GroupResult as GroupRow
        from celeriac.result import GroupResult

        saved = group(create_question.s(f"in group {i}") for i in range(3))().save()
        saved.get(timeout=30)
        restored = GroupResult.restore(saved.id, app=create_question.app)
        out["group"] = [[r.id for r in restored.results] == [r.id for r in saved.results],
                        GroupRow.objects.filter(group_id=saved.id).count()]
    """)
    assert out["texts"] == [f"question {i}" for i in range(4)]
    assert out["in_db"] == [f"question {i}" for i in range(4)]
    assert out["raised"] == "DoesNotExist"
    status, task_name, traceback, worker = out["failed_row"]
    assert status == "FAILURE" and task_name == "polls.tasks.missing_question"
    assert "DoesNotExist" in traceback and worker
    assert out["cleaned"] == [True, False, True]  # the old row only
    status, result, task_args, content_type, done, periodic = out["ok_row"]
    assert status == "SUCCESS" and json.loads(result) > 0 and done and periodic == "nightly"
    assert "read back" in task_args and content_type == "application/json"
    assert out["state"] == "SUCCESS"
    assert out["group"] == [True, 1]


def test_chords_are_counted_in_the_database(project: Project) -> None:
    out = project.client("""
        from celeriac import chord
        from celeriac.contrib.django.results.models import ChordCounter, ChordPart
        from polls.tasks import create_question, total

        results = [chord(create_question.s(f"chord {n}.{i}") for i in range(4))(total.s())
                   for n in range(3)]
        sums = [r.get(timeout=30) for r in results]
        out["sums_positive"] = all(s > 0 for s in sums)
        out["distinct"] = len(set(sums)) == 3
        out["left"] = [ChordCounter.objects.count(), ChordPart.objects.count()]
    """)
    assert out == {"sums_positive": True, "distinct": True, "left": [0, 0]}


def test_django_cache_results_with_the_solo_pool(tmp_path: Path) -> None:
    # Django's file cache: shared by the worker and the client, private to this test
    settings = SETTINGS_PY.replace('CELERY_RESULT_BACKEND = "django-db"', textwrap.dedent(f"""
        CELERY_RESULT_BACKEND = "django-cache"
        CELERY_CACHE_BACKEND = "results"
        CACHES = {{"default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
                  "results": {{"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                              "LOCATION": {str(tmp_path / "cache")!r}}}}}
    """))
    proj = Project(write_project(tmp_path / "proj", settings=settings),
                   {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")})
    proj.migrate()
    with proj.worker("-P", "solo"):
        out = proj.client("""
            from django.core.cache import caches

            from celeriac.contrib.django.results.models import TaskResult
            from polls.tasks import create_question, missing_question, question_text

            r = create_question.delay("cached")
            out["text"] = question_text.delay(r.get(timeout=30)).get(timeout=30)
            failed = missing_question.delay(-1)
            failed.get(timeout=30, propagate=False)
            out["failed"] = [failed.state, "DoesNotExist" in (failed.traceback or "")]
            out["in_cache"] = caches["results"].get(f"celery-task-meta-{r.id}") is not None
            out["rows"] = TaskResult.objects.count()
        """)
    assert out == {"text": "cached", "failed": ["FAILURE", True], "in_cache": True,
                   "rows": 0}


def test_on_commit_sends_only_after_the_commit(project: Project) -> None:
    held = f"held-{uuid.uuid4().hex[:8]}"
    out = project.client(f"""
        import time

        from django.db import transaction

        from celeriac.contrib.django.results.models import TaskResult
        from polls.models import Question
        from polls.tasks import create_question, question_text

        broker = create_question.app.connect_broker()
        with transaction.atomic():
            create_question.apply_async_on_commit(("held",), queue={held!r})
            out["inside"] = broker.size({held!r})
        out["after_commit"] = broker.size({held!r})
        try:
            with transaction.atomic():
                create_question.apply_async_on_commit(("rolled back",), queue={held!r})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        out["after_rollback"] = broker.size({held!r})
        # the point of it: the worker finds the row the sender committed
        with transaction.atomic():
            question = Question.objects.create(text="committed first")
            out["returned"] = question_text.delay_on_commit(question.id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = TaskResult.objects.filter(task_name="polls.tasks.question_text",
                                            task_args__contains=str(question.id)).first()
            if row is not None and row.status in ("SUCCESS", "FAILURE"):
                out["row"] = [row.status, row.result]
                break
            time.sleep(0.05)
    """)
    assert (out["inside"], out["after_commit"], out["after_rollback"]) == (0, 1, 1)
    assert out["returned"] is None
    assert out["row"] == ["SUCCESS", '"committed first"']


def test_admin_lists_results_with_state_and_traceback(project: Project) -> None:
    name = f"admin-{uuid.uuid4().hex[:8]}"
    out = project.client(f"""
        from django.contrib.auth.models import User
        from django.test import Client

        from celeriac.contrib.django.results.models import TaskResult
        from polls.tasks import create_question, missing_question

        failed = missing_question.delay(-1)
        failed.get(timeout=30, propagate=False)
        done = create_question.delay("shown in the admin")
        done.get(timeout=30)
        client = Client()
        client.force_login(User.objects.create_superuser({name!r}, "a@example.com", "pw"))
        page = client.get("/admin/celeriac_results/taskresult/?status=FAILURE")
        text = page.content.decode()
        out["list"] = [page.status_code, failed.id in text, done.id in text]
        row = TaskResult.objects.get(task_id=failed.id)
        detail = client.get(f"/admin/celeriac_results/taskresult/{{row.pk}}/change/")
        text = detail.content.decode()
        out["detail"] = [detail.status_code, "FAILURE" in text, "DoesNotExist" in text,
                         "polls.tasks.missing_question" in text]
        out["beat_pages"] = [client.get(f"/admin/celeriac_beat/{{m}}/").status_code
                             for m in ("periodictask", "intervalschedule", "crontabschedule",
                                       "solarschedule", "clockedschedule")]
    """)
    assert out["list"] == [200, True, False]  # filtered by state
    assert out["detail"] == [200, True, True, True]
    assert out["beat_pages"] == [200] * 5


def _beat(project: Project) -> subprocess.Popen[bytes]:
    log = open(project.root / f"beat-{uuid.uuid4().hex[:6]}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "proj", "beat", "-S", "django",
         "--max-interval", "0.2", "-l", "INFO"], cwd=project.root, env=project.env,
        stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("project", [("postgresql", "prefork")], indirect=True,
                         ids=["postgresql-prefork"])
def test_tasks_get_a_new_session_after_the_server_ended_theirs(project: Project) -> None:
    # A database restart (or a proxy's idle cut) ends the worker's sessions between
    # tasks; the next tasks must not fail on the dead connection.
    out = project.client("""
        import psycopg

        from polls.tasks import create_question, database_session

        before = {database_session.delay().get(timeout=30) for _ in range(6)}
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test",
                             autocommit=True) as admin:
            for pid in before:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        out["ids"] = [create_question.delay(f"after {i}").get(timeout=30) > 0
                      for i in range(6)]
    """)
    assert out["ids"] == [True] * 6


# one database is enough for beat: the ORM's two are covered by the tests above
@pytest.mark.parametrize("project", [("sqlite", "threads")], indirect=True,
                         ids=["sqlite-threads"])
def test_beat_reads_periodic_tasks_edited_while_it_runs(project: Project) -> None:
    tag = uuid.uuid4().hex[:8]
    every, once, third = (f"{name}-{tag}" for name in ("every", "once", "third"))
    beat = _beat(project)
    try:
        # added through the admin's form, as a user would, while beat runs
        added = project.client(f"""
            from django.contrib.auth.models import User
            from django.test import Client

            from celeriac.contrib.django.beat.models import IntervalSchedule, PeriodicTask

            second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
            client = Client()
            client.force_login(User.objects.create_superuser("beat-{tag}", "", "pw"))
            page = client.post("/admin/celeriac_beat/periodictask/add/", {{
                "name": {every!r}, "task": "polls.tasks.create_question", "enabled": "on",
                "interval": second.pk, "args": '["from beat"]', "kwargs": "{{}}",
                "queue": {every!r}, "headers": "{{}}", "description": "",
            }})
            out["status"] = page.status_code
            out["saved"] = PeriodicTask.objects.filter(name={every!r}).count()
            # beat_schedule was copied into the database at start
            hourly = PeriodicTask.objects.get(name="hourly")
            yearly = PeriodicTask.objects.get(name="yearly")
            out["seeded"] = [hourly.interval.every, hourly.interval.period, hourly.args,
                             hourly.queue is not None, str(yearly.crontab)]
        """)
        seeded = added.pop("seeded")
        assert added == {"status": 302, "saved": 1}
        assert seeded == [3600, "seconds", '["hourly"]', True,
                          "0 3 1 1 * (m/h/dM/MY/d) UTC"]  # the app's zone
        counter = project.broker()
        broker = counter.connect_broker()
        assert support.wait_until(lambda: broker.size(every) >= 1, timeout=30)
        # disabled, and two that run once: a one-off interval and a clocked time; once
        # they ran, beat has read the change, so `every` is counted then; a third entry
        # added after that shows beat still reading (and `every` not sent meanwhile)
        done = project.client(f"""
            import time

            from django.utils import timezone

            from celeriac.contrib.django.beat.models import (ClockedSchedule,
                                                             IntervalSchedule, PeriodicTask)
            from proj import celery_app

            task = PeriodicTask.objects.get(name={every!r})
            task.enabled = False
            task.save()
            second = IntervalSchedule.objects.get(every=1, period="seconds")
            PeriodicTask.objects.create(name={once!r}, task="polls.tasks.create_question",
                                        interval=second, one_off=True, queue={once!r})
            now = ClockedSchedule.objects.create(clocked_time=timezone.now())
            PeriodicTask.objects.create(name={once!r} + "-clocked", clocked=now,
                                        task="polls.tasks.create_question", queue={once!r})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and PeriodicTask.objects.filter(
                    name__startswith={once!r}, enabled=True).exists():
                time.sleep(0.05)
            out["runs"] = sorted(PeriodicTask.objects.filter(
                name__startswith={once!r}).values_list("total_run_count", "enabled"))
            out["sent_before"] = celery_app.connect_broker().size({every!r})
            PeriodicTask.objects.create(name={third!r}, task="polls.tasks.create_question",
                                        queue={third!r}, interval=second)
        """)
        assert done["runs"] == [[1, False], [1, False]]
        sent_before = done["sent_before"]
        assert support.wait_until(lambda: broker.size(third) >= 1, timeout=30)
        assert broker.size(every) == sent_before  # disabled: not sent again
        assert broker.size(once) == 2  # each of the two once only
        broker.close()
    finally:
        beat.terminate()
        beat.wait(30)


@pytest.mark.parametrize("settings, named", [
    ("import no_such_module_in_settings\n", "no_such_module_in_settings"),
    ('SECRET_KEY = "x"\nINSTALLED_APPS = ["no_such_django_app"]\n', "no_such_django_app"),
], ids=["settings-import-error", "installed-app-missing"])
def test_worker_refuses_to_start_when_django_cannot_be_set_up(
        tmp_path: Path, settings: str, named: str) -> None:
    proj = Project(write_project(tmp_path, settings=settings), {})
    done = proj.run("-m", "celeriac", "-A", "proj", "worker", "-P", "solo", timeout=60)
    assert done.returncode != 0
    first = next(line for line in done.stderr.splitlines() if line.startswith("Error:"))
    assert "'proj.settings'" in first and named in first
