"""A loopback HTTP server that answers one byte at a time (a server that trickles).

Each byte comes well inside any read timeout, so only a deadline on the whole exchange
ends it: the ``slow loris`` of the answering side. It counts the connections it takes,
so tests can assert how many fetches were made, and the bytes it got out, so they can
tell a client that stopped reading from one that read everything. Usage::

    with TricklingServer(b'{"keys": []}', byte_every=0.2) as server:
        fetch(server.url)  # the whole answer would take len(answer) * 0.2 s
"""

from __future__ import annotations

import socket
import threading


class TricklingServer:
    def __init__(
        self, body: bytes, byte_every: float = 0.2, path: str = "/jwks", chunk: int = 1
    ) -> None:
        """``chunk`` bytes are sent every ``byte_every`` seconds (a flood, with a big chunk)."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.answer = head.encode() + body
        self.byte_every = byte_every
        self.path = path
        self.chunk = chunk
        self.connections = 0
        self.finished = 0
        """Connections ended: answered in full, or given up by the client."""
        self.sent = 0
        """Bytes of answer sent, over all connections."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}{self.path}"

    @property
    def seconds_to_answer(self) -> float:
        """How long the whole answer takes to trickle out."""
        return -(-len(self.answer) // self.chunk) * self.byte_every

    def __enter__(self) -> TricklingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        try:
            self._answer(connection)
        finally:
            with self._lock:
                self.finished += 1

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            received = b""
            try:
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    received += chunk
                for index in range(0, len(self.answer), self.chunk):
                    if self._stopping.wait(self.byte_every):
                        return
                    connection.sendall(self.answer[index : index + self.chunk])
                    with self._lock:
                        self.sent += len(self.answer[index : index + self.chunk])
            except OSError:  # the client gave up and closed: what a deadline does
                return
