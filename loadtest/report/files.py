"""JSON and CSV files of a report.

The CSV holds exactly the JSON's values, one per row, keyed by their path in the JSON
(``runs.0.latency_ms.p99``), so a spreadsheet and a script read the same numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf value) for every leaf; None leaves come out as empty strings."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from flatten(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, "" if node is None else node


def write_json(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def write_csv(doc: dict[str, Any], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "value"])
        for key, value in flatten(doc):
            w.writerow([key, json.dumps(value) if isinstance(value, bool) else value])
    return path


WINDOW_COLUMNS = ("t_s", "width_s", "scheduled_rps", "due", "due_rps", "sent", "answered",
                  "achieved_rps", "ok_rps", "errors", "p50_ms", "p99_ms", "within_tolerance")


def write_windows_csv(doc: dict[str, Any], path: Path) -> Path | None:
    """The windows of scheduled runs as a table, one row per window (the same values as
    ``runs.N.schedule.windows`` in the JSON); None when no run had a schedule."""
    runs = [(i, r) for i, r in enumerate(doc["runs"]) if r.get("schedule")]
    if not runs:
        return None
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", *WINDOW_COLUMNS])
        for i, r in runs:
            for win in r["schedule"]["windows"]:
                w.writerow([i, *(json.dumps(v) if isinstance(v, bool) else
                                 "" if v is None else v for v in
                                 (win[c] for c in WINDOW_COLUMNS))])
    return path


def write_all(doc: dict[str, Any], out_dir: Path, name: str = "report") -> dict[str, Path]:
    """``<out_dir>/<name>.json``, ``.csv`` and ``.html``; ``<name>.windows.csv`` too when a run
    followed a rate schedule."""
    from rankserve.loadtest.report.html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"{name}.html"
    html.write_text(render_html(doc))
    out = {"json": write_json(doc, out_dir / f"{name}.json"),
           "csv": write_csv(doc, out_dir / f"{name}.csv"), "html": html}
    windows = write_windows_csv(doc, out_dir / f"{name}.windows.csv")
    if windows is not None:
        out["windows_csv"] = windows
    return out
