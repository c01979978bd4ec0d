"""Fixtures of the interop tests: Celery and celeriac, side by side on one Redis.

Broker on db 8, results (and the tasks' scratch keys) on db 9. Both are flushed before
each set of workers starts; between tests that share workers, the results db is flushed
and the test queues are emptied.
"""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from interop_support import APPS_DIR, clear_messages, worker

if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))


@pytest.fixture(scope="session")
def interop_apps(redis_server: str) -> SimpleNamespace:
    """The two app modules, imported in the test process to act as clients."""
    pytest.importorskip("celery", reason="the interop tests need Celery: pip install -e '.[dev]'")
    import interop_celeriac
    import interop_celery
    import interop_shared

    # The celeriac producer keeps the default: eta tasks go on the queue, as Celery's do,
    # so the Celery workers of a mixed fleet run them.
    return SimpleNamespace(celery=interop_celery, celeriac=interop_celeriac,
                           shared=interop_shared)


@pytest.fixture(scope="session")
def broker_db(interop_apps: SimpleNamespace) -> Any:
    import redis

    client = redis.Redis.from_url(interop_apps.shared.BROKER_URL)
    yield client
    client.close()


@pytest.fixture(scope="session")
def scratch_db(interop_apps: SimpleNamespace) -> Any:
    """The results db, where tasks also leave their traces."""
    import redis

    client = redis.Redis.from_url(interop_apps.shared.RESULT_BACKEND)
    yield client
    client.close()


@pytest.fixture
def fresh_redis(broker_db: Any, scratch_db: Any) -> None:
    """Both dbs empty: for tests that start their own workers."""
    broker_db.flushdb()
    scratch_db.flushdb()


@pytest.fixture
def clean(broker_db: Any, scratch_db: Any) -> None:
    """Results gone and queues empty, without pulling the floor from running workers."""
    scratch_db.flushdb()
    clear_messages(broker_db)


@pytest.fixture
def start_worker(fresh_redis: None) -> Iterator[Any]:
    """Start workers for one test; all are stopped when it ends."""
    with contextlib.ExitStack() as stack:
        def start(kind: str, name: str, *args: str) -> Any:
            return stack.enter_context(worker(kind, name, args))

        yield start
