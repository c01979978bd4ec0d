"""No fork while a service thread is busy.

A child forked while another thread holds a lock (the import lock, the resolver's, a
connection pool's) waits for it forever. A service thread of the worker's main process
(embedded beat, remote control, the event heartbeat) holds its ``busy`` lock while it
works; every ``os.fork()`` in the process waits until each such lock is free.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("celeriac.worker")

#: locks held by service threads while they work; a fork in this process waits for each
_fork_gates: list[threading.Lock] = []
_held = threading.local()
#: how long a fork waits for a busy service thread before going ahead anyway (warned)
FORK_GATE_TIMEOUT = 30.0


def add_fork_gate(gate: threading.Lock) -> None:
    """Make every later ``os.fork()`` in this process wait until ``gate`` is free."""
    _fork_gates.append(gate)


def remove_fork_gate(gate: threading.Lock) -> None:
    try:
        _fork_gates.remove(gate)
    except ValueError:
        pass


def _before_fork() -> None:
    held = []
    for gate in list(_fork_gates):
        if gate.acquire(timeout=FORK_GATE_TIMEOUT):
            held.append(gate)
        else:
            logger.warning("forking while a service thread has been busy for %.0f s; the "
                           "new pool process may hang", FORK_GATE_TIMEOUT)
    _held.gates = held


def _after_fork_in_parent() -> None:
    for gate in getattr(_held, "gates", ()):
        gate.release()
    _held.gates = []


def _after_fork_in_child() -> None:
    _after_fork_in_parent()
    _fork_gates.clear()  # the service threads stayed in the parent


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
