"""``celeriac multi``: start, stop and restart several detached workers, as ``celery multi``.

Examples::

    $ celeriac multi start 3 -A proj -l INFO -c 4      # celery1@host .. celery3@host
    $ celeriac multi start image video -A proj -c 3 -c:image 10
    $ celeriac multi start 5 -A proj -Q:1-3 images,video -Q:4,5 data -Q default
    $ celeriac multi show 3 -A proj --pidfile=/var/run/celeriac/%n.pid
    $ celeriac multi stopwait 3 --pidfile=/var/run/celeriac/%n.pid

A single number names that many nodes (``celery1``... or ``--range-prefix``); other
names are taken as they are (``w1``, or ``w1@%h`` with the host part given). Options
after the names go to every worker; ``-c:w1 4`` (also ``-c:1``, ``-c:1-3``,
``-c:w1,w2``) to some only. Each node gets ``-n <name>``, ``--pidfile`` (default
``%n.pid``) and ``--logfile`` (default ``%n%I.log``); ``%n`` (the node's short name),
``%h`` (host), ``%d`` (domain) and ``%p`` (full node name) expand in every value, and
``%i``/``%I`` are left for the worker (one log file per pool process). ``-A``, ``-b``,
``--result-backend``, ``--config`` and ``--workdir`` go before ``worker`` on the node's
command line; options ``multi`` does not know are passed through as given.

Unlike Celery's multi, ``%h`` is the host (as in Celery's documentation and in
``celeriac worker -f``), not the full node name; that is ``%p``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

import click

from .. import __version__
from ..utils.daemon import Pidfile, pid_alive

__all__ = ["MultiTool", "Node", "ParsedArgs", "parse_args", "build_nodes", "expand",
           "multi"]

USAGE = """\
usage: {prog} start <node1 node2 nodeN|range> [worker options]
       {prog} stop <n1 n2 nN|range> [-SIG (default: -TERM)]
       {prog} stopwait <n1 n2 nN|range> [-SIG (default: -TERM)]
       {prog} restart <n1 n2 nN|range> [-SIG] [worker options]
       {prog} kill <n1 n2 nN|range>

       {prog} show <n1 n2 nN|range> [worker options]
       {prog} get hostname <n1 n2 nN|range> [worker options]
       {prog} names <n1 n2 nN|range>
       {prog} expand template <n1 n2 nN|range>
       {prog} help

additional options (after the command name):

    * --nosplash:   Don't print the program's name and version.
    * --quiet, -q:  Print less.
    * --verbose:    Print the command line of each worker started.
    * --no-color:   Accepted for Celery's sake (the output has no colours).
"""

#: the program's options: on a node's command line they go before ``worker``
GLOBAL_OPTIONS = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--config",
                            "--workdir"})
#: what multi itself reads; never passed to a worker
OWN_OPTIONS = frozenset({"--cmd", "--append", "--hostname", "-n", "--prefix", "--suffix",
                         "--range-prefix", "--executable"})
#: options that take a value even when the worker does not say so (the above)
VALUE_OPTIONS = GLOBAL_OPTIONS | OWN_OPTIONS | {"--pidfile", "--logfile", "-f"}
RESERVED = {"--nosplash": "nosplash", "--quiet": "quiet", "-q": "quiet",
            "--verbose": "verbose", "--no-color": "no_color"}

DEFAULT_PIDFILE = "%n.pid"
DEFAULT_LOGFILE = "%n%I.log"
DEFAULT_RANGE_PREFIX = "celery"
#: seconds between two looks at the nodes ``stopwait`` waits for
POLL_INTERVAL = 0.1

Options = dict[str, "str | None"]


# -- parsing ---------------------------------------------------------------------------
@dataclass
class ParsedArgs:
    """Names, options for all nodes, options per namespace, what follows ``--``."""

    names: list[str] = field(default_factory=list)
    options: Options = field(default_factory=dict)
    namespaces: dict[str, Options] = field(default_factory=dict)
    passthrough: list[str] = field(default_factory=list)
    signal: int | None = None


def _signal_number(name: str) -> int | None:
    """``-9``, ``-KILL``, ``-SIGKILL``: a signal; anything else is not."""
    if name.isdigit():
        return int(name)
    if not name.isupper():
        return None
    number = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    return int(number) if isinstance(number, signal.Signals) else None


def parse_args(argv: Sequence[str], takes_value: Callable[[str], bool | None]
               = lambda opt: None) -> ParsedArgs:
    """Read multi's arguments as Celery's multi does.

    ``takes_value(option)`` says whether an option takes a value (True), is a flag
    (False) or is unknown (None). An unknown long option has a value only with ``=``;
    an unknown short one takes the next word unless that starts with ``-``. A known
    option takes the next word either way (``--logfile /x`` as ``--logfile=/x``).
    """
    parsed = ParsedArgs()
    args = list(argv)
    pos = 0
    while pos < len(args):
        arg = args[pos]
        pos += 1
        if arg == "--":  # the rest goes to every worker as it is, "--" included
            parsed.passthrough = args[pos - 1:]
            break
        if not arg.startswith("-") or arg == "-":
            parsed.names.append(arg)
            continue
        opt, eq, value = arg.partition("=")
        has_value = bool(eq)
        opt, colon, namespace = opt.partition(":")
        if not opt.startswith("--") and not colon and (sig := _signal_number(opt[1:])):
            parsed.signal = sig
            continue
        if not has_value:
            known = takes_value(opt) if opt not in VALUE_OPTIONS else True
            following = args[pos] if pos < len(args) else None
            if following is not None and (
                    known or (known is None and not opt.startswith("--")
                              and not following.startswith("-"))):
                value, has_value = following, True
                pos += 1
        target = parsed.namespaces.setdefault(namespace, {}) if colon else parsed.options
        target[opt] = value if has_value else None
    return parsed


# -- node names ------------------------------------------------------------------------
_KEY = re.compile(r"%([%\w])")


def expand(template: str, nodename: str, keep: Iterable[str] = ()) -> str:
    """Expand ``%n`` (short name), ``%h`` (host), ``%d`` (domain), ``%p`` (node name),
    ``%i`` (``0``), ``%I`` (nothing) and ``%%`` in ``template`` for node ``nodename``.

    Letters in ``keep`` are left as they are (for the worker to expand); so is an
    unknown letter.
    """
    short, at, host = nodename.partition("@")
    if not at:
        host = socket.gethostname()
    domain = host.partition(".")[2]
    keys = {"n": short, "N": short, "h": host, "d": domain, "p": nodename, "i": "0",
            "I": "", "%": "%"}
    for letter in keep:
        keys.pop(letter, None)

    def one(match: re.Match[str]) -> str:
        return keys.get(match.group(1), match.group(0))

    return _KEY.sub(one, template)


def host_format(template: str) -> str:
    """``%h``, ``%n`` and ``%d`` of this machine in a node or host name (``w1@%h``)."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    return template.replace("%h", host).replace("%n", name).replace("%d", domain)


def _namespace_keys(key: str) -> list[str]:
    """``1-3`` -> 1, 2, 3; ``a,b`` -> a, b; ``2,5-6`` -> 2, 5, 6."""
    keys: list[str] = []
    for part in key.split(","):
        start, dash, stop = part.partition("-")
        if dash and start.isdigit() and stop.isdigit():
            keys.extend(str(n) for n in range(int(start), int(stop) + 1))
        elif part:
            keys.append(part)
    return keys


@dataclass
class Node:
    """One worker of the cluster: its name and the command line that starts it."""

    name: str
    options: Options
    globals: Options
    passthrough: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=lambda: ["-m", "celeriac", "worker", "--detach"])
    append: list[str] = field(default_factory=list)
    executable: str = sys.executable

    @property
    def workdir(self) -> str | None:
        value = self.globals.get("--workdir")
        return self.expand(value) if value else None

    def expand(self, template: str) -> str:
        return expand(template, self.name)

    def _path(self, option: str, *aliases: str) -> str:
        value = next(self.options[o] for o in (option, *aliases) if o in self.options)
        path = self.expand(value or "")
        return os.path.join(self.workdir, path) if self.workdir else path

    @property
    def pidfile(self) -> str:
        """The pidfile as multi finds it (from its own working directory)."""
        return self._path("--pidfile")

    @property
    def logfile(self) -> str:
        return self._path("--logfile", "-f")

    @property
    def argv(self) -> list[str]:
        """The node's command line, without the Python executable."""
        for_worker = ("i", "I", "%")

        def words(options: Options) -> list[str]:
            out: list[str] = []
            for opt, value in options.items():
                if value is None:
                    out.append(opt)
                elif opt.startswith("--"):
                    out.append(f"{opt}={expand(value, self.name, for_worker)}")
                else:
                    out.extend((opt, expand(value, self.name, for_worker)))
            return out

        cmd = [expand(word, self.name, for_worker) for word in self.cmd]
        # the program's options before the sub-command, where Celery 5 wants them
        at = next((i + 1 for i, word in enumerate(cmd) if word in ("celeriac", "celery")), 0)
        return [*cmd[:at], *words(self.globals), *cmd[at:], *words(self.options),
                *self.passthrough, *[expand(word, self.name, for_worker)
                                     for word in self.append]]

    @property
    def argv_with_executable(self) -> list[str]:
        return [self.executable, *self.argv]

    def pid(self) -> int | None:
        """The pid in the node's pidfile; None when there is none (or it is broken)."""
        try:
            return Pidfile(self.pidfile).read_pid()
        except ValueError:
            return None


def build_nodes(parsed: ParsedArgs, default_globals: Options | None = None) -> list[Node]:
    """The nodes named by ``parsed``, with their options, as Celery's multi makes them.

    Raises:
        click.UsageError: an option names a node index that does not exist.
    """
    options = dict(parsed.options)
    cmd = shlex.split(options.pop("--cmd", None) or "-m celeriac worker --detach")
    append = shlex.split(options.pop("--append", None) or "")
    long_host, short_host = options.pop("--hostname", None), options.pop("-n", None)
    hostname = host_format(long_host or short_host or socket.gethostname())
    prefix = options.pop("--prefix", None) or ""
    suffix = options.pop("--suffix", None) or hostname
    suffix = "" if suffix in ('""', "''") else suffix
    range_prefix = options.pop("--range-prefix", None) or DEFAULT_RANGE_PREFIX
    executable = options.pop("--executable", None) or sys.executable

    names = list(parsed.names)
    if len(names) == 1 and names[0].isdigit():
        names = [str(n) for n in range(1, int(names[0]) + 1)]
        prefix = range_prefix

    namespaces: dict[str, Options] = {}
    for key, opts in parsed.namespaces.items():
        for one in _namespace_keys(key):
            if one.isdigit() and one not in names:  # an index: 1 is the first name
                index = int(one)
                if index < 1:
                    raise click.UsageError(f"node indexes start at 1, not {one}")
                if index > len(names):
                    raise click.UsageError(f"no node at index {one} (there are "
                                           f"{len(names)})")
                one = names[index - 1]
            namespaces.setdefault(one, {}).update(opts)

    nodes = []
    for name in names:
        if "@" in name:
            nodename = host_format(name)
            key = name.partition("@")[0]
        else:
            key = name
            short = f"{prefix}{name}"
            nodename = f"{short}@{suffix}" if suffix else short
        merged: Options = dict(options)
        for ns in (key, name, nodename):
            merged.update(namespaces.get(ns, {}))
        merged.pop("--hostname", None)
        merged.pop("-n", None)
        globals_: Options = dict(default_globals or {})
        for opt in [o for o in merged if o in GLOBAL_OPTIONS]:
            globals_[opt] = merged.pop(opt)
        node_options: Options = {"-n": nodename}
        node_options["--pidfile"] = merged.pop("--pidfile", None) or DEFAULT_PIDFILE
        if "-f" in merged:
            node_options["--logfile"] = merged.pop("-f") or DEFAULT_LOGFILE
        else:
            node_options["--logfile"] = merged.pop("--logfile", None) or DEFAULT_LOGFILE
        node_options.update(merged)
        nodes.append(Node(nodename, node_options, globals_, list(parsed.passthrough),
                          cmd, append, executable))
    return nodes


# -- the program -----------------------------------------------------------------------
class MultiTool:
    """``celeriac multi``: each command returns the program's exit code.

    Args:
        default_globals: ``-A``... given before ``multi`` (``celeriac -A proj multi``).
        takes_value: whether a worker option takes a value (see ``parse_args``).
    """

    def __init__(self, default_globals: Options | None = None,
                 takes_value: Callable[[str], bool | None] = lambda opt: None,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 env: dict[str, str] | None = None, prog: str = "celeriac multi") -> None:
        self.default_globals = dict(default_globals or {})
        self.takes_value = takes_value
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.env = env
        self.prog = prog
        self.nosplash = self.quiet = self.verbose = self.no_color = False
        self.commands: dict[str, Callable[[list[str]], int]] = {
            "start": self.start, "stop": self.stop, "stopwait": self.stopwait,
            "stop_verify": self.stopwait, "restart": self.restart, "kill": self.kill,
            "show": self.show, "names": self.names, "get": self.get,
            "expand": self.expand, "help": self.help,
        }

    # -- output ----------------------------------------------------------------------
    def say(self, text: str, newline: bool = True) -> None:
        self.stdout.write(text + ("\n" if newline else ""))
        self.stdout.flush()

    def note(self, text: str, newline: bool = True) -> None:
        if not self.quiet:
            self.say(text, newline)

    def carp(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def splash(self) -> None:
        if not self.nosplash:
            self.note(f"celeriac multi v{__version__}")

    def usage(self) -> None:
        self.say(USAGE.format(prog=self.prog))

    # -- entry -----------------------------------------------------------------------
    def run(self, argv: Sequence[str]) -> int:
        args = []
        for arg in argv:
            if arg in RESERVED:
                setattr(self, RESERVED[arg], True)
            else:
                args.append(arg)
        if args and args[0] in ("-h", "--help"):
            return self.help([])
        if not args or args[0].startswith("-"):
            self.splash()
            self.usage()
            return 1
        command = self.commands.get(args[0])
        if command is None:
            self.carp(f"Invalid command: {args[0]}")
            self.usage()
            return 1
        try:
            return command(args[1:])
        except click.UsageError as exc:
            self.carp(f"Error: {exc.message}")
            return 2

    def parse(self, argv: Sequence[str]) -> tuple[ParsedArgs, list[Node]]:
        parsed = parse_args(argv, self.takes_value)
        return parsed, build_nodes(parsed, self.default_globals)

    # -- commands --------------------------------------------------------------------
    def start(self, argv: list[str]) -> int:
        _, nodes = self.parse(argv)
        self.splash()
        self.note("> Starting nodes...")
        return int(any([self.start_node(node) for node in nodes]))

    def start_node(self, node: Node, restarting: bool = False) -> int:
        if restarting:
            self.note(f"> Restarting node {node.name}: ", newline=False)
        else:
            self.note(f"\t> {node.name}: ", newline=False)
        for path in (node.pidfile, node.logfile):
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
        argv = node.argv_with_executable
        if self.verbose:
            self.say(f"\n  {shlex.join(argv)}")
        try:
            code = subprocess.call(argv, env=self.env)
        except OSError as exc:
            self.note("FAILED")
            self.carp(f"* Cannot run {node.executable}: {exc.strerror or exc}")
            return 1
        self.note("FAILED" if code else "OK")
        if code < 0:
            self.note(f"* Child was terminated by signal {-code}")
        elif code:
            self.note(f"* Child terminated with exit code {code}")
        return 1 if code else 0

    def stop(self, argv: list[str]) -> int:
        parsed, nodes = self.parse(argv)
        self.splash()
        for _ in self._stop(nodes, parsed.signal or signal.SIGTERM, wait=False):
            pass
        return 0

    def stopwait(self, argv: list[str]) -> int:
        parsed, nodes = self.parse(argv)
        self.splash()
        for _ in self._stop(nodes, parsed.signal or signal.SIGTERM, wait=True):
            pass
        return 0

    def restart(self, argv: list[str]) -> int:
        parsed, nodes = self.parse(argv)
        self.splash()
        codes = [self.start_node(node, restarting=True)
                 for node in self._stop(nodes, parsed.signal or signal.SIGTERM, wait=True,
                                        down_too=True)]
        return int(any(codes))

    def kill(self, argv: list[str]) -> int:
        _, nodes = self.parse(argv)
        self.splash()
        for node, pid in self._running(nodes):
            self.note(f"Sending KILL to node {node.name} ({pid})")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.note(f"Could not signal {node.name} ({pid}): No such process")
            self._remove_pidfile(node, pid)
        return 0

    def show(self, argv: list[str]) -> int:
        _, nodes = self.parse(argv)
        self.say("\n".join(shlex.join(node.argv_with_executable) for node in nodes))
        return 0

    def names(self, argv: list[str]) -> int:
        _, nodes = self.parse(argv)
        self.say("\n".join(node.name for node in nodes))
        return 0

    def get(self, argv: list[str]) -> int:
        if not argv:
            self.carp("Error: get needs a node name")
            return 1
        wanted, rest = argv[0], argv[1:]
        _, nodes = self.parse(rest)
        for node in nodes:
            if node.name == wanted:
                self.say(shlex.join(node.argv))
                return 0
        return 1

    def expand(self, argv: list[str]) -> int:
        if not argv:
            self.carp("Error: expand needs a template")
            return 1
        template, rest = argv[0], argv[1:]
        _, nodes = self.parse(rest)
        self.say("\n".join(node.expand(template) for node in nodes))
        return 0

    def help(self, argv: list[str]) -> int:
        self.say(__doc__ or "")
        self.usage()
        return 0

    # -- stopping --------------------------------------------------------------------
    def _running(self, nodes: Iterable[Node], down: Callable[[Node], None] | None = None
                 ) -> Iterator[tuple[Node, int]]:
        for node in nodes:
            pid = node.pid()
            if pid:
                yield node, pid
            else:
                self.note(f"> {node.name}: DOWN")
                if down is not None:
                    down(node)

    def _stop(self, nodes: Sequence[Node], signum: int, wait: bool,
              down_too: bool = False) -> Iterator[Node]:
        """Signal each node; with ``wait``, yield each as it is gone (pidfile removed)."""
        down: list[Node] = []
        running = list(self._running(nodes, down.append if down_too else None))
        yield from down
        if not running:
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        self.note("> Stopping nodes...")
        waiting: list[tuple[Node, int]] = []
        for node, pid in running:
            self.note(f"\t> {node.name}: {name} -> {pid}")
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                self.note(f"Could not signal {node.name} ({pid}): No such process")
                if wait:
                    self._remove_pidfile(node, pid)
                    yield node
                continue
            waiting.append((node, pid))
        if not wait or not waiting:
            return
        self.note(f"> Waiting for {len(waiting)} {'node' if len(waiting) == 1 else 'nodes'}"
                  f" -> {', '.join(str(pid) for _, pid in waiting)}...", newline=False)
        last_dot = time.monotonic()
        while waiting:
            for node, pid in list(waiting):
                if not pid_alive(pid):
                    waiting.remove((node, pid))
                    self._remove_pidfile(node, pid)
                    self.note(f"\n\t> {node.name}: OK", newline=False)
                    yield node
            if waiting:
                time.sleep(POLL_INTERVAL)
                if time.monotonic() - last_dot >= 1:
                    self.note(".", newline=False)
                    last_dot = time.monotonic()
        self.note("")

    def _remove_pidfile(self, node: Node, pid: int) -> None:
        """Remove the node's pidfile if it still names ``pid`` (the worker removes its
        own at exit; this is for one that was killed or crashed)."""
        try:
            if Pidfile(node.pidfile).read_pid() == pid:
                os.unlink(node.pidfile)
        except (ValueError, OSError):
            pass


def _worker_value_options(command: click.Command | None) -> Callable[[str], bool | None]:
    """From the worker command's options: which take a value, which are flags."""
    known: dict[str, bool] = {}
    for param in getattr(command, "params", ()):
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                known[opt] = not (param.is_flag or param.count)
    return known.get


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_extra_args": True, "help_option_names": []},
               add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Start, stop and restart several detached workers (see 'celeriac multi help')."""
    obj: Any = ctx.obj
    defaults: Options = {}
    for opt, value in (("--app", getattr(obj, "app_name", None)),
                       ("--broker", getattr(obj, "broker", None)),
                       ("--result-backend", getattr(obj, "result_backend", None)),
                       ("--config", getattr(obj, "config", None)),
                       ("--workdir", getattr(obj, "workdir", None))):
        if value:
            defaults[opt] = value
    parent = ctx.parent.command if ctx.parent is not None else None
    worker = (parent.get_command(ctx, "worker") if isinstance(parent, click.Group)
              else None)
    tool = MultiTool(defaults, _worker_value_options(worker))
    sys.exit(tool.run(args))
