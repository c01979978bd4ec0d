"""Running a program as a daemon, as Celery's ``--detach`` does: pidfiles, user switch,
umask and the double fork.

* ``Pidfile``: created with ``O_EXCL``; a file left by a dead process (or an empty or
  unreadable one) is replaced, with a warning; one whose process is alive makes the
  start fail (``PidfileLocked``, naming the file and the pid). Removed at exit, only by
  the process whose pid it holds (a forked pool process never removes it).
* ``detach()``: fork, ``setsid``, fork again; the daemon sets the umask, drops
  privileges, takes the pidfile and points stdin and stdout at ``/dev/null`` and
  stderr at the log file. The original process waits for the daemon
  to say so much worked, so that a refused pidfile is a non-zero exit code on the
  terminal (what ``celeriac multi start`` reports), not a line lost in a log.
* ``foreground()``: the same minus the fork, for ``--pidfile``/``--uid`` without
  ``--detach``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from ..exceptions import CeleriacError

__all__ = ["PidfileLocked", "DaemonError", "Pidfile", "DaemonOptions", "pid_alive",
           "parse_umask", "parse_uid", "parse_gid", "drop_privileges", "create_pidlock",
           "detach", "foreground", "EX_CANTCREAT"]

logger = logging.getLogger("celeriac.daemon")

#: the exit code of a start refused by a live pidfile (Celery's, from sysexits.h)
EX_CANTCREAT = getattr(os, "EX_CANTCREAT", 73)


class DaemonError(CeleriacError):
    """A daemon could not be set up (user, group, umask, directory, log file)."""

    exit_code = 1


class PidfileLocked(DaemonError):
    """The pidfile names a process that is alive: the program runs already."""

    exit_code = EX_CANTCREAT

    def __init__(self, path: str, pid: int) -> None:
        super().__init__(
            f"cannot start: the pidfile {path} already exists and its process {pid} is "
            f"alive (already running?); stop that process first, or remove the file if "
            f"pid {pid} is not this program")
        self.path = path
        self.pid = pid


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie does not count: it has exited)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:  # a zombie nobody reaps (no init in a container) must not look alive
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[:1]
        return state != [b"Z"]
    except OSError:
        return True


class Pidfile:
    """A file holding the pid of the process that runs a program."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.owner: int | None = None

    def read_pid(self) -> int | None:
        """The pid in the file; None when there is no file.

        Raises:
            ValueError: the file is empty or holds no pid.
        """
        try:
            with open(self.path, encoding="ascii", errors="replace") as fh:
                text = fh.readline().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"unreadable: {exc.strerror or exc}") from exc
        if not text.isdigit() or int(text) <= 0:
            raise ValueError(f"holds {text!r}, not a pid" if text else "is empty")
        return int(text)

    def remove_if_stale(self) -> bool:
        """Remove the file when no live process holds it; say whether it is gone.

        Raises:
            PidfileLocked: its process is alive.
        """
        try:
            pid = self.read_pid()
        except ValueError as why:
            logger.warning("pidfile %s %s: replacing it", self.path, why)
            self._unlink()
            return True
        if pid is None:
            return True
        # The pid of this very process: a container restarted with the old file (pid 1).
        if pid != os.getpid() and pid_alive(pid):
            raise PidfileLocked(self.path, pid)
        logger.warning("stale pidfile %s: process %d is not running; replacing it",
                       self.path, pid)
        self._unlink()
        return True

    def acquire(self) -> None:
        """Write this process's pid to the file, which must not exist already.

        Raises:
            PidfileLocked: a live process holds it.
            DaemonError: the file cannot be written.
        """
        for _ in range(3):  # another starter may replace a stale file between two tries
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.remove_if_stale()
                continue
            except OSError as exc:
                raise DaemonError(f"cannot create the pidfile {self.path}: "
                                  f"{exc.strerror or exc}") from exc
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.owner = os.getpid()
            return
        raise DaemonError(f"cannot create the pidfile {self.path}: it keeps reappearing")

    def release(self) -> None:
        """Remove the file, if this process wrote it and it still holds this pid."""
        if self.owner is None or self.owner != os.getpid():
            return
        try:
            if self.read_pid() == self.owner:
                self._unlink()
        except ValueError:
            pass
        self.owner = None

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def create_pidlock(path: str) -> Pidfile:
    """Take the pidfile ``path`` for this process until it exits (see ``Pidfile``)."""
    pidfile = Pidfile(path)
    pidfile.acquire()
    atexit.register(pidfile.release)
    return pidfile


def parse_umask(value: int | str | None) -> int | None:
    """``--umask``/``*_umask``: a number, or a string in octal (``"022"``, ``"0o27"``)."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().removeprefix("0o")
    try:
        return int(text, 8)
    except ValueError:
        raise DaemonError(f"umask {value!r} is not an octal number (e.g. 022)") from None


def parse_uid(value: int | str) -> int:
    """A user id from a number or a user name."""
    import pwd

    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return pwd.getpwnam(str(value)).pw_uid
    except KeyError:
        raise DaemonError(f"no user named {value!r}") from None


def parse_gid(value: int | str) -> int:
    """A group id from a number or a group name."""
    import grp

    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return grp.getgrnam(str(value)).gr_gid
    except KeyError:
        raise DaemonError(f"no group named {value!r}") from None


def drop_privileges(uid: int | str | None = None, gid: int | str | None = None) -> None:
    """Become ``uid`` (with its groups) and ``gid``; the group first, while still root.

    Without ``gid`` the user's own group is taken. Nothing is done when neither is given.

    Raises:
        DaemonError: the switch failed, or root could be regained afterwards.
    """
    if uid in (None, "") and gid in (None, ""):
        return
    import pwd

    user = parse_uid(uid) if uid not in (None, "") else None
    group = parse_gid(gid) if gid not in (None, "") else None
    try:
        if user is not None:
            entry = _passwd(pwd, user)
            if group is None:
                group = entry.pw_gid if entry is not None else user
            os.setgid(group)
            if entry is not None:  # the user's supplementary groups, not root's
                os.initgroups(entry.pw_name, group)
            else:
                os.setgroups([group])
            os.setuid(user)
        elif group is not None:
            os.setgid(group)
    except PermissionError as exc:
        raise DaemonError(f"cannot switch to user {uid!r} / group {gid!r}: "
                          f"{exc.strerror or exc} (only root can)") from exc
    if user not in (None, 0):
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise DaemonError("still able to become root after dropping privileges")


def _passwd(pwd: Any, uid: int) -> Any:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


@dataclass
class DaemonOptions:
    """How a program runs: in the background or not, and as what.

    ``logfile`` and ``pidfile`` are names expanded already, relative to the current
    directory (the CLI has changed to ``--workdir`` by then: the app is imported from it).
    """

    detach: bool = False
    pidfile: str | None = None
    logfile: str | None = None
    uid: int | str | None = None
    gid: int | str | None = None
    umask: int | None = None


def _setup(options: DaemonOptions) -> Pidfile | None:
    """What the daemon and the foreground program both do before they run."""
    if options.umask is not None:
        os.umask(options.umask)
    drop_privileges(options.uid, options.gid)
    return create_pidlock(options.pidfile) if options.pidfile else None


def foreground(options: DaemonOptions) -> Pidfile | None:
    """``--pidfile``, ``--uid``... without ``--detach``: set up, in this process.

    Raises:
        PidfileLocked, DaemonError: as ``detach``.
    """
    return _setup(options)


def detach(options: DaemonOptions) -> Pidfile | None:
    """Become a daemon; returns in the daemon only.

    The calling process exits once the daemon has its pidfile and log file: with 0, or
    with the error printed to stderr and a non-zero code.

    Raises:
        DaemonError: no log file given (errors would be lost).
    """
    if not options.logfile:
        raise DaemonError("a detached program needs a log file (--logfile)")
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        os.waitpid(first, 0)
        _report_and_exit(read_end)
    os.close(read_end)
    try:
        os.setsid()
        if os.fork():
            os._exit(0)  # the session leader goes; the daemon can never get a terminal
        pidfile = _setup(options)
        _redirect_stdio(options.logfile)
    except BaseException as exc:  # noqa: BLE001 - told to the waiting parent, then gone
        code = exc.exit_code if isinstance(exc, DaemonError) else 1
        message = str(exc) if isinstance(exc, CeleriacError) else f"{type(exc).__name__}: {exc}"
        _tell(write_end, f"{code}\n{message}")
        os._exit(code)
    _tell(write_end, "0\n")
    return pidfile


def _redirect_stdio(logfile: str) -> None:
    # stderr goes to the log: a traceback or a C library's complaint before (or
    # outside) logging still reaches the operator.
    try:
        err = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise DaemonError(f"cannot open the log file {logfile}: "
                          f"{exc.strerror or exc}") from exc
    null = os.open(os.devnull, os.O_RDWR)
    for fd, target in ((0, null), (1, null), (2, err)):
        os.dup2(target, fd)
    os.close(null)
    os.close(err)


def _tell(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _report_and_exit(fd: int) -> NoReturn:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    code_text, _, message = b"".join(chunks).decode("utf-8", "replace").partition("\n")
    if not code_text.isdigit():
        code, message = 1, "the detached process exited before it was set up"
    else:
        code = int(code_text)
    if code:
        sys.stderr.write(f"celeriac: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
