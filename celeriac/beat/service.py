"""The beat service: holds the leader lock and runs the scheduler while it leads.

Start: configure and finalize the app (so ``on_after_configure`` handlers add their
periodic tasks), build the scheduler, then loop. Each turn a stand-by tries to take the
lock; the leader renews it every ``lock_ttl / 3`` and runs the scheduler's tick. A
leader that cannot renew (or whose lease ran out locally, e.g. after a long pause)
stops sending at once and becomes a stand-by again. On taking over, the new leader
reloads the last run times (its state file and the ones the old leader left beside the
lock), so nothing that already ran is sent again.

Fail-over bound: a stand-by takes over at most ``lock_ttl + lock_ttl / 3`` seconds
after the leader's last renewal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from ..exceptions import ImproperlyConfigured
from .lock import LeaderLock, lock_for_url
from .scheduler import PersistentScheduler, Scheduler

__all__ = ["Beat", "DEFAULT_LOCK_TTL"]

logger = logging.getLogger("celeriac.beat")

DEFAULT_LOCK_TTL = 15.0


def scheduler_class(app: Any, name: Any = None) -> type[Scheduler]:
    """The scheduler class named by ``-S`` or ``beat_scheduler`` (default: persistent).

    Raises:
        ImproperlyConfigured: the name does not lead to a ``Scheduler`` subclass.
    """
    name = name or app.conf.beat_scheduler
    if not name or name in ("celery.beat:PersistentScheduler",
                            "celery.beat.PersistentScheduler", "persistent"):
        return PersistentScheduler
    if name in ("memory", "celery.beat:Scheduler", "celery.beat.Scheduler"):
        return Scheduler
    if name in ("sqlite", "database"):
        from .store import SQLiteScheduler

        return SQLiteScheduler
    if name == "django":
        from ..contrib.django.beat.schedulers import DatabaseScheduler

        return DatabaseScheduler
    if isinstance(name, str) and name.startswith("django_celery_beat."):
        # Its tables are django-celery-beat's; celeriac's Django app has its own
        raise ImproperlyConfigured(
            f"scheduler {name!r} is django-celery-beat's, which runs on Celery only: use "
            "-S django, with 'celeriac.contrib.django.beat' in INSTALLED_APPS (see "
            "docs/django.md)")
    if isinstance(name, type):
        return name
    from ..utils.imports import symbol_by_name

    try:
        found = symbol_by_name(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"cannot load scheduler {name!r} ({exc}); built in: persistent, memory, sqlite, "
            "django"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ImproperlyConfigured(f"scheduler {name!r} is not a celeriac.beat.Scheduler")
    return found


def default_lock_name(app: Any) -> str:
    return f"celeriac-beat.{app.main or 'default'}.{app.conf.task_default_queue}"


class Beat:
    """Runs periodic tasks; with a lock, only while it is the leader.

    Args:
        app: the app.
        scheduler: a scheduler class or name (default: ``beat_scheduler`` setting).
        schedule_filename: state file for the persistent scheduler.
        max_interval: longest sleep between checks.
        lock: a leader lock; default: the one for the app's broker; False: no lock.
        lock_ttl: seconds a lease lasts without renewal.
        owner: this beat's name in the lock (default: host, pid and a random part).
    """

    def __init__(self, app: Any, scheduler: Any = None, schedule_filename: str | None = None,
                 max_interval: float | None = None, lock: LeaderLock | bool | None = None,
                 lock_ttl: float = DEFAULT_LOCK_TTL, owner: str | None = None) -> None:
        self.app = app
        self.scheduler_cls = scheduler_class(app, scheduler)
        self.schedule_filename = schedule_filename
        self.max_interval = max_interval
        self._lock_arg = lock
        self.lock: LeaderLock | None = None
        self.lock_ttl = float(lock_ttl)
        self.owner = owner or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.scheduler: Scheduler | None = None
        self.is_leader = False
        self._lease_ends = 0.0
        self._stop = threading.Event()
        #: held while this beat does anything but sleep (a turn, its start, its close).
        #: A process that forks while beat runs in one of its threads (``worker -B``)
        #: takes it first: a child forked while beat held some lock (the import lock, a
        #: resolver's, a connection pool's) would wait for it forever.
        self.busy = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    def setup(self) -> Scheduler:
        app = self.app
        app.finalize()  # runs on_configure/on_after_configure handlers, imports modules
        scheduler = self.scheduler_cls(app, max_interval=self.max_interval,
                                       schedule_filename=self.schedule_filename)
        self.scheduler = scheduler
        if self._lock_arg is None or self._lock_arg is True:
            self.lock = lock_for_url(app.broker_url, default_lock_name(app),
                                     app._broker_options())
        elif self._lock_arg:
            self.lock = self._lock_arg
        if self.lock is None:
            self._lead()
        return scheduler

    def run(self) -> None:
        """Run until ``stop()``."""
        with self.busy:
            scheduler = self.scheduler or self.setup()
            logger.info("beat: Starting (owner %s, scheduler %s)", self.owner,
                        type(scheduler).__name__)
        try:
            while not self._stop.is_set():
                with self.busy:
                    sleep = self.turn()
                self._stop.wait(sleep)
        finally:
            with self.busy:
                self.close()

    def turn(self) -> float:
        """One turn of the loop; returns how long to sleep."""
        scheduler = self.scheduler
        assert scheduler is not None
        renew_every = self.lock_ttl / 3
        if self.lock is not None:
            if not self.is_leader:
                asked = time.monotonic()  # the lease runs from the request, to be safe
                if not self._try(self.lock.acquire, self.owner, self.lock_ttl):
                    return renew_every
                self._lease_ends = asked + self.lock_ttl
                self._lead()
            elif self._lease_ends - time.monotonic() < self.lock_ttl - renew_every:
                started = time.monotonic()
                try:
                    renewed: bool | None = bool(self.lock.renew(self.owner, self.lock_ttl))
                except Exception as exc:  # the store is unreachable: keep the lease we have
                    logger.warning("beat: leader lock: %s", exc)
                    renewed = None
                if renewed:
                    self._lease_ends = started + self.lock_ttl
                elif renewed is False:
                    self._follow("another beat holds the leader lock")
                    return renew_every
            if time.monotonic() >= self._lease_ends - renew_every / 2:
                self._follow("the leader lease ran out")
                return renew_every
        sleep = scheduler.tick()
        if self.lock is not None:
            sleep = min(sleep, max(self._lease_ends - renew_every * 2 - time.monotonic(), 0.05))
        return sleep

    def _try(self, fn: Any, *args: Any) -> bool:
        try:
            return bool(fn(*args))
        except Exception as exc:
            logger.warning("beat: leader lock: %s", exc)
            return False

    def _lead(self) -> None:
        assert self.scheduler is not None
        extra = None
        if self.lock is not None:
            extra = self._try_load()
        self.scheduler.setup(extra)
        if self.lock is not None:
            self.scheduler.on_run = lambda entry: self._save_shared()
        self.is_leader = True
        logger.info("beat: %s is the leader; %d entries", self.owner,
                    len(self.scheduler.entries))

    def _try_load(self) -> dict[str, Any] | None:
        assert self.lock is not None
        try:
            return self.lock.load_state()
        except Exception as exc:
            logger.warning("beat: cannot read the last leader's state: %s", exc)
            return None

    def _save_shared(self) -> None:
        if self.lock is not None and self.scheduler is not None:
            self.lock.save_state(self.owner, self.scheduler.state())

    def _follow(self, why: str) -> None:
        logger.warning("beat: %s: %s; standing by", self.owner, why)
        self.is_leader = False

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self.scheduler is not None and self.is_leader:
            try:
                self.scheduler.close()
            except Exception:
                logger.exception("beat: could not save the state")
        if self.lock is not None:
            if self.is_leader:
                self._try(self.lock.release, self.owner)
            self.lock.close()
        self.is_leader = False

    def start_thread(self) -> threading.Thread:
        """Set up here (the app is finalized before the caller goes on), then run in a
        daemon thread (``worker -B``)."""
        if self.scheduler is None:
            self.setup()
        thread = threading.Thread(target=self.run, name="celeriac-beat", daemon=True)
        thread.start()
        return thread
