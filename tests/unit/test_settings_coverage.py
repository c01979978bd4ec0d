"""Every setting in the table keeps its promise: honoured and tested, or marked ignored.

A setting is honoured when celeriac reads it and does what Celery does with it; its
name must then appear in a test outside ``test_config.py`` and this file (a proxy for
"its effect is tested"). Any other setting carries a one-line reason in
``Setting.ignored``, and setting it warns once with that reason
(``IgnoredSettingWarning``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery, config
from celeriac.config import (
    SETTINGS,
    IgnoredSettingWarning,
    Settings,
    UnknownSettingWarning,
)

TESTS = Path(__file__).resolve().parents[1]

#: Honoured settings whose effect is tested under another name. Keep it short.
TESTED_UNDER_ANOTHER_NAME = {
    # The default of the acks_late task option; the option's effect (acked after the
    # run, redelivered when the worker dies) is tested in tests/fault/test_lost_worker.py
    # and tests/integration/test_worker.py, and consumer.py takes the setting as its
    # default in the same expression.
    "task_acks_late",
    # Its default (1 s) is what tests/integration/test_worker.py's
    # test_a_long_task_does_not_hold_up_the_ones_prefetched_behind_it relies on.
    "worker_prefetch_release_after",
}



def _test_sources() -> dict[Path, str]:
    own = {"test_config.py", Path(__file__).name}
    return {p: p.read_text(encoding="utf-8") for p in sorted(TESTS.rglob("*.py"))
            if p.name not in own}


_SOURCES = _test_sources()


def _named_in_a_test(name: str) -> list[Path]:
    spellings = {name, name.upper(), *SETTINGS[name].old}
    pattern = re.compile(r"\b(?:%s)\b" % "|".join(map(re.escape, sorted(spellings))))
    return [path for path, text in _SOURCES.items() if pattern.search(text)]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_is_tested_or_says_why_it_is_ignored(name: str) -> None:
    setting = SETTINGS[name]
    if setting.ignored:
        return
    assert name in TESTED_UNDER_ANOTHER_NAME or _named_in_a_test(name), (
        f"{name!r} is marked honoured but no test outside test_config.py names it: test "
        "its effect, or mark it ignored=<why it has no effect>")


def test_the_list_above_names_honoured_settings_only() -> None:
    for name in TESTED_UNDER_ANOTHER_NAME:
        assert name in SETTINGS and SETTINGS[name].honoured, name


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.ignored])
def test_reasons_are_one_specific_line(name: str) -> None:
    reason = SETTINGS[name].ignored
    assert reason == reason.strip() and "\n" not in reason
    assert 20 <= len(reason) <= 200, reason
    assert not reason.endswith("."), "a clause, not a sentence: it follows a colon"


def test_harmless_values_belong_to_ignored_settings() -> None:
    for setting in SETTINGS.values():
        if setting.harmless:
            assert setting.ignored, setting.name
            assert setting.default not in setting.harmless, setting.name


def test_the_counts() -> None:
    honoured = [s for s in SETTINGS.values() if s.honoured]
    assert len(honoured) + len([s for s in SETTINGS.values() if s.ignored]) == len(SETTINGS)
    assert len(honoured) >= 70  # lowering this needs a reason in the commit message


# -- the warning ---------------------------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that has warned about nothing yet; every warning recorded."""
    monkeypatch.setattr(config, "_IGNORED_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield


def _ignored_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, IgnoredSettingWarning)]


def test_setting_an_ignored_setting_warns_once_with_its_name_and_reason(fresh: None) -> None:
    reason = SETTINGS["worker_direct"].ignored
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        conf = Settings()
        conf.worker_direct = True
        conf.worker_direct = True
        Settings().worker_direct = True  # another app of the same process
    messages = _ignored_warnings(record)
    assert len(messages) == 1
    assert "'worker_direct'" in messages[0] and reason in messages[0]


def test_the_warning_points_at_the_users_line(fresh: None) -> None:
    with pytest.warns(IgnoredSettingWarning) as record:
        Settings().worker_state_db = "/tmp/state"
    assert record[0].filename == __file__


@pytest.mark.parametrize("old", ["CELERY_WORKER_DIRECT", "WORKER_DIRECT"])
def test_an_old_uppercase_name_warns_too(fresh: None, old: str) -> None:
    with pytest.warns(IgnoredSettingWarning, match=rf"'worker_direct' \(set as '{old}'\)"):
        Settings()[old] = True


@pytest.mark.parametrize("how", ["update", "kwargs", "config_from_object", "namespace",
                                 "app_kwargs", "setdefault"])
def test_every_way_of_setting_warns(fresh: None, how: str) -> None:
    with pytest.warns(IgnoredSettingWarning, match="'worker_state_db'"):
        if how == "update":
            Settings().update({"worker_state_db": "state.db"})
        elif how == "kwargs":
            Settings(CELERYD_STATE_DB="state.db")
        elif how == "config_from_object":
            Settings().config_from_object({"CELERYD_STATE_DB": "state.db"})
        elif how == "namespace":
            Settings().config_from_object(
                {"CELERY_WORKER_STATE_DB": "state.db"}, namespace="CELERY")
        elif how == "app_kwargs":
            Celery("x", broker="memory://", set_as_current=False,
                   worker_state_db="state.db")
        else:
            Celery("x", broker="memory://", set_as_current=False).add_defaults(
                {"worker_state_db": "state.db"})


def test_a_config_module_warns(fresh: None, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ignoredcfg.py").write_text("CELERY_EVENT_SERIALIZER = 'pickle'\n"
                                            "worker_direct = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ignoredcfg", raising=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Settings().config_from_object("ignoredcfg")
    messages = _ignored_warnings(record)
    assert len(messages) == 2
    assert any("'event_serializer'" in m for m in messages)


@pytest.mark.parametrize("name, value", [
    ("worker_direct", False),                      # the default
    ("task_protocol", 2),                          # the default
    ("broker_connection_retry_on_startup", True),  # what celeriac does anyway
    ("worker_enable_remote_control", False),       # celeriac has none to disable
    ("task_default_delivery_mode", "persistent"),  # the default, spelled out
])
def test_defaults_and_harmless_values_do_not_warn(fresh: None, name: str, value: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings()[name] = value


def test_honoured_and_unknown_settings_keep_their_own_warnings(fresh: None) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        conf = Settings()
        conf.task_acks_late = True
        conf.task_serialiser = "json"
    assert [w.category for w in record] == [UnknownSettingWarning]
    assert "did you mean 'task_serializer'" in str(record[0].message)


def test_the_test_suites_own_apps_set_nothing_ignored() -> None:
    script = """
import sys
from pathlib import Path
tests = Path(sys.argv[1])
sys.path[:0] = [str(tests / "interop" / "apps"), str(tests / "interop")]
source = (tests / "integration" / "proj_template.py").read_text()
source = source.replace("BROKER_URL_HERE", "memory://").replace("QUEUE_HERE", "q")
exec(compile(source, "proj_template.py", "exec"), {"__name__": "proj"})
import interop_celeriac
"""
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script,
                           str(TESTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
