"""``celeriac -A proj dashboard`` (alias ``flower``): the web dashboard and Flower's API.

Flower's options are taken in both spellings (``--basic-auth`` and ``--basic_auth``);
each may also come from an environment variable ``CELERIAC_DASHBOARD_<OPTION>``
(``CELERIAC_DASHBOARD_TOKEN``, ``CELERIAC_DASHBOARD_BASIC_AUTH``...). Flower's own
``FLOWER_*`` variables are not read: the command says so when one is set. Flower
options that have no meaning here are refused with why, never ignored.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ..dashboard.options import LOG_LEVELS

ENV = "CELERIAC_DASHBOARD_"
# Flower's options celeriac does not take, and why (said when one is given).
REFUSED = {
    "broker_api": "queue lengths come from the broker itself (RabbitMQ too): no "
                  "management API is needed",
    "auth": "OAuth is not supported: use --basic-auth or --token",
    "auth_provider": "OAuth is not supported: use --basic-auth or --token",
    "oauth2_key": "OAuth is not supported: use --basic-auth or --token",
    "oauth2_secret": "OAuth is not supported: use --basic-auth or --token",
    "oauth2_redirect_uri": "OAuth is not supported: use --basic-auth or --token",
    "cookie_secret": "no signed cookies are used (the CSRF cookie is random per browser)",
    "unix_socket": "listening on a Unix socket is not supported: use --address/--port",
    "max_workers": "offline workers are dropped with --purge-offline-workers instead",
    "state_save_interval": "history is written as events arrive (--db); there is no "
                           "state file to save",
    "xheaders": "X-Forwarded headers are not read: set --url-prefix behind a proxy",
    "tasks_columns": "the tasks page chooses its columns itself",
    "natural_time": "the pages show times in the browser's locale",
    "auto_refresh": "the pages always update live",
    "task_runtime_metric_buckets": "the runtime histogram has fixed buckets (see "
                                   "docs/dashboard-api.md)",
    "conf": "Flower's config file is not read: give options on the command line or as "
            "CELERIAC_DASHBOARD_* variables",
}


def _names(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    return [dashed, "--" + name] if "_" in name else [dashed]


def _refused(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise click.UsageError(f"--{param.name.replace('_', '-')} is not supported: "
                               f"{REFUSED[param.name or '']}")


def _with_refused(fn: Any) -> Any:
    for name in sorted(REFUSED):
        fn = click.option(*_names(name), name, expose_value=False, callback=_refused,
                          hidden=True, is_eager=True)(fn)
    return fn


def _persistent(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and str(value).strip().lower() in ("0", "false", "no", "off"):
        raise click.UsageError("--persistent=False is not supported: the history is "
                               "always kept on disk (--db)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(*_names("port"), "port", type=int, default=5555, show_default=True,
              envvar=ENV + "PORT", help="TCP port to listen on.")
@click.option(*_names("address"), "address", default="127.0.0.1", show_default=True,
              envvar=ENV + "ADDRESS",
              help="Address to listen on; a non-loopback one needs --basic-auth or --token.")
@click.option(*_names("url_prefix"), "url_prefix", default="", envvar=ENV + "URL_PREFIX",
              help="Serve everything under this path (behind a reverse proxy).")
@click.option(*_names("basic_auth"), "basic_auth", envvar=ENV + "BASIC_AUTH",
              help="user:password[,user2:password2]: HTTP basic auth for pages and API.")
@click.option("--token", envvar=ENV + "TOKEN",
              help="A secret for 'Authorization: Bearer <token>' (prefer the environment "
                   "variable CELERIAC_DASHBOARD_TOKEN: a command line is visible to ps).")
@click.option(*_names("max_tasks"), "max_tasks", type=int, default=100_000,
              show_default=True, envvar=ENV + "MAX_TASKS", help="Tasks kept in the history.")
@click.option(*_names("max_age"), "max_age", default="7d", show_default=True,
              envvar=ENV + "MAX_AGE",
              help="Oldest task kept: seconds, or 30m, 12h, 7d, 2w; 0: no age limit.")
@click.option("--db", envvar=ENV + "DB",
              help="History store: an SQLite path or sqlite:///path, or postgresql://... "
                   "(default: celeriac-dashboard.sqlite3 in the working directory).")
@click.option("--persistent", is_flag=False, flag_value="true", default=None,
              callback=_persistent, expose_value=False, metavar="[BOOL]",
              help="Accepted for Flower's sake: the history always persists (--db).")
@click.option(*_names("purge_offline_workers"), "purge_offline_workers", type=float,
              envvar=ENV + "PURGE_OFFLINE_WORKERS",
              help="Forget workers offline for this many seconds.")
@click.option(*_names("read_only"), "read_only", is_flag=True, envvar=ENV + "READ_ONLY",
              help="Refuse every action (revoke, retry, pool, purge...), even to users.")
@click.option(*_names("inspect_timeout"), "inspect_timeout", type=float, default=1000.0,
              show_default=True, envvar=ENV + "INSPECT_TIMEOUT",
              help="How long to wait for workers' inspect replies, in milliseconds "
                   "(Flower's unit).")
@click.option("--enable-events/--no-enable-events", "--enable_events/--no_enable_events",
              "enable_events", default=True, show_default=True, envvar=ENV + "ENABLE_EVENTS",
              help="Ask the workers to send events (at start and every minute).")
@click.option(*_names("metrics_public"), "metrics_public", is_flag=True,
              envvar=ENV + "METRICS_PUBLIC",
              help="Serve /metrics without credentials (for a Prometheus scraper).")
@click.option("--certfile", envvar=ENV + "CERTFILE", type=click.Path(dir_okay=False),
              help="TLS certificate (PEM); with --keyfile the dashboard serves HTTPS.")
@click.option("--keyfile", envvar=ENV + "KEYFILE", type=click.Path(dir_okay=False),
              help="TLS private key (PEM) for --certfile.")
@click.option("-l", "--loglevel", "--logging", "loglevel", default="warning",
              show_default=True, envvar=ENV + "LOGLEVEL",
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Log level (info also logs each request line; never a header).")
@_with_refused
@click.pass_obj
def dashboard(obj: Any, port: int, address: str, url_prefix: str, basic_auth: str | None,
              token: str | None, max_tasks: int, max_age: str, db: str | None,
              purge_offline_workers: float | None, read_only: bool, inspect_timeout: float,
              enable_events: bool, metrics_public: bool, certfile: str | None,
              keyfile: str | None, loglevel: str) -> None:
    """The web dashboard: workers, tasks, queues, beat; Flower's HTTP API and /metrics.

    The task history is always kept on disk (--db), bounded by --max-tasks and
    --max-age, so a restarted dashboard still shows earlier tasks. Without --basic-auth
    or --token it listens on loopback only and is read-only.
    """
    from ..dashboard import require_extra
    from ..dashboard.options import DashboardOptions, OptionsError, parse_basic_auth, \
        parse_duration

    try:
        require_extra()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    _warn_flower_env()
    try:
        options = DashboardOptions(
            port=port, address=address, url_prefix=url_prefix,
            basic_auth=parse_basic_auth(basic_auth) if basic_auth else [],
            token=token or None, max_tasks=max_tasks, max_age=parse_duration(max_age),
            db=db, purge_offline_workers=purge_offline_workers, read_only=read_only,
            inspect_timeout=inspect_timeout / 1000.0, metrics_public=metrics_public,
            enable_events=enable_events, certfile=certfile, keyfile=keyfile,
            log_level=loglevel).check()
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from exc
    from ..dashboard.server import BrokerUnreachable, serve

    app = obj.app
    try:
        serve(app, options, say=click.echo)
    except (BrokerUnreachable, ValueError) as exc:  # no broker; a --db of no known kind
        raise obj.error(exc) from exc


def _warn_flower_env() -> None:
    flower = sorted(name for name in os.environ if name.startswith("FLOWER_"))
    for name in flower:
        ours = ENV + name[len("FLOWER_"):]
        click.echo(f"celeriac dashboard: {name} is not read (Flower's variable); "
                   f"set {ours} instead", err=True)
