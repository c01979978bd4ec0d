"""The dashboard: Flower's job, in the box (``celeriac -A proj dashboard``, alias
``flower``; extra ``celeriac[dashboard]``).

Who owns what (one job per module):

- ``options``   the command-line options, checked (loopback rule, auth), as one value
- ``store``     the history store: every task event folded into task rows, kept on
                disk (SQLite by default, PostgreSQL), bounded by count and age
- ``ingest``    the thread that listens to the event stream and feeds the store in
                batches; backfills from the result backend; tells live pages what moved
- ``queues``    queue depths (per priority, delayed, unacked) and dead letters
- ``beat``      the beat schedule as a page shows it (entries, last/next run, leader)
- ``actions``   what a user may do (retry, revoke, rate limit, pool, consumers...),
                shared by the HTTP API and the pages
- ``security``  basic auth, bearer token, CSRF and read-only, as ASGI middleware
- ``metrics``   Prometheus ``/metrics``
- ``api``       Flower's HTTP API and the pages' own JSON (``/api/dashboard/...``)
- ``server``    the ASGI app put together, and running it
- ``static/``   the pages: plain HTML, CSS and JavaScript, no build step
"""

from __future__ import annotations

EXTRA = "celeriac[dashboard]"


def require_extra() -> None:
    """Fail with the extra to install when the web server's packages are missing."""
    missing = []
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RuntimeError(
            f"the dashboard needs {' and '.join(missing)}: pip install '{EXTRA}'")
