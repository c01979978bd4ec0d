"""Unit tests for celeriac.config: the settings table and app.conf's mapping."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import sys
import textwrap
import types
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from celeriac import config
from celeriac.config import (
    OLD_NAMES,
    SETTINGS,
    IgnoredSettingWarning,
    Setting,
    Settings,
    UnknownSettingWarning,
    canonical_name,
    seconds,
)


@pytest.fixture
def conf() -> Settings:
    return Settings()


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Any warning fails the test, except IgnoredSettingWarning (tested on its own below):
    these tests set arbitrary values, ignored settings among them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", IgnoredSettingWarning)
        yield


@pytest.fixture
def make_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], str]]:
    """Write ``<name>.py`` (or a package path ``a/b.py``) importable for this test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(name: str, source: str) -> str:
        path = tmp_path.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != ".":
                (tmp_path / parent / "__init__.py").touch()
        path.with_suffix(".py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in list(sys.modules):
        if any(name == c or name.startswith(c.split(".")[0]) for c in created):
            sys.modules.pop(name, None)


# -- the table ---------------------------------------------------------------------------


def test_table_entries_are_consistent() -> None:
    for name, setting in SETTINGS.items():
        assert isinstance(setting, Setting)
        assert setting.name == name == name.lower()
        assert all(old == old.upper() for old in setting.old)
        assert setting.doc, name


def test_setting_is_frozen() -> None:
    with pytest.raises(AttributeError):
        SETTINGS["broker_url"].default = "x"  # type: ignore[misc]


def test_old_names_never_collide() -> None:
    seen: dict[str, str] = {}
    for setting in SETTINGS.values():
        for old in setting.old:
            assert old not in seen, f"{old} maps to {seen.get(old)} and {setting.name}"
            seen[old] = setting.name
            assert old.lower() not in SETTINGS or old.lower() == setting.name
    assert seen == OLD_NAMES
    # No setting's upper-case spelling is another setting's old name.
    for name in SETTINGS:
        assert OLD_NAMES.get(name.upper(), name) == name


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("accept_content", ["json"]),
        ("task_serializer", "json"),
        ("result_serializer", "json"),
        ("result_accept_content", None),
        ("task_default_queue", "celery"),
        ("task_default_exchange", None),
        ("task_default_exchange_type", "direct"),
        ("task_default_routing_key", None),
        ("task_track_started", False),
        ("task_always_eager", False),
        ("task_acks_late", False),
        ("task_ignore_result", False),
        ("task_protocol", 2),
        ("task_publish_retry_policy",
         {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}),
        ("worker_prefetch_multiplier", 4),
        ("worker_concurrency", None),
        ("worker_max_tasks_per_child", None),
        ("worker_pool", "prefork"),
        ("broker_url", None),
        ("broker_read_url", None),
        ("broker_write_url", None),
        ("broker_pool_limit", 10),
        ("broker_connection_retry_on_startup", None),
        ("broker_connection_max_retries", 100),
        ("broker_transport_options", {}),
        ("result_backend", None),
        ("result_expires", timedelta(days=1)),
        ("result_extended", False),
        ("result_cache_max", -1),
        ("result_backend_max_retries", math.inf),
        ("timezone", None),
        ("enable_utc", True),
        ("imports", ()),
        ("include", ()),
        ("beat_schedule", {}),
        ("beat_schedule_filename", "celerybeat-schedule"),
        ("event_serializer", "json"),
        ("control_queue_ttl", 300.0),
        ("security_digest", "sha256"),
        ("database_short_lived_sessions", False),
        ("redis_socket_timeout", 120.0),
        ("cache_backend_options", {}),
    ],
)
def test_defaults(conf: Settings, name: str, default: Any) -> None:
    assert SETTINGS[name].default == default
    assert conf[name] == default
    assert getattr(conf, name) == default


@pytest.mark.parametrize(
    ("name", "default", "kind"),
    [
        ("worker_heartbeat_interval", 2.0, float),
        ("worker_lost_timeout", 10.0, float),
        ("broker_dead_letter_queue", "celeriac.dead", str),
        ("worker_async_concurrency", 100, int),
    ],
)
def test_celeriac_only_settings(conf: Settings, name: str, default: Any, kind: type) -> None:
    setting = SETTINGS[name]
    assert setting.default == default
    assert setting.type is kind
    assert "celeriac" in setting.doc
    assert conf[name] == default


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Settings(), Settings()
    a.beat_schedule["x"] = {"task": "t", "schedule": 1}
    a.accept_content.append("pickle")
    assert b.beat_schedule == {}
    assert b.accept_content == ["json"]
    assert SETTINGS["beat_schedule"].default == {}
    assert SETTINGS["accept_content"].default == ["json"]


# -- old and new names ---------------------------------------------------------------------

OLD_TO_NEW = [
    ("BROKER_URL", "broker_url"),
    ("BROKER_READ_URL", "broker_read_url"),
    ("BROKER_WRITE_URL", "broker_write_url"),
    ("BROKER_POOL_LIMIT", "broker_pool_limit"),
    ("BROKER_TRANSPORT_OPTIONS", "broker_transport_options"),
    ("BROKER_CONNECTION_TIMEOUT", "broker_connection_timeout"),
    ("BROKER_HEARTBEAT", "broker_heartbeat"),
    ("CELERY_RESULT_BACKEND", "result_backend"),
    ("CELERY_TASK_SERIALIZER", "task_serializer"),
    ("CELERY_RESULT_SERIALIZER", "result_serializer"),
    ("CELERY_ACCEPT_CONTENT", "accept_content"),
    ("CELERY_TIMEZONE", "timezone"),
    ("CELERY_ENABLE_UTC", "enable_utc"),
    ("ENABLE_UTC", "enable_utc"),
    ("CELERY_TASK_RESULT_EXPIRES", "result_expires"),
    ("CELERY_IMPORTS", "imports"),
    ("CELERY_INCLUDE", "include"),
    ("CELERY_ROUTES", "task_routes"),
    ("CELERY_ANNOTATIONS", "task_annotations"),
    ("CELERY_QUEUES", "task_queues"),
    ("CELERY_DEFAULT_QUEUE", "task_default_queue"),
    ("CELERY_DEFAULT_EXCHANGE", "task_default_exchange"),
    ("CELERY_DEFAULT_ROUTING_KEY", "task_default_routing_key"),
    ("CELERY_DEFAULT_RATE_LIMIT", "task_default_rate_limit"),
    ("CELERY_ALWAYS_EAGER", "task_always_eager"),
    ("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "task_eager_propagates"),
    ("CELERY_IGNORE_RESULT", "task_ignore_result"),
    ("CELERY_ACKS_LATE", "task_acks_late"),
    ("CELERY_TRACK_STARTED", "task_track_started"),
    ("CELERY_SEND_TASK_SENT_EVENT", "task_send_sent_event"),
    ("CELERY_MESSAGE_COMPRESSION", "task_compression"),
    ("CELERY_TASK_PUBLISH_RETRY_POLICY", "task_publish_retry_policy"),
    ("CELERY_MAX_CACHED_RESULTS", "result_cache_max"),
    ("CELERY_RESULT_DBURI", "database_url"),
    ("CELERY_RESULT_ENGINE_OPTIONS", "database_engine_options"),
    ("CELERY_SEND_EVENTS", "worker_send_task_events"),
    ("CELERY_DISABLE_RATE_LIMITS", "worker_disable_rate_limits"),
    ("CELERY_ENABLE_REMOTE_CONTROL", "worker_enable_remote_control"),
    ("CELERY_REDIS_MAX_CONNECTIONS", "redis_max_connections"),
    ("CELERY_SECURITY_KEY", "security_key"),
    ("CELERY_EVENT_SERIALIZER", "event_serializer"),
    ("CELERY_CACHE_BACKEND", "cache_backend"),
    ("CELERYD_CONCURRENCY", "worker_concurrency"),
    ("CELERYD_MAX_TASKS_PER_CHILD", "worker_max_tasks_per_child"),
    ("CELERYD_PREFETCH_MULTIPLIER", "worker_prefetch_multiplier"),
    ("CELERYD_POOL", "worker_pool"),
    ("CELERYD_TASK_TIME_LIMIT", "task_time_limit"),
    ("CELERYD_TASK_SOFT_TIME_LIMIT", "task_soft_time_limit"),
    ("CELERYD_HIJACK_ROOT_LOGGER", "worker_hijack_root_logger"),
    ("CELERYD_WORKER_LOST_WAIT", "worker_lost_wait"),
    ("CELERYBEAT_SCHEDULE", "beat_schedule"),
    ("CELERYBEAT_SCHEDULER", "beat_scheduler"),
    ("CELERYBEAT_SCHEDULE_FILENAME", "beat_schedule_filename"),
    ("CELERYBEAT_MAX_LOOP_INTERVAL", "beat_max_loop_interval"),
    ("CASSANDRA_COLUMN_FAMILY", "cassandra_table"),
]


@pytest.mark.parametrize(("old", "new"), OLD_TO_NEW)
def test_old_name_maps_to_new(old: str, new: str) -> None:
    assert canonical_name(old) == new
    assert canonical_name(new) == new


@pytest.mark.parametrize(("old", "new"), OLD_TO_NEW)
def test_write_old_read_new_and_back(old: str, new: str, no_warnings: None) -> None:
    conf = Settings()
    sentinel = object()
    conf[old] = sentinel
    assert conf[new] is sentinel
    assert getattr(conf, new) is sentinel
    assert conf[old] is sentinel
    assert getattr(conf, old) is sentinel
    assert old not in conf.changes() and conf.changes() == {new: sentinel}

    conf = Settings()
    setattr(conf, new, sentinel)
    assert conf[old] is sentinel
    assert old in conf


def test_upper_case_new_name_is_accepted(conf: Settings, no_warnings: None) -> None:
    conf["TASK_DEFAULT_QUEUE"] = "q"
    conf.CONTROL_QUEUE_TTL = 5.0
    assert conf.task_default_queue == "q"
    assert conf.control_queue_ttl == 5.0


def test_unknown_name_is_kept(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning):
        conf["my_own_thing"] = 42
    assert conf["my_own_thing"] == 42
    assert conf.my_own_thing == 42
    assert conf.changes() == {"my_own_thing": 42}


# -- mapping behaviour --------------------------------------------------------------------


def test_item_and_attribute_access(conf: Settings) -> None:
    conf.broker_url = "redis://a"
    assert conf["broker_url"] == "redis://a"
    conf["result_backend"] = "redis://b"
    assert conf.result_backend == "redis://b"
    assert conf.get("result_backend") == "redis://b"
    assert conf.get("CELERY_RESULT_BACKEND") == "redis://b"
    assert conf.get("nope", 7) == 7


def test_len_and_iteration_include_defaults(conf: Settings) -> None:
    assert len(conf) == len(SETTINGS)
    assert set(conf) == set(SETTINGS)
    with pytest.warns(UnknownSettingWarning):
        conf["extra"] = 1
    assert len(conf) == len(SETTINGS) + 1
    assert "extra" in list(conf)
    assert dict(conf.items())["task_default_queue"] == "celery"


def test_delete_restores_default(conf: Settings) -> None:
    conf.task_default_queue = "other"
    conf.beat_schedule = {"a": {}}
    del conf["CELERY_DEFAULT_QUEUE"]
    del conf.beat_schedule
    assert conf.task_default_queue == "celery"
    assert conf.beat_schedule == {}
    assert conf.changes() == {}
    with pytest.warns(UnknownSettingWarning):
        conf["mine"] = 1
    del conf["mine"]
    assert "mine" not in conf
    with pytest.raises(KeyError):
        del conf["mine"]
    with pytest.raises(AttributeError):
        del conf.mine


def test_missing_key_and_attribute(conf: Settings) -> None:
    with pytest.raises(KeyError):
        conf["broker_ulr"]
    with pytest.raises(AttributeError, match="did you mean 'broker_url'"):
        conf.broker_ulr  # noqa: B018
    assert not hasattr(conf, "_private_thing")


def test_setdefault(conf: Settings) -> None:
    # A known setting still at its table default counts as not set (app.add_defaults).
    assert conf.setdefault("broker_url", "memory://") == "memory://"
    assert conf.broker_url == "memory://"
    assert conf.setdefault("BROKER_URL", "redis://") == "memory://"
    conf.task_default_queue = "mine"
    assert conf.setdefault("task_default_queue", "x") == "mine"
    assert conf.setdefault("accept_content", "json") == ["json"]
    with pytest.warns(UnknownSettingWarning):
        assert conf.setdefault("my_flag", True) is True
    assert conf.my_flag is True
    assert conf.setdefault("my_flag", False) is True


def test_update_with_kwargs_mapping_and_pairs(conf: Settings, no_warnings: None) -> None:
    conf.update({"broker_url": "memory://"}, CELERY_TASK_SERIALIZER="pickle", timezone="UTC")
    conf.update([("worker_concurrency", 3)])
    conf.update(CELERYD_PREFETCH_MULTIPLIER=1)
    assert conf.broker_url == "memory://"
    assert conf.task_serializer == "pickle"
    assert conf.timezone == "UTC"
    assert conf.worker_concurrency == 3
    assert conf.worker_prefetch_multiplier == 1
    assert conf.changes() == {
        "broker_url": "memory://", "task_serializer": "pickle", "timezone": "UTC",
        "worker_concurrency": 3, "worker_prefetch_multiplier": 1,
    }


@pytest.mark.parametrize("new_first", [True, False])
def test_new_name_wins_over_old_in_one_update(conf: Settings, new_first: bool) -> None:
    items = [("BROKER_URL", "old://"), ("broker_url", "new://")]
    conf.update(dict(reversed(items) if new_first else items))
    assert conf.broker_url == "new://"


def test_constructor_takes_values(no_warnings: None) -> None:
    conf = Settings({"broker_url": "memory://"}, task_always_eager=True)
    assert conf.broker_url == "memory://"
    assert conf.task_always_eager is True


def test_clear_resets_everything(conf: Settings) -> None:
    conf.broker_url = "memory://"
    with pytest.warns(UnknownSettingWarning):
        conf.mine = 1
    conf.clear()
    assert conf.changes() == {}
    assert conf.broker_url is None
    assert "mine" not in conf
    assert len(conf) == len(SETTINGS)


def test_accept_content_string_becomes_list(conf: Settings) -> None:
    conf.accept_content = "json"
    assert conf.accept_content == ["json"]
    conf["CELERY_ACCEPT_CONTENT"] = "pickle"
    assert conf.accept_content == ["pickle"]
    conf.result_accept_content = "json"
    assert conf.result_accept_content == ["json"]
    conf.accept_content = {"json", "msgpack"}
    assert conf.accept_content == {"json", "msgpack"}


def test_values_are_not_coerced(conf: Settings) -> None:
    conf.result_expires = 3600
    assert conf.result_expires == 3600
    conf.worker_concurrency = "4"
    assert conf.worker_concurrency == "4"


def test_changes_and_table(conf: Settings) -> None:
    conf.broker_url = "redis://:hunter2@localhost:6379/0"
    conf.redis_password = "hunter2"
    conf.task_default_queue = "q"
    conf["_hidden"] = 1
    assert conf.changes() == {
        "broker_url": "redis://:hunter2@localhost:6379/0",
        "redis_password": "hunter2",
        "task_default_queue": "q",
        "_hidden": 1,
    }
    table = conf.table()
    assert "_hidden" not in table
    assert table["task_default_queue"] == "q"
    assert "hunter2" not in repr(table)
    assert table["broker_url"] == "redis://:********@localhost:6379/0"
    assert table["redis_password"] == "********"
    assert conf.table(censored=False)["redis_password"] == "hunter2"
    full = conf.table(with_defaults=True)
    assert full["worker_prefetch_multiplier"] == 4
    assert full["redis_host"] is None
    assert len(full) == len(SETTINGS)


def test_value_set_for(conf: Settings) -> None:
    assert not conf.value_set_for("worker_concurrency")
    conf.CELERYD_CONCURRENCY = 2
    assert conf.value_set_for("worker_concurrency")
    assert conf.value_set_for("CELERYD_CONCURRENCY")


def test_copy_is_independent(conf: Settings) -> None:
    conf.broker_url = "memory://"
    conf.beat_schedule = {"a": {"task": "t", "schedule": 10}}
    clone = conf.copy()
    assert clone.changes() == conf.changes()
    clone.broker_url = "redis://"
    clone.beat_schedule["b"] = {}
    clone.broker_transport_options["visibility_timeout"] = 1
    del clone.beat_schedule["a"]
    assert conf.broker_url == "memory://"
    assert conf.beat_schedule == {"a": {"task": "t", "schedule": 10}}
    assert conf.broker_transport_options == {}
    conf.task_default_queue = "only-in-original"
    assert clone.task_default_queue == "celery"
    assert not clone.value_set_for("task_default_queue")


def test_copy_module_protocol(conf: Settings) -> None:
    import copy

    conf.broker_url = "memory://"
    assert copy.copy(conf).broker_url == "memory://"
    assert copy.deepcopy(conf).broker_url == "memory://"


def test_pickle_roundtrip(conf: Settings) -> None:
    conf.broker_url = "memory://"
    conf.result_expires = timedelta(hours=1)
    clone = pickle.loads(pickle.dumps(conf))
    assert isinstance(clone, Settings)
    assert clone.changes() == conf.changes()
    assert clone.task_default_queue == "celery"


def test_dir_lists_settings(conf: Settings) -> None:
    names = dir(conf)
    assert "broker_url" in names and "config_from_object" in names


# -- unknown-name warnings ---------------------------------------------------------------


def test_unknown_name_suggests_closest(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning) as record:
        conf["broker_ulr"] = "redis://"
    assert str(record[0].message) == "unknown setting 'broker_ulr': did you mean 'broker_url'?"


def test_unknown_attribute_write_suggests_closest(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning, match="did you mean 'task_serializer'"):
        conf.task_serialiser = "json"


def test_unknown_old_style_name_suggests_old_name(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning, match="did you mean 'BROKER_URL'"):
        conf["BROKER_ULR"] = "redis://"


def test_unknown_user_setting_message(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning) as record:
        conf["foo"] = 1
    assert str(record[0].message) == (
        "unknown setting 'foo'; celeriac ignores it (keeping it in app.conf)"
    )


def test_prefixed_name_without_namespace_hints_at_namespace(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning, match="did you mean 'broker_url'.*namespace"):
        conf["CELERY_BROKER_URL"] = "redis://"


def test_one_warning_per_name(conf: Settings) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conf["foo"] = 1
        conf["foo"] = 2
        conf.foo = 3
        conf.update(foo=4, bar=5)
    messages = [str(w.message) for w in caught if w.category is UnknownSettingWarning]
    assert len(messages) == 2
    assert conf.foo == 4


def test_private_and_non_string_names_never_warn(conf: Settings, no_warnings: None) -> None:
    conf["_internal"] = 1
    conf[42] = "answer"  # type: ignore[index]
    conf.update({("a", "b"): 1})
    assert conf["_internal"] == 1
    assert conf[42] == "answer"  # type: ignore[index]


def test_known_names_never_warn(no_warnings: None) -> None:
    conf = Settings()
    for name, setting in SETTINGS.items():
        conf[name] = setting.default
        for old in setting.old:
            conf[old] = setting.default


# -- config_from_object -------------------------------------------------------------------


def test_from_module_name(conf: Settings, make_module: Callable[[str, str], str]) -> None:
    name = make_module("celeriac_cfg_plain", """
        import os
        from datetime import timedelta

        broker_url = "redis://localhost:6379/1"
        result_backend = "redis://localhost:6379/2"
        task_serializer = "json"
        result_expires = timedelta(hours=2)
        imports = ("proj.tasks",)
        _private = "skip me"
        MixedCase = "skip me too"

        def helper():
            return 1
    """)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conf.config_from_object(name) is True
    assert conf.broker_url == "redis://localhost:6379/1"
    assert conf.result_backend == "redis://localhost:6379/2"
    assert conf.result_expires == timedelta(hours=2)
    assert conf.imports == ("proj.tasks",)
    changes = conf.changes()
    for skipped in ("os", "timedelta", "_private", "MixedCase", "helper"):
        assert skipped not in changes


def test_from_module_with_old_names(conf: Settings, make_module: Callable[[str, str], str]) -> None:
    name = make_module("celeriac_cfg_old", """
        BROKER_URL = "amqp://guest@localhost//"
        CELERY_RESULT_BACKEND = "rpc://"
        CELERYD_CONCURRENCY = 8
        CELERY_ROUTES = {"a.*": {"queue": "a"}}
        CELERYBEAT_SCHEDULE = {"tick": {"task": "t", "schedule": 5.0}}
        CELERY_TASK_RESULT_EXPIRES = 600
    """)
    conf.config_from_object(name)
    assert conf.broker_url == "amqp://guest@localhost//"
    assert conf.result_backend == "rpc://"
    assert conf.worker_concurrency == 8
    assert conf.task_routes == {"a.*": {"queue": "a"}}
    assert conf.beat_schedule["tick"]["schedule"] == 5.0
    assert conf.result_expires == 600


def test_from_module_mixing_old_and_new(
    conf: Settings, make_module: Callable[[str, str], str]
) -> None:
    name = make_module("celeriac_cfg_mixed", """
        BROKER_URL = "old://"
        broker_url = "new://"
        CELERY_TASK_SERIALIZER = "pickle"
        result_serializer = "json"
    """)
    conf.config_from_object(name)
    assert conf.broker_url == "new://"
    assert conf.task_serializer == "pickle"
    assert conf.result_serializer == "json"


def test_from_module_colon_attribute(
    conf: Settings, make_module: Callable[[str, str], str]
) -> None:
    name = make_module("celeriac_cfg_pkg.settings", """
        class Config:
            broker_url = "memory://"
            task_always_eager = True

        class Other:
            broker_url = "sqlite://"
    """)
    conf.config_from_object(f"{name}:Config")
    assert conf.broker_url == "memory://"
    assert conf.task_always_eager is True
    conf.config_from_object(f"{name}.Other")
    assert conf.broker_url == "sqlite://"


def test_from_module_object(conf: Settings) -> None:
    module = types.ModuleType("fake_cfg")
    module.broker_url = "memory://"  # type: ignore[attr-defined]
    module.json = __import__("json")  # type: ignore[attr-defined]
    conf.config_from_object(module)
    assert conf.broker_url == "memory://"
    assert "json" not in conf


def test_from_class(conf: Settings) -> None:
    class Config:
        broker_url = "memory://"
        CELERY_ALWAYS_EAGER = True
        task_routes = staticmethod(lambda name, args, kwargs, options, task=None, **kw: None)

        def method(self) -> None:  # not a setting
            pass

        @property
        def prop(self) -> int:
            return 1

    conf.config_from_object(Config)
    assert conf.broker_url == "memory://"
    assert conf.task_always_eager is True
    assert callable(conf.task_routes)  # a function under a setting's name is kept
    assert "method" not in conf and "prop" not in conf


def test_from_instance(conf: Settings) -> None:
    class Config:
        def __init__(self) -> None:
            self.broker_url = "memory://"
            self.worker_concurrency = 2

        def helper(self) -> None:
            pass

    conf.config_from_object(Config())
    assert conf.broker_url == "memory://"
    assert conf.worker_concurrency == 2
    assert "helper" not in conf


def test_from_dict(conf: Settings, no_warnings: None) -> None:
    conf.config_from_object({"broker_url": "memory://", "CELERY_IGNORE_RESULT": True})
    assert conf.broker_url == "memory://"
    assert conf.task_ignore_result is True


def test_from_settings_object(conf: Settings) -> None:
    other = Settings(broker_url="memory://")
    conf.config_from_object(other)
    assert conf.broker_url == "memory://"


def test_namespace_django_pattern(conf: Settings) -> None:
    class DjangoSettings:
        DEBUG = True
        SECRET_KEY = "not for celery"
        INSTALLED_APPS = ["a", "b"]
        CELERY_BROKER_URL = "redis://localhost/0"
        CELERY_RESULT_BACKEND = "redis://localhost/1"
        CELERY_TASK_ALWAYS_EAGER = True
        CELERY_TASK_SERIALIZER = "json"
        CELERY_ACCEPT_CONTENT = ["json"]
        CELERY_TIMEZONE = "Europe/Paris"
        CELERY_WORKER_PREFETCH_MULTIPLIER = 1
        CELERY_BEAT_SCHEDULE = {"x": {"task": "t", "schedule": 1.0}}
        CELERY_DEFAULT_QUEUE = "old-style"  # old Django-era name, full key is an old name
        CELERY_CELERYD_CONCURRENCY = 3  # old name behind the prefix

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conf.config_from_object(DjangoSettings, namespace="CELERY")
    assert conf.broker_url == "redis://localhost/0"
    assert conf.result_backend == "redis://localhost/1"
    assert conf.task_always_eager is True
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.timezone == "Europe/Paris"
    assert conf.worker_prefetch_multiplier == 1
    assert conf.beat_schedule == {"x": {"task": "t", "schedule": 1.0}}
    assert conf.task_default_queue == "old-style"
    assert conf.worker_concurrency == 3
    for name in ("DEBUG", "SECRET_KEY", "INSTALLED_APPS", "debug", "secret_key"):
        assert name not in conf


def test_namespace_from_module_string(
    conf: Settings, make_module: Callable[[str, str], str]
) -> None:
    name = make_module("celeriac_cfg_django.settings", """
        DEBUG = False
        CELERY_BROKER_URL = "memory://"
        CELERY_RESULT_EXTENDED = True
    """)
    conf.config_from_object(f"{name}", namespace="CELERY")
    assert conf.broker_url == "memory://"
    assert conf.result_extended is True
    assert "DEBUG" not in conf


def test_namespace_unknown_key_warns_with_stripped_name(conf: Settings) -> None:
    with pytest.warns(UnknownSettingWarning, match="'broker_ulr': did you mean 'broker_url'"):
        conf.config_from_object({"CELERY_BROKER_ULR": "x"}, namespace="CELERY")
    assert conf["broker_ulr"] == "x"


def test_namespace_trailing_underscore_and_lowercase(conf: Settings) -> None:
    conf.config_from_object({"CELERY_BROKER_URL": "a://"}, namespace="CELERY_")
    assert conf.broker_url == "a://"
    conf.config_from_object({"CELERY_BROKER_URL": "b://"}, namespace="celery")
    assert conf.broker_url == "b://"


def test_namespace_new_name_wins(conf: Settings) -> None:
    conf.config_from_object(
        {"CELERY_TASK_ALWAYS_EAGER": False, "CELERY_ALWAYS_EAGER": True}, namespace="CELERY"
    )
    assert conf.task_always_eager is False


def test_silent_missing_module(conf: Settings) -> None:
    assert conf.config_from_object("celeriac_no_such_module_x", silent=True) is False
    assert conf.config_from_object("celeriac_no_such_pkg.mod:attr", silent=True) is False
    assert conf.changes() == {}


def test_missing_module_raises(conf: Settings) -> None:
    with pytest.raises(ImportError):
        conf.config_from_object("celeriac_no_such_module_x")
    with pytest.raises(ImportError):
        conf.config_from_object("celeriac_no_such_pkg.deeper.name")


def test_missing_attribute_raises_import_error(
    conf: Settings, make_module: Callable[[str, str], str]
) -> None:
    name = make_module("celeriac_cfg_noattr", "broker_url = 'memory://'\n")
    with pytest.raises(ImportError, match="no attribute"):
        conf.config_from_object(f"{name}:Missing")
    with pytest.raises(ImportError):
        conf.config_from_object(f"{name}.Missing")
    assert conf.config_from_object(f"{name}:Missing", silent=True) is False


def test_import_error_inside_module_is_not_hidden(
    conf: Settings, make_module: Callable[[str, str], str]
) -> None:
    name = make_module("celeriac_cfg_broken.settings", "import celeriac_missing_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="celeriac_missing_dependency"):
        conf.config_from_object(name)


def test_module_in_working_directory(
    conf: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "celeriac_cfg_cwd.py").write_text("broker_url = 'memory://cwd'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        conf.config_from_object("celeriac_cfg_cwd")
    finally:
        sys.modules.pop("celeriac_cfg_cwd", None)
    assert conf.broker_url == "memory://cwd"
    assert str(tmp_path) not in sys.path


def test_config_from_envvar(
    conf: Settings, make_module: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make_module("celeriac_cfg_env", "broker_url = 'memory://env'\n")
    monkeypatch.setenv("CELERIAC_TEST_CONFIG_MODULE", name)
    assert conf.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE") is True
    assert conf.broker_url == "memory://env"


def test_config_from_envvar_unset(conf: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac.exceptions import ImproperlyConfigured

    monkeypatch.delenv("CELERIAC_TEST_CONFIG_MODULE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_TEST_CONFIG_MODULE"):
        conf.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE")
    assert conf.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE", silent=True) is False
    monkeypatch.setenv("CELERIAC_TEST_CONFIG_MODULE", "celeriac_no_such_module_x")
    assert conf.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE", silent=True) is False
    with pytest.raises(ImportError):
        conf.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE")


# -- environment overrides ---------------------------------------------------------------

ENV_NAMES = [
    "CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERIAC_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND", "CELERIAC_BROKER_READ_URL", "CELERY_BROKER_READ_URL",
    "CELERIAC_BROKER_WRITE_URL", "CELERY_BROKER_WRITE_URL",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_broker_url_resolution_order(conf: Settings, clean_env: pytest.MonkeyPatch) -> None:
    assert conf.resolved_broker_url() is None
    conf.broker_url = "redis://conf"
    assert conf.resolved_broker_url() == "redis://conf"
    clean_env.setenv("CELERY_BROKER_URL", "redis://celery-env")
    assert conf.resolved_broker_url() == "redis://celery-env"
    clean_env.setenv("CELERIAC_BROKER_URL", "redis://celeriac-env")
    assert conf.resolved_broker_url() == "redis://celeriac-env"
    # The plain attribute is the configured value, untouched by the environment.
    assert conf.broker_url == "redis://conf"


def test_result_backend_resolution_order(conf: Settings, clean_env: pytest.MonkeyPatch) -> None:
    assert conf.resolved_result_backend() is None
    clean_env.setenv("CELERY_RESULT_BACKEND", "redis://celery-env")
    assert conf.resolved_result_backend() == "redis://celery-env"
    conf.result_backend = "redis://conf"
    assert conf.resolved_result_backend() == "redis://celery-env"
    clean_env.setenv("CELERIAC_RESULT_BACKEND", "redis://celeriac-env")
    assert conf.resolved_result_backend() == "redis://celeriac-env"
    clean_env.delenv("CELERIAC_RESULT_BACKEND")
    clean_env.delenv("CELERY_RESULT_BACKEND")
    assert conf.resolved_result_backend() == "redis://conf"


def test_environment_read_at_resolve_time(clean_env: pytest.MonkeyPatch) -> None:
    conf = Settings()  # created before the variable exists
    clean_env.setenv("CELERIAC_BROKER_URL", "memory://first")
    assert conf.resolved_broker_url() == "memory://first"
    clean_env.setenv("CELERIAC_BROKER_URL", "memory://second")
    assert conf.resolved_broker_url() == "memory://second"
    clean_env.setenv("CELERIAC_BROKER_URL", "")  # empty means unset
    assert conf.resolved_broker_url() is None
    copied = conf.copy()
    clean_env.setenv("CELERIAC_RESULT_BACKEND", "memory://late")
    assert copied.resolved_result_backend() == "memory://late"


def test_read_and_write_urls(conf: Settings, clean_env: pytest.MonkeyPatch) -> None:
    conf.broker_url = "redis://main"
    assert conf.resolved_broker_read_url() == "redis://main"
    assert conf.resolved_broker_write_url() == "redis://main"
    conf.broker_read_url = "redis://reader"
    assert conf.resolved_broker_read_url() == "redis://reader"
    clean_env.setenv("CELERIAC_BROKER_WRITE_URL", "redis://writer-env")
    assert conf.resolved_broker_write_url() == "redis://writer-env"
    clean_env.setenv("CELERIAC_BROKER_URL", "redis://env")
    assert conf.resolved_broker_read_url() == "redis://reader"
    del conf.broker_read_url
    assert conf.resolved_broker_read_url() == "redis://env"


def test_module_import_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Guard(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: object) -> Any:
            raise AssertionError(f"environment read at import: {key!r}")

        get = __contains__ = __getitem__  # type: ignore[assignment]

    spec = importlib.util.spec_from_file_location("celeriac_config_copy", config.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "celeriac_config_copy", module)
    monkeypatch.setattr(os, "environ", Guard())
    spec.loader.exec_module(module)
    assert module.Settings().broker_url is None


# -- seconds() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (timedelta(days=1), 86400.0),
        (timedelta(milliseconds=1500), 1.5),
        (30, 30.0),
        (2.5, 2.5),
        ("60", 60.0),
    ],
)
def test_seconds(value: Any, expected: float | None) -> None:
    result = seconds(value)
    assert result == expected
    assert result is None or isinstance(result, float)


@pytest.mark.parametrize("value", [True, "soon", object(), [1]])
def test_seconds_rejects_non_durations(value: Any) -> None:
    with pytest.raises(TypeError):
        seconds(value)


def test_seconds_of_default_result_expires(conf: Settings) -> None:
    assert seconds(conf.result_expires) == 86400.0


# -- agreement with Celery ----------------------------------------------------------------

# Celery names classes by import path; celeriac leaves these None ("the built-in one").
CLASS_PATH_SETTINGS = {"beat_scheduler", "worker_autoscaler", "worker_consumer"}


def test_every_celery_setting_is_known_with_its_default_and_old_name() -> None:
    defaults = pytest.importorskip("celery.app.defaults")
    for name, option in defaults.flatten(defaults.NAMESPACES):
        assert name in SETTINGS, f"Celery setting {name!r} is missing"
        if name in CLASS_PATH_SETTINGS:
            assert SETTINGS[name].default is None
        elif name == "accept_content":
            assert list(option.default) == SETTINGS[name].default
        else:
            assert SETTINGS[name].default == option.default, name
    for old, new in defaults._TO_NEW_KEY.items():
        assert canonical_name(old) == new, old
