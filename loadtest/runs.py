"""The runs under a directory: every report JSON `rankserve loadtest` wrote, one row each.

A report is a JSON file whose ``schema`` starts with ``rankserve.loadtest.report/``
(report/document.py); other JSON files are not runs and are left out. A file that cannot be
read or parsed, or a report without a field its row needs, is skipped and listed with the
reason: one broken file never hides the others.

A row's latency is that of one run of the report: the run of ``run``; the highest rate that held
the budget in ``step`` (the capacity it reports); the batch size and compression that scored the
most candidates per second in ``sweep``. The model comes from the command's ``--model`` (else
``--deploy-model``); without either a synthetic run asked for ``ranker`` at its latest version
and a replay for the models in the capture.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_PREFIX = "rankserve.loadtest.report/"
MAX_REPORT_BYTES = 64 << 20


@dataclass(frozen=True)
class RunRow:
    path: str  # the report JSON, relative to the root, "/"-separated
    html: str | None  # the HTML report beside it, when there is one
    csv: str | None
    title: str
    kind: str  # run, step or sweep
    created: str  # ISO 8601, as the report says
    model: str
    version: str
    basis: str  # which run the latency figures are of
    rate_rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    requests: int  # counted over every run of the report
    errors: int
    cost_per_million: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def when(self) -> datetime.datetime:
        try:
            t = datetime.datetime.fromisoformat(self.created)
        except ValueError:
            return datetime.datetime.min.replace(tzinfo=datetime.UTC)
        return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Listing:
    rows: tuple[RunRow, ...]  # newest first
    skipped: tuple[Skipped, ...]


def find_runs(root: Path) -> Listing:
    """Every report under ``root`` (recursively), newest first, and the files skipped."""
    root = Path(root)
    rows: list[RunRow] = []
    skipped: list[Skipped] = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            if path.stat().st_size > MAX_REPORT_BYTES:
                skipped.append(Skipped(rel, f"larger than {MAX_REPORT_BYTES >> 20} MiB"))
                continue
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append(Skipped(rel, f"not readable JSON ({exc})"))
            continue
        if not (isinstance(doc, dict) and str(doc.get("schema", "")).startswith(SCHEMA_PREFIX)):
            continue
        try:
            rows.append(summarize_report(doc, rel, _beside(path, root)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            skipped.append(Skipped(rel, f"a report without the fields a row needs ({exc!r})"))
    rows.sort(key=lambda r: (r.when, r.path), reverse=True)
    return Listing(tuple(rows), tuple(skipped))


def _beside(path: Path, root: Path) -> dict[str, str]:
    out = {}
    for ext in ("html", "csv"):
        p = path.with_suffix(f".{ext}")
        if p.is_file():
            out[ext] = p.relative_to(root).as_posix()
    return out


def summarize_report(doc: dict[str, Any], path: str, beside: dict[str, str] | None = None
                     ) -> RunRow:
    """The row of one report document (``path`` and ``beside`` only name its files)."""
    kind = str(doc["kind"])
    runs = doc["runs"]
    rate, p50, p99, basis = _latency(doc, kind, runs)
    model, version = model_of(doc)
    cost = doc.get("cost") or {}
    beside = beside or {}
    return RunRow(
        path=path, html=beside.get("html"), csv=beside.get("csv"),
        title=str(doc.get("title") or f"rankserve loadtest {kind}"), kind=kind,
        created=str(doc["created"]), model=model, version=version, basis=basis,
        rate_rps=rate, p50_ms=p50, p99_ms=p99,
        requests=sum(int(r["requests"]["counted"]) for r in runs),
        errors=sum(int(r["requests"]["errors"]) for r in runs),
        cost_per_million=(float(cost["cost_per_million_requests"])
                          if cost.get("available") else None))


def _latency(doc: dict[str, Any], kind: str, runs: list[dict[str, Any]]
             ) -> tuple[float | None, float | None, float | None, str]:
    """(rate, p50, p99, basis) of the run a row shows."""
    if kind == "step" and doc.get("step"):
        steps = doc["step"]["steps"]
        held = [s for s in steps if s["held"]]
        if held:
            s = max(held, key=lambda s: s["rate_rps"])
            basis = f"highest rate held ({s['rate_rps']:g} req/s)"
        else:
            s = min(steps, key=lambda s: s["rate_rps"])
            basis = f"no rate held; the first step ({s['rate_rps']:g} req/s)"
        return s["rate_rps"], s["p50_ms"], s["p99_ms"], basis
    if kind == "sweep" and doc.get("sweep"):
        r = max(doc["sweep"]["rows"], key=lambda r: r["candidates_per_s"])
        return (None, r["p50_ms"], r["p99_ms"],
                f"most candidates/s: batch {r['batch_size']}, {r['compression']}")
    run = runs[0]
    lat = run["latency_ms"]
    basis = "the run" if len(runs) == 1 else f"the first of {len(runs)} runs"
    return run.get("offered_rps"), lat["p50"], lat["p99"], basis


def _flag(command: list[str], flag: str) -> str | None:
    """The last value of ``flag`` in an argv (``--flag V`` or ``--flag=V``)."""
    value = None
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def model_of(doc: dict[str, Any]) -> tuple[str, str]:
    """(model name, version or label) the report's requests asked for."""
    command = [str(a) for a in doc.get("command") or []]
    ref = _flag(command, "--model") or _flag(command, "--deploy-model")
    if ref:
        name, _, version = ref.partition("@")
        return name, version or "latest"
    runs = doc.get("runs") or [{}]
    if str(runs[0].get("source", {}).get("description", "")).startswith("replay"):
        return "as captured", ""
    return "ranker", "latest"


def resolve_under(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names inside ``root``, or None: absolute paths, ``..`` and symbolic links
    that lead out of ``root`` name nothing."""
    if not rel or "\x00" in rel:
        return None
    base = Path(root).resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
