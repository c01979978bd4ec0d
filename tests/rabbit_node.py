"""A private RabbitMQ node for tests (importable as ``rabbit_node``, like ``support``).

A node runs ``rabbitmq-server`` in the foreground as a child of the tests, on free ports,
with its own node name, data, logs, plugins, configuration and Erlang cookie (a private
HOME). The machine's shared node (5672) is never addressed: the management commands
name the private node only, and with a cookie of their own they could not reach the
shared one if they tried.

``extra_conf`` lines are appended to the node's ``rabbitmq.conf``: a TLS listener, for
one (``listeners.ssl.default = <port>`` and ``ssl_options.*``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from support import free_port, require

# Where the real scripts live: Debian's /usr/sbin ones switch to the ``rabbitmq`` user
# (and its cookie), which a private node must not do.
SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/opt/rabbitmq/sbin", "/usr/local/sbin")
# Every private node's name starts so: ``ctl`` refuses to address any other node.
NODE_FAMILY = "celeriac-"
NODE_PREFIX = "celeriac-fault-"
NODE_START_TIMEOUT = 90.0
# RabbitMQ's own default, restored after a memory-alarm test
DEFAULT_WATERMARK = "0.4"


def find_script(name: str) -> str | None:
    """The path of RabbitMQ's script ``name`` that runs as the caller, or None."""
    for folder in SCRIPT_DIRS:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        return None
    with open(found, "rb") as fh:
        if b"su rabbitmq" in fh.read():  # a wrapper that runs as another user
            return None
    return found


def require_rabbit() -> tuple[str, str]:
    """``(rabbitmq-server, rabbitmqctl)`` paths; skips (or fails under
    CELERIAC_REQUIRE_SERVICES=1) when they or py-amqp are missing."""
    server, ctl = find_script("rabbitmq-server"), find_script("rabbitmqctl")
    require("rabbitmq-server (and rabbitmqctl) are not installed: these tests run a "
            "private RabbitMQ node", server is not None and ctl is not None)
    try:
        import amqp  # noqa: F401
    except ImportError:
        require("py-amqp is not installed (celeriac[amqp])", False)
    assert server is not None and ctl is not None
    return server, ctl


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (``free_port`` alone may hand out one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class RabbitNode:
    """One private ``rabbitmq-server``, run in the foreground as a child of the tests."""

    def __init__(self, workdir: Path, server: str, ctl: str,
                 extra_conf: Iterable[str] = (), prefix: str = NODE_PREFIX,
                 ports: Iterable[int] = ()) -> None:
        """``ports``: ports the caller already took for ``extra_conf`` (a TLS listener),
        so the node's own AMQP and distribution ports are other ones."""
        assert prefix.startswith(NODE_FAMILY)
        self.workdir = workdir
        self.server = server
        self.ctl_path = ctl
        self.prefix = prefix
        self.name = f"{prefix}{os.getpid()}-{secrets.token_hex(3)}@localhost"
        taken = set(ports)
        self.port, self.dist_port = [p for p in free_ports(2 + len(taken))
                                     if p not in taken][:2]
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        home = workdir / "home"
        for sub in ("home", "mnesia", "log"):
            (workdir / sub).mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (workdir / "enabled_plugins").write_text("[].\n")
        (workdir / "rabbitmq-env.conf").write_text("")
        conf = textwrap.dedent(f"""\
            listeners.tcp.1 = 127.0.0.1:{self.port}
            loopback_users.guest = true
            vm_memory_high_watermark.relative = {DEFAULT_WATERMARK}
            """)
        conf += "".join(f"{line}\n" for line in extra_conf)
        (workdir / "rabbitmq.conf").write_text(conf)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        self.env = env

    # -- management ------------------------------------------------------------------------
    def ctl(self, *args: str, check: bool = True, timeout: float = 60,
            tool: str | None = None) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> ...``: never any other node."""
        assert self.name.startswith(NODE_FAMILY) and self.name.startswith(self.prefix)
        command = [tool or self.ctl_path, "-n", self.name, *args]
        done = subprocess.run(command, env=self.env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                               f"{done.stdout}\n{done.stderr}")
        return done

    def start(self) -> None:
        log = open(self.workdir / "server.out", "wb")
        self.proc = subprocess.Popen([self.server], env=self.env, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n"
                                   f"{self.server_output()}")
            if self.listening():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"rabbitmq-server did not listen on {self.port}:\n"
                                   f"{self.server_output()}")
            time.sleep(0.1)
        self.ctl("await_startup", "--timeout", "60")

    def server_output(self) -> str:
        return (self.workdir / "server.out").read_text(errors="replace")[-5000:]

    def listening(self, port: int | None = None) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port or self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60")

    def close_all_connections(self, reason: str) -> None:
        self.ctl("close_all_connections", reason)

    def connection_count(self) -> int:
        done = self.ctl("list_connections", "-q", "--no-table-headers", "pid")
        return len([line for line in done.stdout.splitlines() if line.strip()])

    def memory_alarm(self, on: bool) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.0000001" if on else DEFAULT_WATERMARK)

    def alarmed(self) -> bool:
        done = self.ctl("eval", "rabbit_alarm:get_alarms().")
        return "memory" in done.stdout

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.ctl("stop", check=False, timeout=60)
                self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        # only this node's own process group (start_new_session above)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@contextmanager
def running_nodes(nodes: list[RabbitNode]) -> Iterator[list[RabbitNode]]:
    """Start ``nodes`` side by side (each takes seconds to boot) and stop them all after
    the block; if one fails to start, the others are stopped and its error raised."""
    errors: list[BaseException] = []

    def boot(node: RabbitNode) -> None:
        try:
            node.start()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(node,), daemon=True) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(NODE_START_TIMEOUT + 70)
    try:
        if errors:
            raise errors[0]
        yield nodes
    finally:
        for node in nodes:
            node.stop()
