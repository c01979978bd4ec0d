"""A pub/sub message that arrives in pieces is read whole, on the same connection.

redis-py reads a message with the timeout it waited for the first byte; at 0 s a message
still arriving timed out and its retry re-made the connection, losing what the socket
held (a monitor missed events with no trace). A server of the test's own, speaking just
enough RESP, sends one message whole and the next in two pieces with a pause between.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from celeriac.brokers import connect

PATTERN = b"/0.ev-partial/*"


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pmessage(body: bytes) -> bytes:
    return (b"*4\r\n" + _bulk(b"pmessage") + _bulk(PATTERN)
            + _bulk(b"/0.ev-partial/task.multi") + _bulk(body))


def _envelope(n: int) -> bytes:
    import json

    return json.dumps({"body": json.dumps({"type": "task-received", "n": n}),
                       "content-type": "application/json", "headers": {},
                       "properties": {"delivery_info": {"routing_key": "task.multi"}}
                       }).encode()


def _read_command(reader: Any) -> list[bytes] | None:
    """One RESP array of bulk strings (what a client sends), or None at the end."""
    header = reader.readline()
    if not header.startswith(b"*"):
        return None
    parts = []
    for _ in range(int(header[1:])):
        size = int(reader.readline()[1:])
        parts.append(reader.read(size + 2)[:-2])
    return parts


class _PieceServer:
    """Answers every command +OK, PSUBSCRIBE with its confirmation, then sends the
    messages; counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while not self.done.is_set():
                command = _read_command(reader)
                if command is None:
                    return
                if command[0].upper() != b"PSUBSCRIBE":
                    conn.sendall(b"+OK\r\n")
                    continue
                for n, pattern in enumerate(command[1:], 1):
                    conn.sendall(b"*3\r\n" + _bulk(b"psubscribe") + _bulk(pattern)
                                 + b":%d\r\n" % n)
                first, second = _pmessage(_envelope(1)), _pmessage(_envelope(2))
                middle = len(second) // 2
                conn.sendall(first + second[:middle])
                time.sleep(0.3)  # the rest of the second message comes late
                conn.sendall(second[middle:])
                self.done.wait(10)
                return

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def test_a_message_in_pieces_is_read_whole_without_a_new_connection() -> None:
    server = _PieceServer()
    broker: Any = connect(f"redis://127.0.0.1:{server.port}/0")
    try:
        listener = broker.listen("ev-partial", ["#"])
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got.extend(listener.get(1.0))
        assert [n.body for n in got] == ['{"type": "task-received", "n": 1}',
                                         '{"type": "task-received", "n": 2}']
        assert listener.reconnects == 0 and server.connections == 1
        listener.close()
    finally:
        server.close()
        broker.close()
