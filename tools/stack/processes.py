"""Child processes of the local stack: start, wait until ready, stop by pid.

Every child is told to write a ready file (JSON with its address) once it serves; the
supervisor reads the port back from it, so every process binds port 0 and nothing collides.
Output goes to one log file per process; when a child fails to start, the tail of its log is
part of the error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class StartError(RuntimeError):
    """A child exited or did not become ready in time."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


def start(child: Child, env: dict[str, str] | None = None) -> Child:
    child.log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        child.proc = subprocess.Popen(
            child.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group: Ctrl-C in the terminal reaches the supervisor only, which then
            # stops children in order (ranker first, model servers last).
            start_new_session=True,
        )
    finally:
        log.close()
    return child


def wait_ready_file(child: Child, path: Path, timeout_s: float) -> dict:
    """Waits for the child's ready file; raises StartError with its log tail if it dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            info = json.loads(path.read_text())
            child.address = info["address"]
            return info
        if not child.alive():
            raise StartError(
                f"{child.name} exited with code {child.proc.returncode if child.proc else '?'}"
                f" before it was ready; last lines of {child.log_path}:\n{child.log_tail()}"
            )
        time.sleep(0.05)
    raise StartError(
        f"{child.name} was not ready after {timeout_s:.0f} s; last lines of {child.log_path}:\n"
        f"{child.log_tail()}"
    )


def wait_until(
    child: Child, ready: Callable[[], bool], timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartError(
                f"{child.name} exited before {what}; last lines of {child.log_path}:\n"
                f"{child.log_tail()}"
            )
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise StartError(f"{child.name}: not {what} after {timeout_s:.0f} s:\n{child.log_tail()}")


def stop(child: Child, grace_s: float, *, drain_s: float | None = None) -> int | None:
    """Stops ``child`` gracefully and returns its exit code (None if never started).

    Without ``drain_s``: SIGINT, which rankserve's servers take as "stop now, let in-flight
    calls finish" (and Envoy, Redis and the trace receiver as a clean stop). With it: SIGTERM,
    as Kubernetes sends, so the server first drains for ``drain_s`` (NOT_SERVING while still
    serving) and its replacement or the other replicas take over without a failed call. SIGKILL
    if it has not exited after the drain and ``grace_s`` (plus a second of slack).
    """
    proc = child.proc
    if proc is None:
        return None
    if proc.poll() is None:
        sig = signal.SIGINT if drain_s is None else signal.SIGTERM
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s + (0.0 if drain_s is None else drain_s + 1.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
