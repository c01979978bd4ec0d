"""``celeriac inspect``, ``control`` and ``status``: Celery's commands, output and exit
codes (69, "unavailable", when no worker answered)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

#: sysexits' EX_UNAVAILABLE, what Celery exits with when no node replied
EX_UNAVAILABLE = 69
NO_REPLY = "No nodes replied within time constraint"


def _destination(value: str | None) -> list[str] | None:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    return names or None


def _indent(text: str, by: int) -> str:
    pad = " " * by
    return "\n".join(pad + line for line in text.splitlines())


def pretty(reply: Any) -> tuple[str, str]:
    """``(OK or ERROR, body)`` the way Celery's CLI prints one node's answer."""
    if isinstance(reply, list):
        return "OK", "\n".join(f"* {item}" for item in reply) if reply else "- empty -"
    if isinstance(reply, dict):
        if "ok" in reply:
            return "OK", _indent(pretty(reply["ok"])[1], 4)
        if "error" in reply:
            return "ERROR", _indent(pretty(reply["error"])[1], 4)
        return "OK", json.dumps(reply, sort_keys=True, indent=4, default=repr)
    return "OK", str(reply)


def _say(show_body: bool) -> Callable[[dict[str, Any]], None]:
    def say(answer: dict[str, Any]) -> None:
        node = next(iter(answer))
        status, body = pretty(answer[node])
        click.echo(f"->  {node}: {status}")
        if show_body and body:
            click.echo(_indent(body, 4))

    return say


def _no_reply() -> None:
    click.echo(f"Error: {NO_REPLY}", err=True)
    sys.exit(EX_UNAVAILABLE)


def _online(count: int) -> None:
    click.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")


def _commands(kind: str) -> dict[str, Any]:
    from ..control.commands import COMMANDS

    return {name: c for name, c in sorted(COMMANDS.items())
            if c.kind == kind and name != "hello"}


def _list_and_exit(kind: str) -> Callable[[click.Context, Any, bool], None]:
    def show(ctx: click.Context, param: Any, value: bool) -> None:
        if not value:
            return
        for name, cmd in _commands(kind).items():
            click.echo(f"  {name + ' ' + cmd.signature if cmd.signature else name:40} "
                       f"{cmd.help}")
        ctx.exit()

    return show


def _arguments(kind: str, name: str, words: list[str]) -> dict[str, Any]:
    known = _commands(kind)
    if name not in known:
        raise click.UsageError(f"Command {name} not recognized. Available {kind} commands: "
                               f"{', '.join(known)}")
    cmd = known[name]
    arguments: dict[str, Any] = {}
    words = list(words)
    for argname, convert in cmd.args:
        if not words:
            break
        word = words.pop(0)
        try:
            arguments[argname] = convert(word)
        except ValueError as exc:
            raise click.UsageError(f"{name}: bad value {word!r} for {argname}: {exc}") from exc
    if cmd.variadic:
        arguments[cmd.variadic] = words
    elif words:
        raise click.UsageError(f"Command {name!r} takes arguments: {cmd.signature or 'none'}")
    return arguments


_timeout = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                        help="Seconds to wait for replies.")
_dest = click.option("-d", "--destination",
                     help="Comma separated list of destination node names.")
_json = click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")


def _run(obj: Any, call: Callable[[], Any]) -> Any:
    from ..exceptions import CeleriacError

    try:
        return call()
    except CeleriacError as exc:
        raise obj.error(exc) from exc
    except (ConnectionError, OSError) as exc:
        raise click.ClickException(f"cannot reach the broker: {exc}") from exc


def _remote_command(kind: str) -> Callable[[Callable[..., Any]], Any]:
    """The options ``inspect`` and ``control`` share: COMMAND, its words, --list, -t, -d, -j."""
    def decorate(fn: Callable[..., Any]) -> Any:
        for option in (click.pass_context, _json, _dest, _timeout,
                       click.option("--list", is_flag=True, expose_value=False,
                                    is_eager=True, callback=_list_and_exit(kind),
                                    help=f"List the {kind} commands and exit."),
                       click.argument("command")):
            fn = option(fn)
        return click.command(context_settings={"allow_extra_args": True,
                                               "ignore_unknown_options": True})(fn)

    return decorate


@_remote_command("inspect")
def inspect(ctx: click.Context, command: str, timeout: float, destination: str | None,
            as_json: bool) -> None:
    """Ask the workers with the COMMAND inspect command (ping, active, stats, ...)."""
    obj = ctx.obj
    arguments = _arguments("inspect", command, ctx.args)
    insp = obj.app.control.inspect(timeout=timeout, destination=_destination(destination),
                                   callback=None if as_json else _say(True))
    replies = _run(obj, lambda: insp._request(command, **arguments))
    if not replies:
        _no_reply()
    if as_json:
        click.echo(json.dumps(replies, default=repr))
        return
    _online(len(replies))


@_remote_command("control")
def control(ctx: click.Context, command: str, timeout: float, destination: str | None,
            as_json: bool) -> None:
    """Send the COMMAND control command to the workers (rate_limit, shutdown, ...)."""
    obj = ctx.obj
    arguments = _arguments("control", command, ctx.args)
    replies = _run(obj, lambda: obj.app.control.broadcast(
        command, arguments, destination=_destination(destination), reply=True,
        timeout=timeout, callback=None if as_json else _say(True)))
    if not replies:
        _no_reply()
    if as_json:
        click.echo(json.dumps(replies, default=repr))


@click.command()
@_timeout
@_dest
@_json
@click.pass_obj
def status(obj: Any, timeout: float, destination: str | None, as_json: bool) -> None:
    """Show the workers that are online."""
    insp = obj.app.control.inspect(timeout=timeout, destination=_destination(destination),
                                   callback=None if as_json else _say(False))
    replies = _run(obj, insp.ping)
    if not replies:
        _no_reply()
    if as_json:
        click.echo(json.dumps(replies))
    _online(len(replies))
