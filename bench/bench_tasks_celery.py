"""The benchmark's Celery app: ``add`` and ``nap`` on Redis (see bench/README.md).

Celery's default settings (JSON, results stored). The broker is
``redis://127.0.0.1:6379/<BENCH_REDIS_DB>`` (default 10) and results go to the next
database (default 11). ``bench_tasks_celeriac.py`` is the same app for celeriac.
"""

import os
import time

from celery import Celery

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
DB = int(os.environ.get("BENCH_REDIS_DB", "10"))

app = Celery("bench_tasks_celery", broker=f"{REDIS}/{DB}", backend=f"{REDIS}/{DB + 1}")


@app.task
def add(x, y):
    return x + y


@app.task
def nap(seconds):
    """Waits without working: what bench/green.py runs ``-c 1000`` at once."""
    time.sleep(seconds)
    return seconds
