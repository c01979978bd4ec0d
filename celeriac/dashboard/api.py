"""Flower's HTTP API (same paths, arguments and answers as Flower 2.x) and the pages'
own JSON under ``/api/dashboard/``.

Every route is an ``async`` endpoint that reads its arguments (query string, form body
or JSON body, as Flower reads them) and hands the blocking work (the store, the broker,
remote control) to a thread; the event stream is an async generator. Errors are
``{"error": ...}`` with a fitting status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Hashable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from . import actions, queues
from .actions import ActionError
from .beat import beat_schedule
from .metrics import EventCounters, render
from .options import DashboardOptions
from .security import caller

if TYPE_CHECKING:
    from ..app import Celery
    from .ingest import Ingestor
    from .store import HistoryStore

# Flower's inspect calls for /api/workers, and what the workers page needs of them.
WORKER_METHODS = ("stats", "active_queues", "registered", "scheduled", "active",
                  "reserved", "revoked", "conf")
PAGE_METHODS = ("stats", "active_queues", "active", "reserved")
DETAIL_METHODS = ("stats", "active", "reserved", "scheduled", "active_queues", "registered")
INSPECT_TTL = 5.0  # refreshing pages reuse answers this young instead of asking again
SUMMARY_TTL = 2.0  # and the history's summaries (counts, the hour's throughput) this young
KEEPALIVE = 15.0
STREAM_POLL = 0.25  # seconds between looks at a page's live feed
RECEIVED_FORMAT = "%Y-%m-%d %H:%M"  # Flower's received_start / received_end

Params = dict[str, Any]
logger = logging.getLogger("celeriac.dashboard")


class BadRequest(Exception):
    """An argument that does not parse: answered 400 with the message."""


class JSON(Response):
    """JSON that never fails on a value JSON cannot carry (its repr is sent)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=repr, separators=(",", ":")).encode()


def error(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status)


class InspectCache:
    """Inspect answers, ``{method: {node: answer}}``, kept ``INSPECT_TTL`` seconds.

    Methods are asked in parallel (each waits the whole timeout when every worker is
    asked); one refresh at a time, so a burst of page loads costs one round.
    """

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._answers: dict[tuple[str, str | None], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(WORKER_METHODS),
                                        thread_name_prefix="dashboard-inspect")

    def get(self, methods: tuple[str, ...], worker: str | None = None,
            refresh: bool = False) -> dict[str, dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            stale = [m for m in methods if refresh or (m, worker) not in self._answers
                     or now - self._answers[(m, worker)][0] > INSPECT_TTL]
            if stale:
                inspect = self.app.control.inspect(
                    destination=[worker] if worker else None, timeout=self.timeout)
                found = list(self._pool.map(lambda m: getattr(inspect, m)() or {}, stale))
                for method, answer in zip(stale, found):
                    self._answers[(method, worker)] = (time.monotonic(), answer)
            return {m: self._answers[(m, worker)][1] for m in methods}

    def active_queue_names(self) -> dict[str, Any]:
        """The last ``active_queues`` answer, without asking (may be empty)."""
        return self._answers.get(("active_queues", None), (0.0, {}))[1]

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class Dashboard:
    """What the routes share: the app, the options, the store, the live feed."""

    def __init__(self, app: Celery, options: DashboardOptions, store: HistoryStore,
                 ingestor: Ingestor | None) -> None:
        self.app = app
        self.options = options
        self.store = store
        self.ingestor = ingestor
        self.inspector = InspectCache(app, options.inspect_timeout)
        self.counters = EventCounters()
        self._recent: dict[Hashable, tuple[float, Any]] = {}

    def start(self) -> None:
        """Start what runs beside the routes (the metrics' event counters)."""
        if self.ingestor is not None:
            self.counters.follow(self.ingestor)

    def stop(self) -> None:
        self.inspector.close()

    def sample_queues(self) -> dict[str, int]:
        """``{queue: messages}`` now, for the ingestor's queue-depth samples."""
        return {d["name"]: d["messages"] for d in self._queue_depths()}

    def redact(self, text: str) -> str:
        """``text`` without the app's credentials (a broker error names its URL)."""
        from ..utils.urls import redact
        from ..worker.main import app_secrets

        return redact(text, app_secrets(self.app))

    def ingest_stats(self) -> dict[str, Any]:
        return dict(getattr(self.ingestor, "stats", None) or {})

    def recent(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, or its value from under ``SUMMARY_TTL`` seconds ago: the
        overview, the metrics and every open page ask for the same summaries, each a
        scan of the history (tens of ms at 100,000 tasks) on the CPU ingest needs."""
        now = time.monotonic()
        found = self._recent.get(key)
        if found is not None and now - found[0] < SUMMARY_TTL:
            return found[1]
        value = compute()
        self._recent[key] = (now, value)
        return value

    def routes(self) -> list[Route]:
        get, post = ("GET",), ("POST",)
        table: list[tuple[str, Callable[[Request, Params], Any], tuple[str, ...]]] = [
            ("/healthcheck", lambda r, p: PlainTextResponse("OK"), get),
            ("/metrics", self.metrics, get),
            # Flower's API
            ("/api/workers", self.flower_workers, get),
            ("/api/tasks", self.flower_tasks, get),
            ("/api/task/types", lambda r, p: {"task-types": self.store.task_types()}, get),
            ("/api/task/info/{id}", self.flower_task_info, get),
            ("/api/task/result/{id}", self.flower_task_result, get),
            ("/api/queues/length", self.flower_queue_lengths, get),
            ("/api/task/async-apply/{name}", self.async_apply, post),
            ("/api/task/apply/{name}", self.apply, post),
            ("/api/task/send-task/{name}", self.send_task, post),
            ("/api/task/revoke/{id}", self.revoke, post),
            ("/api/task/rate-limit/{name}", self.rate_limit, post),
            ("/api/task/timeout/{name}", self.time_limit, post),
            ("/api/worker/shutdown/{name}", self.shutdown, post),
            ("/api/worker/pool/grow/{name}", self.pool_grow, post),
            ("/api/worker/pool/shrink/{name}", self.pool_shrink, post),
            ("/api/worker/pool/autoscale/{name}", self.autoscale, post),
            ("/api/worker/queue/add-consumer/{name}", self.add_consumer, post),
            ("/api/worker/queue/cancel-consumer/{name}", self.cancel_consumer, post),
            ("/api/worker/pool/restart/{name}", _not_here(
                "celeriac workers have no pool_restart command: restart the worker"), post),
            ("/api/task/abort/{id}", _not_here(
                "celeriac has no abortable tasks: POST /api/task/revoke/<id>?terminate=true "
                "stops a running task"), post),
            # the pages' own
            ("/api/dashboard/session", self.session, get),
            ("/api/dashboard/overview", self.overview, get),
            ("/api/dashboard/tasks", self.tasks, get),
            ("/api/dashboard/task/{id}", self.task, get),
            ("/api/dashboard/workers", self.workers, get),
            ("/api/dashboard/worker/{name}", self.worker, get),
            ("/api/dashboard/queues", self.queues, get),
            ("/api/dashboard/beat", self.beat, get),
            ("/api/dashboard/plots", self.plots, get),
            ("/api/task/retry/{id}", self.retry, post),
            ("/api/task/terminate/{id}", self.terminate, post),
            ("/api/queues/purge/{queue:path}", self.purge, post),
            ("/api/queues/dead-letters/requeue/{id:path}", self.requeue_dead_letter, post),
            ("/api/queues/dead-letters/delete/{id:path}", self.delete_dead_letter, post),
        ]
        routes = [Route(path, _endpoint(fn, self.redact), methods=list(methods))
                  for path, fn, methods in table]
        routes.append(Route("/api/dashboard/stream", self.stream, methods=["GET"]))
        return routes

    # -- Flower's reads ------------------------------------------------------------------
    def metrics(self, request: Request, params: Params) -> Response:
        text = render(self.store, self.counters, self.ingest_stats(),
                      counts=self.recent("counts", self.store.counts))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def flower_workers(self, request: Request, params: Params) -> Any:
        if _bool(params, "status"):
            return {w["hostname"]: bool(w.get("alive")) for w in self.store.workers()}
        name = params.get("workername") or None
        answers = self.inspector.get(WORKER_METHODS, refresh=_bool(params, "refresh"))
        now = time.time()
        found: dict[str, dict[str, Any]] = {}
        for method, by_node in answers.items():
            for node, answer in by_node.items():
                if answer is not None:
                    found.setdefault(node, {"timestamp": now})[method] = answer
        if name:
            if name not in found:
                raise ActionError(404, f"Unknown worker '{name}'")
            return {name: found[name]}
        return found

    def flower_tasks(self, request: Request, params: Params) -> Any:
        since = _received(params, "received_start")
        until = _received(params, "received_end")
        rows, _ = self.store.tasks(
            limit=_int(params, "limit", self.options.max_tasks) or self.options.max_tasks,
            offset=max(_int(params, "offset", 0), 0),
            state=_all_is_none(params.get("state")),
            name=_all_is_none(params.get("taskname")),
            worker=_all_is_none(params.get("workername")),
            since=since, until=until, search=params.get("search") or None,
            sort_by=params.get("sort_by") or "-timestamp")
        return {row["uuid"]: row for row in rows}

    def flower_task_info(self, request: Request, params: Params) -> Any:
        task_id = request.path_params["id"]
        row = self.store.task(task_id)
        if row is None:
            raise ActionError(404, f"Unknown task '{task_id}'")
        row.pop("events", None)
        return dict(row, **{"task-id": task_id})

    def flower_task_result(self, request: Request, params: Params) -> Any:
        if not self._has_backend():
            raise ActionError(503, "no result backend is configured (result_backend)")
        result = self.app.AsyncResult(request.path_params["id"])
        return actions.result_answer(result, _float(params, "timeout", None))

    def flower_queue_lengths(self, request: Request, params: Params) -> Any:
        return {"active_queues": [{"name": d["name"], "messages": d["messages"]}
                                  for d in self._queue_depths()]}

    def _queue_depths(self) -> list[dict[str, Any]]:
        names = queues.known_queues(self.app, self.inspector.active_queue_names() or None)
        return [asdict(d) for d in queues.queue_depths(self.app, names)]

    # -- Flower's actions ----------------------------------------------------------------
    def async_apply(self, request: Request, params: Params) -> Any:
        args, kwargs, options = _task_body(params)
        result = actions.apply_async(self.app, request.path_params["name"], args, kwargs,
                                     options)
        return self._sent(result)

    def apply(self, request: Request, params: Params) -> Any:
        args, kwargs, options = _task_body(params)
        options.pop("timeout", None)  # how long this route waits, not a send option
        result = actions.apply_async(self.app, request.path_params["name"], args, kwargs,
                                     options)
        # Flower waits without a limit; a dashboard thread must come back some day.
        return actions.result_answer(result, wait=_float(params, "timeout", 3600.0))

    def send_task(self, request: Request, params: Params) -> Any:
        args, kwargs, options = _task_body(params)
        return self._sent(actions.send_task(self.app, request.path_params["name"], args,
                                            kwargs, options))

    def _sent(self, result: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"task-id": result.id}
        if self._has_backend():
            answer["state"] = result.state
        return answer

    def _has_backend(self) -> bool:
        """Whether a result backend is configured (``result_backend``)."""
        from ..backends.disabled import DisabledBackend

        return not isinstance(self.app.backend, DisabledBackend)

    def revoke(self, request: Request, params: Params) -> Any:
        return self._revoke(request, params, terminate=_bool(params, "terminate"))

    def terminate(self, request: Request, params: Params) -> Any:
        return self._revoke(request, params, terminate=True)

    def _revoke(self, request: Request, params: Params, terminate: bool) -> dict[str, str]:
        return {"message": actions.revoke(self.app, request.path_params["id"],
                                          terminate=terminate,
                                          signal=params.get("signal") or "SIGTERM")}

    def rate_limit(self, request: Request, params: Params) -> Any:
        if "ratelimit" not in params:
            raise BadRequest("missing argument 'ratelimit' (e.g. 10/m; empty: no limit)")
        return {"message": actions.rate_limit(
            self.app, request.path_params["name"], params.get("ratelimit") or None,
            params.get("workername") or None, self.options.inspect_timeout)}

    def time_limit(self, request: Request, params: Params) -> Any:
        return {"message": actions.time_limit(
            self.app, request.path_params["name"], _float(params, "soft", None),
            _float(params, "hard", None), params.get("workername") or None,
            self.options.inspect_timeout)}

    def shutdown(self, request: Request, params: Params) -> Any:
        name = request.path_params["name"]
        if not self.app.control.ping(destination=[name], timeout=self.options.inspect_timeout):
            raise ActionError(404, f"Unknown worker '{name}' (it did not answer a ping)")
        return {"message": actions.shutdown(self.app, name)}

    def pool_grow(self, request: Request, params: Params) -> Any:
        return {"message": actions.pool_grow(self.app, request.path_params["name"],
                                             _int(params, "n", 1),
                                             self.options.inspect_timeout)}

    def pool_shrink(self, request: Request, params: Params) -> Any:
        return {"message": actions.pool_shrink(self.app, request.path_params["name"],
                                               _int(params, "n", 1),
                                               self.options.inspect_timeout)}

    def autoscale(self, request: Request, params: Params) -> Any:
        low, high = _int(params, "min", None), _int(params, "max", None)
        if low is None or high is None:
            raise BadRequest("autoscale needs both 'min' and 'max'")
        return {"message": actions.autoscale(self.app, request.path_params["name"], low,
                                             high, self.options.inspect_timeout)}

    def add_consumer(self, request: Request, params: Params) -> Any:
        return {"message": actions.add_consumer(self.app, request.path_params["name"],
                                                _required(params, "queue"),
                                                self.options.inspect_timeout)}

    def cancel_consumer(self, request: Request, params: Params) -> Any:
        return {"message": actions.cancel_consumer(self.app, request.path_params["name"],
                                                   _required(params, "queue"),
                                                   self.options.inspect_timeout)}

    # -- the pages' reads ----------------------------------------------------------------
    def session(self, request: Request, params: Params) -> Any:
        who = caller(request.state)
        can_act = self.options.can_act and who["user"] is not None
        return {"user": who["user"], "can_act": can_act, "read_only": not can_act,
                "csrf_token": who["csrf_token"], "url_prefix": self.options.url_prefix}

    def overview(self, request: Request, params: Params) -> Any:
        workers = self.store.workers()
        online = sum(1 for w in workers if w.get("alive"))
        return {"counts": self.recent("counts", self.store.counts),
                "workers_online": online, "workers_offline": len(workers) - online,
                "throughput": self.recent("hour", lambda: self.store.throughput(
                    time.time() - 3600)),
                "ingest": self.ingest_stats()}

    def tasks(self, request: Request, params: Params) -> Any:
        state = params.get("state") or None
        rows, total = self.store.tasks(
            limit=min(max(_int(params, "limit", 100), 1), 1000),
            offset=max(_int(params, "offset", 0), 0),
            state=state.split(",") if state and "," in state else state,
            name=params.get("name") or None, worker=params.get("worker") or None,
            since=_float(params, "since", None), until=_float(params, "until", None),
            search=params.get("search") or None,
            sort_by=params.get("sort_by") or "-timestamp")
        return {"total": total, "tasks": rows}

    def task(self, request: Request, params: Params) -> Any:
        task_id = request.path_params["id"]
        row = self.store.task(task_id)
        if row is None:
            raise ActionError(404, f"no task {task_id} in the history (it may have been "
                                   f"pruned, or its events never reached the dashboard)")
        row["parent"] = self._summary(row.get("parent_id"))
        row["root"] = self._summary(row.get("root_id")) if row.get("root_id") != task_id \
            else None
        canvas = self._canvas(row)
        if canvas is not None:
            row["canvas"] = canvas
        return row

    def _summary(self, task_id: str | None) -> dict[str, Any] | None:
        if not task_id:
            return None
        row = self.store.task(task_id)
        if row is None:
            return {"uuid": task_id, "name": None, "state": None}
        return {"uuid": task_id, "name": row.get("name"), "state": row.get("state")}

    def _canvas(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The group a task belongs to, with the members the store has seen."""
        group_id = row.get("group_id")
        if not group_id:
            return None
        members = self.store.group_members(group_id)
        if row["uuid"] not in members:
            members.append(row["uuid"])
        return {"group_id": group_id, "members": members}

    def workers(self, request: Request, params: Params) -> Any:
        answers = self.inspector.get(PAGE_METHODS, refresh=_bool(params, "refresh"))
        rows = [dict(w, **_inspected(w["hostname"], answers)) for w in self.store.workers()]
        known = {w["hostname"] for w in rows}
        for node in sorted(set(answers["stats"]) - known):  # answers, but sends no events
            stats = answers["stats"][node] or {}
            rows.append({"hostname": node, "alive": True, "status": "ONLINE",
                         "pid": stats.get("pid"), "sw_ident": stats.get("sw_ident"),
                         "events": False, **_inspected(node, answers)})
        return {"workers": rows}

    def worker(self, request: Request, params: Params) -> Any:
        name = request.path_params["name"]
        row = next((w for w in self.store.workers() if w["hostname"] == name), None)
        answers = self.inspector.get(DETAIL_METHODS, worker=name,
                                     refresh=_bool(params, "refresh"))
        if row is None and not answers["stats"]:
            raise ActionError(404, f"Unknown worker '{name}'")
        detail: dict[str, Any] = {"worker": row}
        for method in DETAIL_METHODS:
            detail[method] = answers[method].get(name)
        return detail

    def queues(self, request: Request, params: Params) -> Any:
        return {"queues": self._queue_depths(),
                "dead_letters": queues.dead_letters(self.app, _int(params, "limit", 100)),
                "series": self.store.queue_depth_series(time.time() - 3600)}

    def beat(self, request: Request, params: Params) -> Any:
        return beat_schedule(self.app)

    def plots(self, request: Request, params: Params) -> Any:
        now = time.time()
        since = _float(params, "since", None) or now - 3600
        bucket = max(10.0, round((now - since) / 120))  # about 120 points on any span
        name = params.get("name") or None
        return {"throughput": self.store.throughput(since, bucket),
                "runtimes": self.store.runtimes(name=name, since=since),
                "queue_depth": self.store.queue_depth_series(since)}

    # -- the pages' actions --------------------------------------------------------------
    def retry(self, request: Request, params: Params) -> Any:
        return actions.retry(self.app, self.store, request.path_params["id"])

    def purge(self, request: Request, params: Params) -> Any:
        queue = request.path_params["queue"]
        return {"queue": queue, "purged": actions.purge_queue(self.app, queue)}

    def requeue_dead_letter(self, request: Request, params: Params) -> Any:
        actions.requeue_dead_letter(self.app, request.path_params["id"])
        return {"requeued": request.path_params["id"]}

    def delete_dead_letter(self, request: Request, params: Params) -> Any:
        actions.delete_dead_letter(self.app, request.path_params["id"])
        return {"deleted": request.path_params["id"]}

    # -- live ----------------------------------------------------------------------------
    async def stream(self, request: Request) -> Response:
        subscribe = getattr(self.ingestor, "subscribe", None)
        subscription = subscribe() if callable(subscribe) else None
        return StreamingResponse(self._events(request, subscription),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    async def _events(self, request: Request, subscription: Any) -> AsyncIterator[str]:
        yield ": connected\n\n"  # so the browser's EventSource opens at once
        quiet_since = time.monotonic()
        try:
            while not await request.is_disconnected():
                # Polled, not waited on in a thread: open pages must not take the
                # thread pool that the other routes run in.
                await asyncio.sleep(STREAM_POLL)
                updates = subscription.get(0) if subscription is not None else []
                for update in updates:
                    kind = update.get("kind", "stats")
                    data = update.get(kind) if kind in ("task", "worker") else {
                        k: v for k, v in update.items() if k != "kind"}
                    yield f"event: {kind}\ndata: {json.dumps(data, default=repr)}\n\n"
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
        finally:
            close = getattr(subscription, "close", None)
            if callable(close):
                close()


def _not_here(why: str) -> Callable[[Request, Params], Any]:
    """A Flower route celeriac cannot serve: 501 with why, rather than a bare 404."""
    def refuse(request: Request, params: Params) -> Any:
        raise ActionError(501, why)

    return refuse


def _inspected(node: str, answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the workers page shows of a node's inspect answers (those it gave)."""
    found: dict[str, Any] = {}
    stats = answers["stats"].get(node)
    if isinstance(stats, dict):
        pool = stats.get("pool") or {}
        found["pool"] = pool.get("implementation")
        found["concurrency"] = pool.get("max-concurrency")
    if node in answers["active_queues"]:
        found["queues"] = [q.get("name") for q in answers["active_queues"][node] or []]
    if node in answers["active"]:
        found["active_tasks"] = len(answers["active"][node] or [])
    if node in answers["reserved"]:
        found["reserved_tasks"] = len(answers["reserved"][node] or [])
    return found


def _endpoint(fn: Callable[[Request, Params], Any],
              redact: Callable[[str], str]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            params = await _params(request)
            answer = await run_in_threadpool(fn, request, params)
        except ActionError as exc:
            return error(exc.status, exc.message)
        except BadRequest as exc:
            return error(400, str(exc))
        except ValueError as exc:  # the store's refusal of a filter or a sort
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - the broker or the store is away
            message = redact(f"{type(exc).__name__}: {exc}")
            logger.error("dashboard: %s %s failed: %s", request.method, request.url.path,
                         message)
            return error(503, f"{message} (is the broker or the history store down?)")
        return answer if isinstance(answer, Response) else JSON(answer)

    return endpoint


async def _params(request: Request) -> Params:
    """Query arguments, then the body's (a form, or a JSON object) over them."""
    params: Params = dict(request.query_params)
    if request.method not in ("POST", "PUT", "PATCH"):
        return params
    kind = request.headers.get("content-type", "")
    body = await request.body()
    if "application/x-www-form-urlencoded" in kind:
        # Parsed here: Starlette's form parser needs python-multipart, for this alone.
        params.update(parse_qsl(body.decode("utf-8", errors="replace"),
                                keep_blank_values=True))
        return params
    if "multipart/form-data" in kind:
        raise BadRequest("send arguments as a query string, a urlencoded form or JSON")
    if body.strip():
        try:
            found = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from exc
        if not isinstance(found, dict):
            raise BadRequest("the body must be a JSON object")
        params["_json"] = found
        params.update({k: v for k, v in found.items() if isinstance(k, str)})
    return params


def _task_body(params: Params) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``args``, ``kwargs`` and ``apply_async`` options of a Flower apply body."""
    body = dict(params.get("_json") or {})
    args = body.pop("args", [])
    kwargs = body.pop("kwargs", {})
    if not isinstance(args, (list, tuple)):
        raise BadRequest("args must be an array")
    if not isinstance(kwargs, dict):
        raise BadRequest("kwargs must be an object")
    return list(args), kwargs, body


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise BadRequest(f"missing argument '{name}'")
    return str(value)


def _number(params: Params, name: str, default: Any, kind: type, what: str) -> Any:
    """``kind(params[name])``, ``default`` when absent or empty; 400 when it does not parse."""
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"'{name}' must be {what}, not {value!r}") from exc


def _int(params: Params, name: str, default: Any) -> Any:
    return _number(params, name, default, int, "an integer")


def _float(params: Params, name: str, default: Any) -> Any:
    return _number(params, name, default, float, "a number")


def _bool(params: Params, name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _all_is_none(value: Any) -> Any:
    """Flower's filters take ``All`` for no filter."""
    return None if value in (None, "", "All") else value


def _received(params: Params, name: str) -> float | None:
    """Flower's ``%Y-%m-%d %H:%M`` (local time, as Flower reads it), or epoch seconds."""
    value = params.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.strptime(value, RECEIVED_FORMAT).timestamp()
    except ValueError as exc:
        raise BadRequest(f"'{name}' must look like 2024-01-31 13:45, not {value!r}") from exc
