"""Pidfiles, umask and user switching of ``celeriac.utils.daemon``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.utils.daemon import (
    DaemonError,
    Pidfile,
    PidfileLocked,
    create_pidlock,
    drop_privileges,
    parse_umask,
    pid_alive,
)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_pidfile_holds_this_pid_and_goes_at_release(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    pidfile = Pidfile(str(path))
    pidfile.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert pidfile.read_pid() == os.getpid()
    pidfile.release()
    assert not path.exists()


@pytest.mark.parametrize("content, why", [("", "is empty"),
                                          ("abc\n", "holds 'abc', not a pid"),
                                          ("0\n", "holds '0', not a pid")])
def test_a_broken_pidfile_is_replaced_with_a_warning(tmp_path: Path, content: str, why: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "w.pid"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, "celeriac.daemon"):
        Pidfile(str(path)).acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert f"pidfile {path} {why}: replacing it" in caplog.text


def test_a_stale_pidfile_is_replaced_with_a_warning(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "w.pid"
    pid = dead_pid()
    path.write_text(f"{pid}\n")
    with caplog.at_level(logging.WARNING, "celeriac.daemon"):
        Pidfile(str(path)).acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert f"stale pidfile {path}: process {pid} is not running; replacing it" in caplog.text


def test_a_pidfile_of_a_live_process_refuses(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(f"{other.pid}\n")
        with pytest.raises(PidfileLocked) as caught:
            Pidfile(str(path)).acquire()
        assert caught.value.pid == other.pid and caught.value.path == str(path)
        assert str(path) in str(caught.value) and str(other.pid) in str(caught.value)
        assert caught.value.exit_code == 73
        assert path.read_text() == f"{other.pid}\n"  # left alone
    finally:
        other.kill()
        other.wait()


def test_only_the_process_that_wrote_it_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    pidfile = create_pidlock(str(path))
    child = os.fork()
    if child == 0:  # a forked pool process exiting must leave the file
        pidfile.release()
        os._exit(0)
    os.waitpid(child, 0)
    assert path.exists()
    path.write_text("12345\n")  # another program's now: not ours to remove
    pidfile.release()
    assert path.read_text() == "12345\n"


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


def test_umask_is_octal() -> None:
    assert parse_umask("022") == 0o22
    assert parse_umask("0o077") == 0o77
    assert parse_umask(0o27) == 0o27
    assert parse_umask(None) is None
    with pytest.raises(DaemonError, match="octal"):
        parse_umask("9x")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
@pytest.mark.parametrize("uid, gid, want", [
    ("nobody", None, (65534, 65534)),
    ("nobody", "nogroup", (65534, 65534)),
    (None, "nogroup", (0, 65534)),
    ("65534", "0", (65534, 0)),
])
def test_drop_privileges_in_a_child(uid: str | None, gid: str | None,
                                    want: tuple[int, int]) -> None:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            drop_privileges(uid, gid)
            os.write(write_end, f"{os.getuid()} {os.getgid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as fh:
        got = fh.read()
    assert tuple(map(int, got.split())) == want


def test_unknown_user_or_group_is_a_clear_error() -> None:
    with pytest.raises(DaemonError, match="no user named 'no-such-user-x'"):
        drop_privileges("no-such-user-x")
    with pytest.raises(DaemonError, match="no group named 'no-such-group-x'"):
        drop_privileges(None, "no-such-group-x")
