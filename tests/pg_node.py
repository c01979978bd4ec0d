"""A private PostgreSQL server for fault tests (importable as ``pg_node``, like ``support``).

The cluster is made with ``initdb`` in the test's tmp dir, run by the ``postgres`` OS
user (the server refuses to run as root) on a free port, with its socket in a directory
of its own: the machine's shared server (5432) is never touched. ``crash()`` stops it
with ``-m immediate`` (no checkpoint, no goodbye to clients: what a killed server
does), ``start()`` brings it back on the same port and data, recovering from its WAL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from support import free_port, require

BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
            "/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0


def find_bin() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    for folder in BIN_DIRS:
        if os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    return None


class PGNode:
    """One private PostgreSQL cluster; ``url`` is its celeriac broker URL."""

    def __init__(self, workdir: Path, bindir: str) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.data = workdir / "data"
        self.sockets = workdir / "sock"
        self.port = free_port()
        self.url = f"sqla+postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None
        for folder in (self.data, self.sockets):
            folder.mkdir(parents=True)
        if self.user:
            shutil.chown(workdir, self.user)
            for folder in (self.data, self.sockets):
                shutil.chown(folder, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [os.path.join(self.bindir, tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                               f"{done.stdout}\n{done.stderr}")
        return done

    def start(self) -> None:
        # fsync off: a crash here is the server's, not the machine's, so the WAL still
        # reaches the page cache and recovery finds every committed row
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.workdir / "server.log"),
                  "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on {self.port} did not answer:\n"
                                   f"{self.log()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname="postgres", connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - not up (yet)
            return False

    def crash(self) -> None:
        """Stop at once, as a killed server would (recovery on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def private_postgresql() -> Iterator[PGNode]:
    """A running private cluster for the block, in a directory of its own under the
    system's tmp dir (pytest's is private to root, and the server runs as postgres);
    skips (or fails in CI) without the PostgreSQL server binaries or psycopg."""
    bindir = find_bin()
    require("the PostgreSQL server binaries (initdb, pg_ctl) are not installed",
            bindir is not None)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require("psycopg is not installed (celeriac[postgresql])", False)
    assert bindir is not None
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-pg-"))
    workdir.chmod(0o755)
    node = PGNode(workdir, bindir)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
