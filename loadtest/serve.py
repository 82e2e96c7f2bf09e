"""`rankserve loadtest serve DIR`: a local web page of the load-test runs under a directory.

This module holds the command's flags and its handler; the server, its pages and the runs it
starts live in serve_http.py, serve_pages.py and serve_jobs.py, imported when the command runs so
`rankserve --help` stays fast. Signals are handled here and nowhere else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "a local web page of the runs under a directory: reports, compare, new runs"

DESCRIPTION = """\
Serve a web page of every load-test report under DIR (the JSON files `rankserve loadtest
run|step|sweep --out` wrote, searched recursively), for people who would rather click than
type:

  - the runs, newest first: date, kind, model and version, rate, p50/p99, errors, cost per
    million requests, a link to each HTML report, and a chart of p50/p99 per run
  - compare any two runs (A against B, regressions marked as `loadtest compare` marks them)
  - start a run of captured (or synthetic) traffic against a target from a form with the
    flags of `rankserve loadtest run`. The values are checked as the command line checks
    them before anything starts; the run is a child process of this server writing its
    report into a new directory under DIR, with its output on a status page. A run lasts at
    most 600 s (warm-up included), --max-runs go at once, and every run still going is
    stopped when the server stops.

The server listens on 127.0.0.1 unless --host says otherwise: only this machine can reach it.
Anyone who can reach the page can start load tests from this machine, so share it
(--host 0.0.0.0) only on a network you trust. Ctrl-C or SIGTERM stops it.
"""

EPILOG = """\
examples:
  rankserve loadtest serve runs/                 # then open the URL it prints
  rankserve loadtest serve runs/ --port 0        # any free port
  rankserve loadtest serve runs/ --host 0.0.0.0  # reachable from other machines
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR",
                   help="Directory of reports (searched recursively); runs started from the"
                        " page write theirs into new directories in it. Created if missing.")
    p.add_argument("--host", default="127.0.0.1",
                   help="Address to listen on. Default: %(default)s (this machine only).")
    p.add_argument("--port", type=int, default=8765,
                   help="Port to listen on; 0 picks a free one. The URL is printed."
                        " Default: %(default)s.")
    p.add_argument("--max-runs", type=int, default=1, choices=range(1, 5), metavar="N",
                   help="Runs started from the page that may go at once, 1..4; more are"
                        " refused. Load from two runs at once skews both. Default: %(default)s.")
    p.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                   help="Default threshold of the compare view: smaller changes are not"
                        " marked. Default: %(default)s.")


def handle(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from rankserve.loadtest.serve_http import RunsServer, is_loopback

    root = args.dir.resolve()
    if root.exists() and not root.is_dir():
        print(f"rankserve loadtest serve: {args.dir} is not a directory", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    try:
        server = RunsServer(root, args.host, args.port, max_runs=args.max_runs,
                            threshold=args.threshold)
    except OSError as exc:
        print(f"rankserve loadtest serve: cannot listen on {args.host}:{args.port}: {exc}"
              + (" (another server has the port: pass --port 0 for any free one)"
                 if args.port else ""), file=sys.stderr)
        return 1
    stop = threading.Event()
    got: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    url = server.start()
    reach = ("only this machine can reach it; --host 0.0.0.0 to share it"
             if is_loopback(args.host) else
             f"other machines can reach it on port {server.port}: anyone who can reach the"
             " page can start load tests from this machine")
    print(f"serving the runs under {root} at {url} ({reach}); Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stopped = server.stop()
    print(f"rankserve loadtest serve: stopped ({got[0] if got else 'exit'})"
          + (f"; stopped {len(stopped)} run(s) still going: "
             + ", ".join(f"#{j.id} (pid {j.proc.pid})" for j in stopped) if stopped else ""),
          flush=True)
    return 0
