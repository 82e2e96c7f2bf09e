"""The HTTP side of `rankserve loadtest serve`: routes over one directory of reports.

  GET  /               the runs (table and chart), a compare form, a form that starts a run
  GET  /files/PATH     a report file under the directory (.html, .json, .csv, a run's log)
  GET  /compare?a=A&b=B[&threshold=PERCENT]
                       two reports through loadtest/compare.py, regressions marked
  POST /runs           starts `rankserve loadtest run` from the form: 303 to its page; the
                       form again with the CLI's message (400) or the refusal (409) otherwise
  GET  /jobs/N         a run started here: its state, its log, its report once written

A path that leads outside the directory (``..``, absolute, a link out) is 404. A page of another
site cannot start runs through a browser here: a POST whose Origin is not this server is
refused, and while the server listens on loopback so is a Host header that is not loopback
(DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from rankserve.loadtest import serve_pages as pages
from rankserve.loadtest.runs import find_runs, resolve_under, summarize_report
from rankserve.loadtest.serve_jobs import Busy, FormError, Job, Jobs, log_tail

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".json": "application/json",
    ".csv": "text/csv; charset=utf-8", ".log": "text/plain; charset=utf-8",
    ".yaml": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}
MAX_FORM_BYTES = 64 * 1024


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


class RunsServer:
    """The reports under ``root`` and the runs started from the page, over HTTP."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, *,
                 max_runs: int = 1, threshold: float = 5.0) -> None:
        self.root = Path(root)
        self.host = host
        self.threshold = threshold
        self.jobs = Jobs(self.root, max_runs)
        self._http = ThreadingHTTPServer((host, port), _handler(self))
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if is_unspecified(self.host) else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        name="loadtest-serve-http", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> list[Job]:
        """Stops taking requests, then stops the runs still going; returns those."""
        self._http.shutdown()
        self._http.server_close()
        return self.jobs.stop_all()

    # -- pages (the handler below only routes) ---------------------------------------------

    def list_page(self, form: dict[str, str] | None = None, message: str = "") -> str:
        return pages.list_page(str(self.root), find_runs(self.root), self.jobs.all(),
                               threshold=self.threshold, form=form, message=message)

    def compare_page(self, query: dict[str, list[str]]) -> tuple[int, str]:
        from rankserve.loadtest.compare import compare, load, render_html

        a_rel, b_rel = (query.get(k, [""])[0] for k in ("a", "b"))
        a_path, b_path = resolve_under(self.root, a_rel), resolve_under(self.root, b_rel)
        if a_path is None or b_path is None:
            missing = a_rel if a_path is None else b_rel
            return 404, pages.message_page(404, f"no report {missing!r} in {self.root}: pick"
                                           " A and B from the list")
        try:
            threshold = float(query.get("threshold", [str(self.threshold)])[0])
            if not threshold >= 0:
                raise ValueError
        except ValueError:
            return 400, pages.message_page(400, "threshold: a percentage >= 0, e.g. 5")
        try:
            a, b = load(a_path), load(b_path)
            a_row, b_row = summarize_report(a, a_rel), summarize_report(b, b_rel)
            rows = compare(a, b, threshold / 100.0)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return 400, pages.message_page(400, f"cannot compare {a_rel} and {b_rel}: {exc}")
        return 200, pages.compare_page(render_html(rows, a_rel, b_rel), rows, a_row, b_row,
                                       threshold)

    def job_page(self, job: Job) -> str:
        report = None
        if not job.running and job.report.is_file() and job.report.with_suffix(".html").is_file():
            rel = job.report.with_suffix(".html").relative_to(self.root).as_posix()
            report = pages.file_url(rel)
        return pages.job_page(job, log_tail(job.log), report)

    def host_allowed(self, host_header: str) -> bool:
        if not is_loopback(self.host):
            return True
        host = urlsplit(f"//{host_header}").hostname or ""
        return is_loopback(host)


def _handler(app: RunsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rankserve-loadtest-serve"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._guarded(self._get)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._guarded(self._post)

        def _guarded(self, route) -> None:  # noqa: ANN001 - a bound method
            try:
                if not app.host_allowed(self.headers.get("Host", "")):
                    self._html(403, pages.message_page(403, "this server answers requests for"
                                                       " 127.0.0.1 or localhost only"))
                    return
                route(urlsplit(self.path))
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception:  # the detail goes to the log, never to the page
                log.exception("%s %s failed", self.command, self.path)
                self._html(500, pages.message_page(500, "internal error: the server's log has"
                                                   " the detail"))

        def _get(self, url) -> None:  # noqa: ANN001 - a SplitResult
            if url.path == "/":
                self._html(200, app.list_page())
            elif url.path.startswith("/files/"):
                self._file(unquote(url.path[len("/files/"):]))
            elif url.path == "/compare":
                self._html(*app.compare_page(parse_qs(url.query)))
            elif (m := re.fullmatch(r"/jobs/(\d+)", url.path)) and app.jobs.get(int(m[1])):
                self._html(200, app.job_page(app.jobs.get(int(m[1]))))
            else:
                self._html(404, pages.message_page(404, f"nothing at {url.path}"))

        def _post(self, url) -> None:  # noqa: ANN001 - a SplitResult
            if url.path != "/runs":
                self._html(404, pages.message_page(404, f"nothing to POST at {url.path}"))
                return
            origin = self.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
                self._html(403, pages.message_page(403, f"a form of {origin} cannot start runs"
                                                   " here"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_FORM_BYTES:
                self._html(413, pages.message_page(413, "the form is too large"))
                return
            body = self.rfile.read(length).decode("utf-8", "replace")
            form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            try:
                job = app.jobs.start(form)
            except FormError as exc:
                self._html(400, app.list_page(form, str(exc)))
                return
            except Busy as exc:
                self._html(409, app.list_page(form, str(exc)))
                return
            log.info("started run #%d (pid %d): %s", job.id, job.proc.pid, job.command)
            self.send_response(303)
            self.send_header("Location", f"/jobs/{job.id}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _file(self, rel: str) -> None:
            path = resolve_under(app.root, rel)
            if path is None or path.suffix not in CONTENT_TYPES:
                self._html(404, pages.message_page(404, f"no report file {rel!r} here"))
                return
            self._send(200, path.read_bytes(), CONTENT_TYPES[path.suffix])

        def _html(self, code: int, text: str) -> None:
            self._send(code, text.encode(), "text/html; charset=utf-8")

        def _send(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    return Handler
