"""Start a worker, send it tasks, print the results, stop the worker.

Run from anywhere: python examples/quickstart.py
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
os.chdir(here)
sys.path.insert(0, here)

from celeriac.contrib.testing import WorkerProcess  # noqa: E402
from tasks import add, divide, fetch_title  # noqa: E402

with WorkerProcess("tasks", cwd=here, loglevel="WARNING", args=["-c", "2"]):
    print("add(4, 4) =", add.delay(4, 4).get(timeout=30))
    results = [add.delay(i, i) for i in range(10)]
    print("ten adds  =", [r.get(timeout=30) for r in results])
    print("async     =", fetch_title.delay("https://example.com").get(timeout=30))
    failed = divide.delay(1, 0)
    try:
        failed.get(timeout=30)
    except ZeroDivisionError as exc:
        print("divide(1, 0) raised", repr(exc), "state:", failed.state)
