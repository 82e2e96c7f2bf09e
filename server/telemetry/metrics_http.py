"""A process's Prometheus endpoint: the text format of one injected registry on its own port.

Never the global registry: each process (and each test) builds its own, so what a scrape shows
is exactly what that process registered.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


class MetricsServer:
    """Serves ``registry`` at http://HOST:PORT/metrics from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0):
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        return f"{host}:{self.port}"

    def start(self) -> str:
        """Binds (port 0 picks a free one) and returns ``host:port``."""
        self._server, self._thread = start_http_server(self.port, self.host, self.registry)
        self.port = self._server.server_port
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
