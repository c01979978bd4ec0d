"""The command line as a user meets it: ``result`` prints what Celery prints, ``call``
without ``-A`` says which store it uses, and an app that fails to import shows where."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import require

from celeriac import Celery
from celeriac.cli.main import cli


def celeriac(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def boom_traceback() -> tuple[ValueError, str]:
    import traceback

    try:
        raise ValueError("boom")
    except ValueError as exc:
        return exc, traceback.format_exc()


# -- result ----------------------------------------------------------------------------
VALUES: list[tuple[str, Any]] = [
    ("int", 5), ("text", "hello"), ("dict", {"a": 1, "b": [1, 2]}), ("list", [1, "x"]),
    ("none", None), ("float", 2.5), ("bool", True),
]


def stored_results(app: Celery, prefix: str) -> dict[str, str]:
    """Store each value of ``VALUES`` and one failure; returns {kind: task id}."""
    ids = {kind: f"{prefix}-{kind}" for kind, _ in VALUES}
    for kind, value in VALUES:
        app.backend.store_result(ids[kind], value, "SUCCESS")
    exc, tb = boom_traceback()
    ids["failure"] = f"{prefix}-failure"
    app.backend.store_result(ids["failure"], exc, "FAILURE", traceback=tb)
    return ids


def test_result_prints_just_the_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"
    app = Celery("resproj", broker=url, set_as_current=False)
    ids = stored_results(app, "r")
    expected = {"int": "5\n", "text": "hello\n", "dict": "{'a': 1, 'b': [1, 2]}\n",
                "list": "[1, 'x']\n", "none": "\n", "float": "2.5\n", "bool": "True\n"}
    # The command in this process (click's runner), on the app object itself.
    runner = CliRunner()
    for kind, out in expected.items():
        for extra, want in (([], out), (["--traceback"], "\n")):  # no traceback: None
            done = runner.invoke(cli, ["-b", url, "result", *extra, ids[kind]],
                                 obj=None, catch_exceptions=False)
            assert (done.exit_code, done.stdout) == (0, want), (kind, extra, done.output)
    app.close()

    # The failure through the real program.
    (tmp_path / "resproj.py").write_text(
        f"from celeriac import Celery\napp = Celery('resproj', broker={url!r})\n")
    failed = celeriac(tmp_path, "-A", "resproj", "result", ids["failure"])
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.rstrip().endswith("ValueError: boom")
    assert "Traceback (most recent call last)" in failed.stderr
    traced = celeriac(tmp_path, "-A", "resproj", "result", "--traceback", ids["failure"])
    assert traced.returncode == 0
    assert traced.stdout.startswith("Traceback (most recent call last)")
    assert traced.stdout.endswith("ValueError: boom\n\n")  # the traceback, then echo's newline


def test_result_waits_with_a_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'celeriac.sqlite3'}"
    (tmp_path / "resproj.py").write_text(
        f"from celeriac import Celery\napp = Celery('resproj', broker={url!r})\n")
    done = celeriac(tmp_path, "-A", "resproj", "result", "--timeout", "0.2", "never-sent")
    assert done.returncode == 1 and "no result for never-sent" in done.stderr
    assert "PENDING" in done.stderr


@pytest.mark.redis
def test_result_output_is_celerys_byte_for_byte(tmp_path: Path, redis_server: str) -> None:
    """Both programs read the same Redis results; they must print the same thing."""
    pytest.importorskip("celery")
    url = f"{redis_server}/13"
    (tmp_path / "resproj.py").write_text(
        f"from celeriac import Celery\napp = Celery('resproj', broker={url!r}, backend={url!r})\n")
    (tmp_path / "celproj.py").write_text(
        f"from celery import Celery\napp = Celery('celproj', broker={url!r}, backend={url!r})\n")
    app = Celery("resproj", broker=url, backend=url, set_as_current=False)
    ids = stored_results(app, f"cli-{uuid.uuid4().hex[:8]}")
    app.close()
    for kind in ("int", "text", "dict", "none", "failure"):
        task_id = ids[kind]
        for extra in ([], ["--traceback"]):
            ours = celeriac(tmp_path, "-A", "resproj", "result", *extra, task_id)
            theirs = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "celproj", "result", *extra, task_id],
                cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert ours.returncode == theirs.returncode, (kind, extra, ours.stderr,
                                                          theirs.stderr)
            assert ours.stdout == theirs.stdout, (kind, extra)
            if theirs.returncode:  # Celery re-raises the task's error: its last line
                assert (ours.stderr.strip().splitlines()[-1]
                        == theirs.stderr.strip().splitlines()[-1])


# -- no -A -------------------------------------------------------------------------------
def test_call_without_app_says_which_store_it_uses(tmp_path: Path) -> None:
    first = celeriac(tmp_path, "call", "proj.add", "-a", "[1, 2]")
    assert first.returncode == 0, first.stderr
    store = tmp_path / "celeriac.sqlite3"
    (note,) = first.stderr.splitlines()
    assert str(store) in note and "new file" in note and "-A" in note
    assert len(first.stdout.split()) == 1  # stdout is the task id alone, for scripts
    again = celeriac(tmp_path, "call", "proj.add", "-a", "[1, 2]")
    assert "existing file" in again.stderr
    # A broker chosen on the command line is no surprise: nothing said.
    chosen = celeriac(tmp_path, "-b", f"sqlite:///{tmp_path / 'other.db'}", "call", "proj.add")
    assert chosen.returncode == 0 and chosen.stderr == ""


# -- -A that fails to load -----------------------------------------------------------------
def test_import_error_inside_the_app_module_shows_where(tmp_path: Path) -> None:
    (tmp_path / "badproj.py").write_text(
        "from celeriac import Celery\n"
        "import no_such_dependency_xyz\n"
        "app = Celery('badproj')\n")
    done = celeriac(tmp_path, "-A", "badproj", "call", "x")
    assert done.returncode == 2
    err = done.stderr
    assert "cannot load app 'badproj'" in err
    assert f'File "{tmp_path / "badproj.py"}", line 2, in <module>' in err
    assert "import no_such_dependency_xyz" in err
    assert err.rstrip().endswith("ModuleNotFoundError: No module named 'no_such_dependency_xyz'")
    # only the user's frames: none of celeriac's or the import machinery's
    assert "celeriac/cli" not in err and "importlib" not in err


def test_other_errors_inside_the_app_module_show_where(tmp_path: Path) -> None:
    (tmp_path / "typoproj.py").write_text(
        "from celeriac import Celery\n"
        "app = Celery('typoproj')\n"
        "app.conf.update(brocker_url=undefined_name)\n")
    done = celeriac(tmp_path, "-A", "typoproj", "call", "x")
    assert done.returncode == 2
    assert 'typoproj.py", line 3, in <module>' in done.stderr
    assert "NameError: name 'undefined_name' is not defined" in done.stderr


def test_a_missing_module_or_app_needs_no_traceback(tmp_path: Path) -> None:
    missing = celeriac(tmp_path, "-A", "not_here_at_all", "call", "x")
    assert missing.returncode == 2
    assert "No module named 'not_here_at_all'" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "noapp.py").write_text("x = 1\n")
    no_app = celeriac(tmp_path, "-A", "noapp", "call", "x")
    assert no_app.returncode == 2 and "has no Celery app" in no_app.stderr
    assert "Traceback" not in no_app.stderr


def test_cli_errors_mask_passwords(tmp_path: Path) -> None:
    require("redis-py", _has_redis())
    # An option celeriac refuses, with the URL's password in the configuration.
    (tmp_path / "pwproj.py").write_text(
        "from celeriac import Celery\n"
        "app = Celery('pwproj', broker='redis://:hunter2-secret@127.0.0.1:1/0')\n"
        "app.conf.broker_transport_options = {'delayed_delivery': 'hunter2-secret'}\n")
    done = celeriac(tmp_path, "-A", "pwproj", "worker", "-c", "1")
    assert done.returncode != 0
    assert "hunter2-secret" not in done.stdout + done.stderr


def _has_redis() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return True
