"""The report document: every run of a command, plus step, sweep, cost, autoscaling and op
profile sections."""

from __future__ import annotations

import datetime
import platform
from typing import Any

SCHEMA = "rankserve.loadtest.report/v1"


def build_document(kind: str, runs: list[dict[str, Any]], *, command: list[str] | None = None,
                   step: dict[str, Any] | None = None, sweep: dict[str, Any] | None = None,
                   cost: dict[str, Any] | None = None, autoscaling: dict[str, Any] | None = None,
                   profile: dict[str, Any] | None = None, title: str = "") -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": kind,
        "title": title or f"rankserve loadtest {kind}",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "node": platform.node()},
        "command": command or [],
        "runs": runs,
        "step": step,
        "sweep": sweep,
        "cost": cost,
        "autoscaling": autoscaling,
        "profile": profile,
    }
