"""Load tests started from the page: a form becomes the argv of `rankserve loadtest run`.

The argv is parsed by the CLI's own parser and passes the CLI's own checks (the load spec, the
cost inputs, the traffic files) before anything starts, so a bad value gets the message the
command line would print. The run is a child process, ``python -m rankserve.tools.cli loadtest
run ... --out DIR/<stamp>-<name> --no-progress``, its output in ``run.log`` in that directory.

Bounded: warm-up plus duration at most ``MAX_SECONDS``, at most ``max_running`` at a time (more
are refused with a message, not queued), a child still alive ``GRACE_SECONDS`` after its bound
is stopped, and every child is stopped (SIGTERM to its pid, then SIGKILL) when the server stops.
Runs into a cluster (``--deploy-model``) stay on the command line: they create objects and wait
for pods beyond any bound a page can keep.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_SECONDS = 600.0
GRACE_SECONDS = 120.0
LOG_NAME = "run.log"

# (form field, flag of `rankserve loadtest run`), in the order the form shows them.
FIELDS: tuple[tuple[str, str], ...] = (
    ("target", "--target"), ("kind", "--kind"), ("replay", "--replay"),
    ("catalog_dir", "--catalog-dir"), ("model", "--model"), ("rate", "--rate"),
    ("schedule", "--schedule"), ("duration", "--duration"), ("warmup", "--warmup"),
    ("name", "--name"), ("title", "--title"),
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# One check at a time may swap sys.stderr to catch the CLI's own message.
_STDERR_LOCK = threading.Lock()


class FormError(ValueError):
    """The form does not make a run; the message says what to change."""


class Busy(RuntimeError):
    """As many runs as allowed are going already."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # raise instead of printing usage and exiting
        raise FormError(f"{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise FormError((message or "").strip() or f"{self.prog} exited")


def _cli_parser() -> argparse.ArgumentParser:
    from rankserve.loadtest import cli

    top = _Parser(prog="rankserve")
    cli.add_parser(top.add_subparsers(dest="command", required=True))
    return top


def form_argv(form: dict[str, str]) -> list[str]:
    """``run`` and the flags the form filled in, then its extra arguments (shell words)."""
    argv = ["run"]
    for name, flag in FIELDS:
        value = form.get(name, "").strip()
        if value:
            argv.append(f"{flag}={value}")
    try:
        extra = shlex.split(form.get("extra", ""))
    except ValueError as exc:
        raise FormError(f"extra arguments: {exc}") from None
    if any(a in ("-h", "--help") for a in extra):
        raise FormError("extra arguments: --help prints help instead of running; see"
                        " `rankserve loadtest run --help`")
    return argv + extra


def check(argv: list[str], out_dir: Path) -> argparse.Namespace:
    """The parsed arguments of ``rankserve loadtest run ARGV --out OUT_DIR --no-progress``,
    after the checks the CLI makes before it sends anything; FormError with the CLI's message
    otherwise."""
    args = _cli_parser().parse_args(["loadtest", *argv, f"--out={out_dir}", "--no-progress"])
    if args.loadtest_command != "run":
        raise FormError("the page starts `rankserve loadtest run` only")
    for flag, on in (("--deploy-model", args.deploy_model), ("--dry-run", args.dry_run),
                     ("--keep", args.keep)):
        if on:
            raise FormError(f"{flag} deploys into a cluster: start such runs from the command"
                            " line (`rankserve loadtest run --help`); the page loads a --target")
    if not _NAME.fullmatch(args.name):
        raise FormError(f"name {args.name!r}: letters, digits, '.', '_' and '-' only (it names"
                        " the report files)")
    if args.catalog_dir is not None and not args.catalog_dir.is_dir():
        raise FormError(f"--catalog-dir {args.catalog_dir}: no such directory on the machine"
                        " that serves this page")
    specs: list[Any] = []
    err = io.StringIO()
    with _STDERR_LOCK, contextlib.redirect_stderr(err):
        from rankserve.loadtest import cli

        try:
            code = cli._guard(lambda a: _before_load(a, specs))(args)
        except OSError as exc:  # beyond what the CLI's guard catches: an unreadable file
            raise FormError(f"rankserve loadtest: {exc}") from None
    if code:
        raise FormError(err.getvalue().strip() or f"rankserve loadtest run: exit {code}")
    spec = specs[0]
    if spec.warmup_s + spec.duration_s > MAX_SECONDS:
        raise FormError(f"a run started from this page lasts at most {MAX_SECONDS:g} s, warm-up"
                        f" included: this one is {spec.warmup_s:g} s + {spec.duration_s:g} s;"
                        " run longer ones from the command line")
    return args


def _before_load(args: argparse.Namespace, specs: list[Any]) -> int:
    """What `loadtest run` checks before it sends a request (run inside the CLI's own guard,
    so a failure prints the CLI's own message)."""
    from rankserve.loadtest import cli

    specs.append(cli._spec(args))
    if args.price_core_hour is not None:
        cli._tiers(args)
    if args.replay or args.catalog_dir:  # files the user named: they must give requests
        cli._payloads(args)
    return 0


@dataclass
class Job:
    id: int
    title: str
    command: list[str]  # as the user would type it
    out_dir: Path
    name: str
    proc: subprocess.Popen
    started: float = field(default_factory=time.time)
    ended: float | None = None
    stopped: str = ""  # why the server stopped it, when it did

    @property
    def log(self) -> Path:
        return self.out_dir / LOG_NAME

    @property
    def report(self) -> Path:
        return self.out_dir / f"{self.name}.json"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def state(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "running"
        if self.stopped:
            return f"stopped ({self.stopped})"
        return "finished" if code == 0 else f"failed (exit code {code})"

    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started


class Jobs:
    """The runs this server started, newest last; at most ``max_running`` alive at once."""

    def __init__(self, root: Path, max_running: int = 1) -> None:
        self.root = Path(root)
        self.max_running = max_running
        self._jobs: list[Job] = []
        self._lock = threading.Lock()
        self._closed = False

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def get(self, job_id: int) -> Job | None:
        return next((j for j in self.all() if j.id == job_id), None)

    def _out_dir(self, name: str) -> Path:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        out = self.root / f"{stamp}-{name}"
        n = 2
        while out.exists() or any(j.out_dir == out for j in self._jobs):
            out, n = self.root / f"{stamp}-{name}-{n}", n + 1
        return out

    def start(self, form: dict[str, str]) -> Job:
        """Checks the form and starts its run; FormError or Busy (nothing started) otherwise."""
        argv = form_argv(form)
        with self._lock:
            self._refuse_when_busy()
        args = check(argv, self.root)
        with self._lock:
            self._refuse_when_busy()
            out = self._out_dir(args.name)
            argv = [*argv, f"--out={out}", "--no-progress"]
            out.mkdir(parents=True)
            with open(out / LOG_NAME, "wb") as log:  # the child keeps its own descriptor
                log.write(f"$ rankserve loadtest {shlex.join(argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "rankserve.tools.cli", "loadtest", *argv],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            job = Job(len(self._jobs) + 1, args.title or args.name,
                      ["rankserve", "loadtest", *argv], out, args.name, proc)
            self._jobs.append(job)
        threading.Thread(target=self._watch, args=(job, MAX_SECONDS + GRACE_SECONDS),
                         name=f"loadtest-run-{job.id}", daemon=True).start()
        return job

    def _refuse_when_busy(self) -> None:
        if self._closed:
            raise Busy("the server is stopping: no new runs")
        going = [j for j in self._jobs if j.running]
        if len(going) >= self.max_running:
            names = ", ".join(f"#{j.id} {j.title}" for j in going)
            raise Busy(f"{len(going)} run(s) going already ({names}); this server runs at most"
                       f" {self.max_running} at a time (--max-runs): wait for it to finish")

    def _watch(self, job: Job, limit_s: float) -> None:
        try:
            job.proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            job.stopped = f"still going {limit_s:g} s after it started"
            _stop(job.proc)
        job.ended = time.time()

    def stop_all(self, timeout_s: float = 10.0) -> list[Job]:
        """Stops every run still going (SIGTERM to its pid, SIGKILL after ``timeout_s``) and
        refuses new ones; returns those it stopped."""
        with self._lock:
            self._closed = True
            going = [j for j in self._jobs if j.running]
        for j in going:
            j.stopped = "the server stopped"
            _stop(j.proc, timeout_s)
            j.ended = time.time()
        return going


def _stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(path: Path, max_bytes: int = 32_000) -> str:
    """The end of a run's log (the last ``max_bytes``), as text."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return text if size <= max_bytes else "...\n" + text.split("\n", 1)[-1]
