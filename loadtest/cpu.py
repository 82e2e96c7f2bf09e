"""CPU time of this process and of local server processes, for CPU per request."""

from __future__ import annotations

import os
import resource

_TICK = os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """User + system CPU seconds of this process (all threads, gRPC's included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    # The command name (field 2) may hold spaces; fields after its closing ')' are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def pids_cpu_s(pids: tuple[int, ...]) -> float | None:
    """Summed CPU seconds of ``pids``; None when there are none or one cannot be read."""
    if not pids:
        return None
    try:
        return sum(pid_cpu_s(p) for p in pids)
    except (OSError, ValueError, IndexError):
        return None
