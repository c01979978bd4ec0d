"""Periodic tasks: the scheduler, its persistent state and the leader lock.

The schedules themselves (``schedule``, ``crontab``, ``solar``) live in
:mod:`celeriac.schedules`.
"""

from .lock import LeaderLock, MemoryLock, RedisLock, SQLiteLock, lock_for_url
from .scheduler import PersistentScheduler, ScheduleEntry, Scheduler
from .service import Beat

__all__ = [
    # service
    "Beat",
    # scheduling
    "Scheduler", "PersistentScheduler", "ScheduleEntry",
    # leader lock
    "LeaderLock", "MemoryLock", "SQLiteLock", "RedisLock", "lock_for_url",
]
