"""What task events cost: a celeriac worker drains N ``add`` tasks on Redis with and
without ``-E``, side by side, and the drain rates are compared.

    python bench/events.py [--tasks 20000] [--repeat 3] [--pools prefork:2,solo:1]
                           [--no-receiver]

Each run: empty the bench dbs, enqueue N tasks, start the worker through its CLI, time
from the first result to the last (DBSIZE of the result db), stop the worker. With -E a
receiver in this process counts the task events, so the pub/sub delivery is paid too
and the events are known to have been sent (received + started + succeeded = 3 N).
The runs alternate (-E, then not, then the reverse) and medians are reported.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DB = int(os.environ.setdefault("BENCH_REDIS_DB", "14"))
sys.path.insert(0, HERE)

import bench_tasks_celeriac as tasks  # noqa: E402 - needs BENCH_REDIS_DB set above


def enqueue(n: int) -> None:
    with tasks.app.batch_publish():
        for i in range(n):
            tasks.add.delay(i, i)


class EventCounter:
    def __init__(self) -> None:
        self.count = 0
        self.receiver = tasks.app.events.Receiver(
            tasks.app.connection(), routing_key="task.#",
            handlers={"*": self._count})
        self.thread = threading.Thread(target=self.receiver.capture, daemon=True)
        self.thread.start()

    def _count(self, event: dict[str, Any]) -> None:
        self.count += 1

    def close(self) -> int:
        self.receiver.should_stop = True
        self.thread.join(10)
        self.receiver.close()
        return self.count


def drain(n: int, pool: str, concurrency: int, events: bool,
          receiver: bool = True) -> tuple[float, int | None]:
    import redis

    broker = redis.Redis.from_url(f"{tasks.REDIS}/{DB}")
    results = redis.Redis.from_url(f"{tasks.REDIS}/{DB + 1}")
    broker.flushdb()
    results.flushdb()
    enqueue(n)
    counter = EventCounter() if events and receiver else None
    command = [sys.executable, "-m", "celeriac", "-A", "bench_tasks_celeriac", "worker",
               "-P", pool, "-c", str(concurrency), "-l", "WARNING", "-n", "bench-ev@%h"]
    if events:
        command.append("-E")
    log = open(os.path.join(HERE, "results", "logs", f"events-{pool}-{int(events)}.log"), "w")
    proc = subprocess.Popen(command, cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ))
    first = done = None
    first_count = 0
    try:
        deadline = time.monotonic() + max(120.0, n / 50)
        while time.monotonic() < deadline:
            count = results.dbsize()
            now = time.perf_counter()
            if count and first is None:
                first, first_count = now, count
            if count >= n:
                done = now
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}, see {log.name}")
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    if first is None or done is None:
        raise RuntimeError(f"timed out draining {n} tasks")
    seen = counter.close() if counter is not None else None
    return (n - first_count) / (done - first), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pools", default="prefork:2,solo:1",
                        help="pool:concurrency pairs, comma separated")
    parser.add_argument("--no-receiver", action="store_true",
                        help="with -E, nobody listens: the sender's cost alone")
    args = parser.parse_args()
    os.makedirs(os.path.join(HERE, "results", "logs"), exist_ok=True)
    pools = [(p.split(":")[0], int(p.split(":")[1])) for p in args.pools.split(",")]
    print(f"celeriac worker draining {args.tasks} add tasks on Redis db {DB}, "
          f"{args.repeat} rounds; rates are medians (tasks/s)")
    print(f"{'pool':12} {'without -E':>12} {'with -E':>12} {'ratio':>7}  events seen")
    for pool, concurrency in pools:
        rates: dict[bool, list[float]] = {False: [], True: []}
        seen: list[int] = []
        for round_no in range(args.repeat):
            order = (True, False) if round_no % 2 == 0 else (False, True)
            for events in order:
                rate, count = drain(args.tasks, pool, concurrency, events,
                                    receiver=not args.no_receiver)
                rates[events].append(rate)
                if count is not None:
                    seen.append(count)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        counted = f"{min(seen)}..{max(seen)} of {3 * args.tasks}" if seen else "not counted"
        print(f"{pool + ' -c ' + str(concurrency):12} {off:12.0f} {on:12.0f} {on / off:7.2f}"
              f"  {counted}")


if __name__ == "__main__":
    main()
