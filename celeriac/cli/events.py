"""``celeriac -A proj events``: the event stream of the workers, printed live.

``--dump`` prints every event on one line, as ``celery events --dump`` does. Celery's
curses monitor (plain ``celery events``) is not provided: plain ``celeriac events``
says so and prints what ``--dump`` prints. Nor are snapshot cameras (``--camera``,
with ``-F``/``--frequency`` and ``-r``/``--maxrate``): those options are refused,
with why, rather than accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import click

_NO_CAMERA = ("celeriac events has no snapshot cameras: --camera, -F/--frequency and "
              "-r/--maxrate are not supported (build one on celeriac.events.State and "
              "app.events.Receiver)")


@click.command()
@click.option("-d", "--dump", is_flag=True, help="Print every event as it comes, one a line.")
@click.option("-c", "--camera", help="Not supported: snapshot cameras (refused).")
@click.option("-F", "--frequency", "--freq", "frequency", type=float,
              help="Not supported: a camera's shutter frequency (refused).")
@click.option("-r", "--maxrate", help="Not supported: a camera's rate limit (refused).")
@click.pass_obj
def events(obj: Any, dump: bool, camera: str | None, frequency: float | None,
           maxrate: str | None) -> None:
    """Print the workers' events (worker and task events) as they happen."""
    if camera is not None or frequency is not None or maxrate is not None:
        raise click.UsageError(_NO_CAMERA)
    from ..events.dumper import evdump

    if not dump:
        click.echo("celeriac events: the curses monitor is not provided; printing every "
                   "event as --dump does", err=True)
    try:
        evdump(obj.app)
    except Exception as exc:  # a broker that cannot be reached, a transport without fanout
        raise obj.error(exc) from exc
