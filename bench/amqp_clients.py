"""Which AMQP client for the RabbitMQ transport: py-amqp and pika, side by side.

Publishes N small task-sized messages with publisher confirms (py-amqp: a window of
confirms waited for every 200 messages; pika's BlockingConnection: each publish waits
for its own confirm, the only way it has), then consumes them with manual acks, and
times one persistent and one transient publish-and-confirm round trip.

    pip install amqp pika
    python bench/amqp_clients.py --messages 10000

The queue ``bench.amqp-clients`` on the given server is purged and deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

# bench/amqp.py would stand in for py-amqp's "amqp" package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

QUEUE = "bench.amqp-clients"
BODY = json.dumps([[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                "chord": None}]).encode()
HEADERS = {"lang": "py", "task": "bench.add", "id": "0" * 36, "retries": 0, "eta": None,
           "timelimit": [None, None]}


def py_amqp(host: str, n: int) -> dict[str, float]:
    import amqp

    conn = amqp.Connection(host, userid="guest", password="guest")
    conn.connect()
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True, auto_delete=False)
    ch.queue_purge(QUEUE)
    ch.confirm_select()
    confirmed = [0]
    ch.events["basic_ack"].add(lambda tag, multiple: confirmed.__setitem__(0, tag))

    def message(mode: int = 2) -> Any:
        return amqp.Message(BODY, content_type="application/json", content_encoding="utf-8",
                            delivery_mode=mode, application_headers=HEADERS)

    def wait_for(tag: int) -> None:
        while confirmed[0] < tag:
            conn.drain_events(timeout=5)

    started = time.perf_counter()
    for i in range(1, n + 1):
        ch.basic_publish(message(), exchange="", routing_key=QUEUE)
        if i % 200 == 0:
            wait_for(i)
    wait_for(n)
    publish = n / (time.perf_counter() - started)
    latency = {}
    for mode in (2, 1):
        samples = []
        for _ in range(300):
            t = time.perf_counter()
            ch.basic_publish(message(mode), exchange="", routing_key=QUEUE)
            wait_for(confirmed[0] + 1)  # the one before was confirmed: one outstanding
            samples.append((time.perf_counter() - t) * 1e6)
        latency[mode] = statistics.median(samples)
    ch.queue_purge(QUEUE)
    sent = n + 600  # the confirm tags count every publish on the channel
    for _ in range(n):
        ch.basic_publish(message(), exchange="", routing_key=QUEUE)
    wait_for(sent + n)
    got = [0]

    def on_message(m: Any) -> None:
        got[0] += 1
        ch.basic_ack(m.delivery_tag)

    ch.basic_qos(0, 100, False)
    ch.basic_consume(QUEUE, callback=on_message)
    started = time.perf_counter()
    while got[0] < n:
        conn.drain_events(timeout=5)
    consume = n / (time.perf_counter() - started)
    conn.channel().queue_delete(QUEUE)  # its consumer is cancelled: RabbitMQ says so
    conn.collect()
    return {"publish": publish, "consume": consume, "confirm_persistent_us": latency[2],
            "confirm_transient_us": latency[1]}


def pika_blocking(host: str, n: int) -> dict[str, float]:
    import pika

    name, _, port = host.partition(":")
    conn = pika.BlockingConnection(pika.ConnectionParameters(name, int(port or 5672)))
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True)
    ch.queue_purge(QUEUE)
    ch.confirm_delivery()
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                 delivery_mode=2, headers=HEADERS)
    started = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", QUEUE, BODY, props)
    publish = n / (time.perf_counter() - started)
    got = [0]

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        got[0] += 1
        channel.basic_ack(method.delivery_tag)
        if got[0] >= n:
            channel.stop_consuming()

    ch.basic_qos(prefetch_count=100)
    ch.basic_consume(QUEUE, on_message)
    started = time.perf_counter()
    ch.start_consuming()
    consume = n / (time.perf_counter() - started)
    ch.queue_delete(QUEUE)
    conn.close()
    return {"publish": publish, "consume": consume}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--host", default="127.0.0.1:5672")
    args = parser.parse_args()
    for name, run in (("py-amqp", py_amqp), ("pika (BlockingConnection)", pika_blocking)):
        try:
            figures = run(args.host, args.messages)
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        print(f"{name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
