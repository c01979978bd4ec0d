"""Unit tests for celeriac.routing: task_routes, task_queues and the default queue.

The rules follow Celery's router (celery/app/routes.py) and the exchange/routing key
Celery puts on the wire (celery/app/amqp.py, send_task_message).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from celeriac.exceptions import QueueNotFound
from celeriac.routing import Exchange, Queue, TaskRouter


def route(routes: Any = None, name: str = "proj.tasks.add", *, queues: Any = None,
          default: str = "celery", create_missing: bool = True, task: Any = None,
          args: Any = (), kwargs: Any = None, **options: Any):
    router = TaskRouter(routes, queues, default, create_missing)
    return router.route(name, args, kwargs or {}, options, task=task)


def test_default_queue_when_nothing_matches() -> None:
    r = route()
    assert (r.queue, r.exchange, r.routing_key) == ("celery", "", "celery")
    assert route(default="jobs").queue == "jobs"
    assert route({"other.task": {"queue": "x"}}).queue == "celery"


def test_dict_with_exact_name() -> None:
    routes = {"proj.tasks.add": {"queue": "math"}, "proj.tasks.mul": {"queue": "other"}}
    r = route(routes)
    assert r.queue == "math"
    # The message goes to the nameless exchange keyed by queue name, as Celery sends it.
    assert (r.exchange, r.routing_key) == ("", "math")


def test_dict_value_may_be_a_queue_name() -> None:
    assert route({"proj.tasks.add": "math"}).queue == "math"


def test_glob_patterns() -> None:
    routes = {"feed.*": {"queue": "feeds"}, "web.tasks.?et": {"queue": "web"}}
    assert route(routes, "feed.tasks.import_feed").queue == "feeds"
    assert route(routes, "feed.x").queue == "feeds"
    assert route(routes, "web.tasks.get").queue == "web"
    assert route(routes, "feedback.tasks.x").queue == "celery"   # the dot is literal
    assert route(routes, "other.feed.x").queue == "celery"       # anchored at the start


def test_exact_name_wins_over_a_pattern() -> None:
    routes = {"feed.*": {"queue": "feeds"}, "feed.tasks.special": {"queue": "special"}}
    assert route(routes, "feed.tasks.special").queue == "special"
    assert route(routes, "feed.tasks.other").queue == "feeds"


def test_regex_keys() -> None:
    routes = {re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"}}
    assert route(routes, "video.tasks.encode").queue == "media"
    assert route(routes, "image.tasks.resize").queue == "media"
    assert route(routes, "audio.tasks.encode").queue == "celery"


def test_ordered_list_of_pattern_pairs() -> None:
    # Celery's documented way to order patterns: task_routes = ([(pattern, route), ...],)
    routes = ([("feed.tasks.*", {"queue": "feeds"}),
               ("feed.*", {"queue": "catch-all"}),
               (re.compile(r"(video|image)\.tasks\..*"), {"queue": "media"})],)
    assert route(routes, "feed.tasks.a").queue == "feeds"
    assert route(routes, "feed.b").queue == "catch-all"
    assert route(routes, "video.tasks.x").queue == "media"


def test_router_function_with_celerys_signature_gets_the_task() -> None:
    seen: list[Any] = []

    def router(name, args, kwargs, options, task=None, **kw):
        seen.append((name, args, kwargs, options, task))
        if name.startswith("video."):
            return {"queue": "video", "priority": 7}
        return None

    sentinel = object()
    r = route([router], "video.encode", task=sentinel, args=(1,), kwargs={"k": 2})
    assert r.queue == "video"
    assert r.options == {"priority": 7}  # extra route keys become publish options
    assert seen == [("video.encode", (1,), {"k": 2}, {}, sentinel)]
    assert route([router], "audio.encode").queue == "celery"


def test_router_function_with_four_arguments() -> None:
    def router(name, args, kwargs, options):
        return {"queue": "four"} if args and args[0] == "big" else None

    assert route(router, args=("big",)).queue == "four"
    assert route(router, args=("small",)).queue == "celery"


def test_router_function_returning_a_queue_name() -> None:
    def router(name, args, kwargs, options, task=None):
        return "by-name"

    r = route([router])
    assert (r.queue, r.exchange, r.routing_key) == ("by-name", "", "by-name")


def test_a_type_error_inside_a_router_is_raised_once_and_unchanged() -> None:
    calls: list[str] = []

    def lookup(name, table):
        return table[name]

    def router(name, args, kwargs, options, task=None):
        calls.append(name)
        return lookup(name)  # type: ignore[call-arg]  # a bug in the user's router

    with pytest.raises(TypeError, match="lookup.*missing 1 required positional argument"):
        route([router])
    assert calls == ["proj.tasks.add"]


def test_routers_are_tried_in_order_until_one_answers() -> None:
    calls: list[str] = []

    def first(name, args, kwargs, options, task=None):
        calls.append("first")
        return None

    def second(name, args, kwargs, options, task=None):
        calls.append("second")
        return {"queue": "second"}

    def third(name, args, kwargs, options, task=None):
        calls.append("third")
        return {"queue": "third"}

    routes = [first, {"other": {"queue": "x"}}, second, third]
    assert route(routes).queue == "second"
    assert calls == ["first", "second"]
    # an earlier dict match wins over later functions
    assert route([{"proj.tasks.add": {"queue": "dict"}}, second]).queue == "dict"


def test_old_style_router_object_with_route_for_task() -> None:
    class MyRouter:
        def route_for_task(self, task, args=None, kwargs=None):
            return {"queue": "legacy"} if task == "proj.tasks.add" else None

    assert route([MyRouter()]).queue == "legacy"
    assert route([MyRouter()], "x").queue == "celery"


def test_queue_option_wins_over_routes() -> None:
    routes = {"proj.tasks.add": {"queue": "math"}}
    assert route(routes, queue="urgent").queue == "urgent"

    def router(name, args, kwargs, options, task=None):
        raise AssertionError("routers are not consulted when queue= is given")

    assert route([router], queue="urgent").queue == "urgent"


def test_queue_objects_in_task_queues_give_exchange_and_routing_key() -> None:
    queues = [
        Queue("default", Exchange("default"), routing_key="default"),
        Queue("videos", Exchange("media", type="topic"), routing_key="media.video"),
        Queue("images", Exchange("media", type="topic"), routing_key="media.image"),
    ]
    r = route({"video.*": {"queue": "videos"}}, "video.encode", queues=queues,
              default="default", create_missing=False)
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "media", "media.video")
    r = route(None, "x", queues=queues, default="default", queue="images",
              create_missing=False)
    assert (r.queue, r.exchange, r.routing_key) == ("images", "media", "media.image")


def test_direct_queue_is_sent_to_the_nameless_exchange_as_celery_does() -> None:
    # Celery turns a direct exchange without an explicit exchange and routing key into
    # exchange "" / routing key = queue name; kombu restores messages by these.
    queues = [Queue("videos", Exchange("media"), routing_key="media.video")]
    r = route({"video.*": {"queue": "videos"}}, "video.encode", queues=queues)
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "", "videos")


def test_explicit_exchange_and_routing_key_in_the_route_are_kept() -> None:
    routes = {"video.*": {"queue": "videos", "exchange": "media",
                          "routing_key": "media.video"}}
    r = route(routes, "video.encode")
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "media", "media.video")
    r = route(None, exchange=Exchange("media", type="topic"), routing_key="media.x",
              queue="videos")
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "media", "media.x")


def test_route_may_name_a_queue_object() -> None:
    q = Queue("videos", Exchange("media", type="topic"), routing_key="media.video")
    r = route({"video.*": {"queue": q}}, "video.encode")
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "media", "media.video")


def test_queue_names_as_strings_in_task_queues() -> None:
    r = route({"a": "one"}, "a", queues=["one", "two"], create_missing=False)
    assert (r.queue, r.routing_key) == ("one", "one")


def test_old_celery_queues_dict_form_keeps_exchange_and_key() -> None:
    queues = {"videos": {"exchange": "media", "exchange_type": "topic",
                         "routing_key": "media.video"}}
    r = route(None, queue="videos", queues=queues, create_missing=False)
    assert (r.queue, r.exchange, r.routing_key) == ("videos", "media", "media.video")
    with pytest.raises(QueueNotFound):
        route(None, queue="nope", queues=queues, create_missing=False)


def test_missing_queue_is_created_by_default() -> None:
    r = route({"proj.tasks.add": {"queue": "brand-new"}}, queues=[Queue("celery")])
    assert (r.queue, r.routing_key) == ("brand-new", "brand-new")


def test_missing_queue_raises_when_create_missing_is_off() -> None:
    queues = [Queue("celery")]
    with pytest.raises(QueueNotFound, match="brand-new"):
        route({"proj.tasks.add": {"queue": "brand-new"}}, queues=queues,
              create_missing=False)
    with pytest.raises(QueueNotFound):
        route(None, queues=queues, create_missing=False, queue="brand-new")
    # a known queue is fine
    assert route(None, queues=queues, create_missing=False).queue == "celery"


def test_router_named_by_string_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    mod = types.ModuleType("unit_routing_routers")

    def by_string(name, args, kwargs, options, task=None):
        return {"queue": "from-string"}

    class Legacy:
        def route_for_task(self, task, args=None, kwargs=None):
            return {"queue": "legacy-class"}

    mod.by_string = by_string  # type: ignore[attr-defined]
    mod.Legacy = Legacy  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unit_routing_routers", mod)
    assert route("unit_routing_routers.by_string").queue == "from-string"
    assert route(["unit_routing_routers:by_string"]).queue == "from-string"
    # a pre-4.0 router class named by string is instantiated, as Celery does
    assert route(["unit_routing_routers.Legacy"]).queue == "legacy-class"


def test_bad_route_entry_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="task_routes"):
        TaskRouter([42], None, "celery")
