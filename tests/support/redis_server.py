"""A real redis-server for a test: on a unix socket in a temporary directory, no TCP port at
all (``--port 0``), no persistence; stopped by its pid.

    with redis_server() as server:
        url = server.url               # unix:///.../redis.sock
        server.restart()               # same socket path, empty data: recovery tests
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import require_program

REDIS_HINT = (
    "install Debian's redis-server package: sudo apt-get install -y --no-install-recommends"
    " redis-server  (or run `sudo make system-deps`)"
)


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 10.0) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.program, "--port", "0", "--unixsocket", str(self.socket_path),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not _ping(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not answer PING:\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.socket_path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stops and starts again on the same socket; the data is gone (nothing is saved)."""
        self.stop()
        self.start()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server; skips (fails under CI=true) when it is not installed. Its
    directory is a short one under the system's temp dir: a unix socket path has at most 107
    bytes, which a test's tmp_path can exceed."""
    program = require_program("redis-server", REDIS_HINT)
    directory = Path(tempfile.mkdtemp(prefix="redis-"))
    server = RedisServer(program, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
