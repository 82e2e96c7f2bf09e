"""A loopback listener that relays each accepted connection over a new stream to a pod.

The load generator speaks gRPC to 127.0.0.1:PORT as to any target; each TCP connection it
opens gets its own port-forward stream, so a channel's HTTP/2 connection is carried byte for
byte. Threads, not asyncio: the Kubernetes client's forward is blocking, and the relay must
not share the event loop whose timing the load test measures.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any


class Relay:
    """``open_stream()`` returns a socket-like object (recv, sendall, shutdown, close) for
    each accepted connection; ``failures`` counts connections whose stream could not open."""

    def __init__(self, open_stream: Callable[[], Any]) -> None:
        self._open = open_stream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._open_ends: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.connections = 0
        self.failures = 0
        self.last_error = ""

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def __enter__(self) -> Relay:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ends, self._open_ends = self._open_ends, []
        with contextlib.suppress(OSError):
            self._listener.close()
        for end in ends:
            with contextlib.suppress(Exception):
                end.close()
        for t in self._threads:
            t.join(timeout=5)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="relay")
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = self._open()
            except Exception as exc:  # counted and reported, never raised here
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                conn.close()
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    upstream.close()
                    return
                self.connections += 1
                self._open_ends += [conn, upstream]
            self._spawn(self._pump, conn, upstream)
            self._spawn(self._pump, upstream, conn)

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except Exception:  # either side closing ends the pump
            pass
        with contextlib.suppress(Exception):
            dst.shutdown(socket.SHUT_WR)
