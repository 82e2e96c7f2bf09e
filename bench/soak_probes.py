"""Reading the stack's processes from outside: /proc, Prometheus text, Envoy's admin page."""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

from rankserve.tools.stack import envoy_config


def proc_stats(pid: int) -> dict[str, float] | None:
    """RSS (MiB), open fds and tasks of a live process; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
        return {"rss_mib": round(rss / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "tasks": len(os.listdir(f"/proc/{pid}/task"))}
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return None  # gone, or a zombie (no VmRSS)


def metric_by(text: str, name: str, label: str = "", **where: str) -> dict[str, float]:
    """One metric's samples in Prometheus text whose labels match ``where``, summed by the
    value of ``label`` (every sample under "" without one)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if any(labels.get(k) != v for k, v in where.items()):
                continue
            key = labels.get(label, "") if label else ""
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def http_get(url: str) -> str:
    """The body of a loopback HTTP page (metrics, Envoy admin)."""
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def envoy_all_healthy(admin: str, replicas: int) -> bool:
    """Whether Envoy's active health checks see ``replicas`` model servers, all healthy."""
    flags = [line.rsplit("::", 1)[1] for line in http_get(f"http://{admin}/clusters").splitlines()
             if line.startswith(f"{envoy_config.CLUSTER}::") and "::health_flags::" in line]
    return len(flags) == replicas and all(f == "healthy" for f in flags)
