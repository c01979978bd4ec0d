"""The dashboard's ASGI app put together (``build_app``), and running it (``serve``).

``serve`` starts, in this order: the history store, the ingestor (events into the
store; its chores sample queue depths and keep events enabled on the workers), then
uvicorn; it stops them in reverse when uvicorn returns (SIGINT or SIGTERM).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import require_extra
from .options import DashboardOptions

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..app import Celery
    from .ingest import Ingestor
    from .store import HistoryStore

STATIC = Path(__file__).parent / "static"
PAGES = ("/", "/tasks", "/task/{id}", "/worker/{name}", "/queues", "/beat", "/plots")


def build_app(app: Celery, options: DashboardOptions, store: HistoryStore | None = None,
              ingestor: Ingestor | None = None) -> Starlette:
    """The Starlette app: the API, the pages and their static files under
    ``options.url_prefix``, behind the security middleware.

    Args:
        store: the history store (default: ``HistoryStore.open(options.db, ...)``,
            closed with the app).
        ingestor: the live feed for ``/api/dashboard/stream`` and ``/metrics``' event
            counters (None: no live updates).
    """
    require_extra()
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .api import Dashboard
    from .security import SecurityMiddleware

    options.check()
    owned = store is None
    if store is None:
        store = open_store(options)
    dashboard = Dashboard(app, options, store, ingestor)

    async def page(request: Any) -> Any:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    routes: list[Any] = [*dashboard.routes(),
                         *(Route(path, page, methods=["GET"]) for path in PAGES),
                         Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False),
                               name="static")]
    prefix = options.url_prefix
    if prefix:
        async def to_prefix(request: Any) -> Any:
            return RedirectResponse(f"{prefix}/")

        routes = [Route(prefix, to_prefix), Mount(prefix, routes=routes)]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        dashboard.start()
        try:
            yield
        finally:
            dashboard.stop()
            if owned:
                store.close()

    web = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(SecurityMiddleware, options=options)])
    web.state.dashboard = dashboard
    return web


def open_store(options: DashboardOptions) -> HistoryStore:
    """The history store ``options`` name (``--db``, ``--max-tasks``, ``--max-age``)."""
    from .store import HistoryStore

    return HistoryStore.open(options.db, max_tasks=options.max_tasks,
                             max_age=options.max_age)


class BrokerUnreachable(RuntimeError):
    """The broker did not answer at start; the message is one line."""


def check_broker(app: Celery) -> None:
    """One round trip to the broker, so an unreachable one fails at start, not later
    in a thread.

    Raises:
        BrokerUnreachable: with the broker's URL (password masked) and its error.
    """
    from ..utils.urls import mask_password

    try:
        app.producer_broker().size(app.conf.task_default_queue)
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BrokerUnreachable(f"cannot reach the broker {mask_password(app.broker_url)}: "
                                f"{type(exc).__name__}: {first}") from exc


def serve(app: Celery, options: DashboardOptions,
          say: Callable[[str], Any] = print) -> None:
    """Run the dashboard until SIGINT or SIGTERM; ``say`` prints the start lines
    (never a credential)."""
    require_extra()
    import uvicorn

    from .ingest import Ingestor

    options.check()
    logging.basicConfig(level=options.log_level.upper(),
                        format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    check_broker(app)
    store = open_store(options)
    try:
        # The sampler is called from the ingestor's chores thread, once the app exists.
        ingestor = Ingestor(app, store, purge_offline_workers=options.purge_offline_workers,
                            enable_events=options.enable_events,
                            queue_sampler=lambda: web.state.dashboard.sample_queues())
        web = build_app(app, options, store=store, ingestor=ingestor)
        ingestor.start()
        try:
            for line in start_lines(options, store.url):
                say(line)
            config = uvicorn.Config(web, host=options.address, port=options.port,
                                    log_level=options.log_level,
                                    # request lines (never headers) from info down
                                    access_log=options.log_level in ("debug", "info"),
                                    ssl_certfile=options.certfile,
                                    ssl_keyfile=options.keyfile, lifespan="on")
            _run_until_signal(uvicorn.Server(config))
        finally:
            ingestor.stop()
    finally:
        store.close()


class _Stopped(Exception):
    """SIGTERM, raised where the main thread is so the stops below it run."""


def _run_until_signal(server: Any) -> None:
    """Run uvicorn; a SIGINT or SIGTERM stops it and returns here.

    uvicorn shuts down on either signal and then raises it again for the handler that
    was there before: a Python one (this) so that the process does not die before the
    ingestor is stopped and the store closed.
    """
    def stop(signum: int, frame: Any) -> None:
        raise _Stopped()

    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        server.run()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, before)


def start_lines(options: DashboardOptions, store_url: str) -> list[str]:
    """What the command says when it starts: where, who may enter, what is kept."""
    if options.basic_auth and options.token:
        auth = "basic auth and bearer token"
    elif options.basic_auth:
        auth = f"basic auth ({len(options.basic_auth)} user(s))"
    elif options.token:
        auth = "bearer token"
    else:
        auth = "off: loopback only, actions disabled (add --basic-auth or --token)"
    mode = "read-only (--read-only)" if options.read_only else (
        "actions enabled" if options.auth_enabled else "read-only (no credentials)")
    age = f"{options.max_age:g} s" if options.max_age else "no age limit"
    return [f"celeriac dashboard on {options.url()}",
            f"  auth: {auth}",
            f"  mode: {mode}",
            f"  history: {store_url} "
            f"(max {options.max_tasks} tasks, {age})"]
