"""Small measuring helpers shared by the benchmarks: percentiles, process CPU, Envoy bytes,
placing the stack's tiers on cores."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from rankserve.loadtest.cpu import pid_cpu_s
from rankserve.tools.stack.local import LocalStack


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the given processes so far; a process that has exited counts 0."""
    total = 0.0
    for pid in pids:
        try:
            total += pid_cpu_s(pid)
        except FileNotFoundError:
            continue
    return total


def envoy_counter(admin: str, name: str) -> int:
    """One counter from Envoy's admin /stats (plain text `name: value`)."""
    with urllib.request.urlopen(f"http://{admin}/stats?filter=^{name}$", timeout=2) as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    raise KeyError(f"envoy has no counter {name}")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Sets environment variables (the settings of the processes a stack starts inside the
    block) and restores what was there before."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# Before any pinning moved this process.
_ALL_CORES = sorted(os.sched_getaffinity(0))


def pin_tiers(stack: LocalStack) -> str:
    """The ranker alone on the first core; Envoy, the model servers and this process (the load
    generator, the ranker's callers) on the others. In a cluster the ranker's pod has its own
    cores and its callers and the model tier run elsewhere; on two shared cores five busy
    processes would otherwise each wait for a CPU at every step of every call. Every thread of
    each process is pinned (each thread carries its own affinity)."""
    cores = _ALL_CORES
    if len(cores) < 2:
        return "not pinned: fewer than 2 cores"
    front, back = {cores[0]}, set(cores[1:])
    assert stack.ranker is not None and stack.envoy is not None

    def pin(pid: int, cpus: set[int]) -> None:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass  # a thread that ended meanwhile

    pin(stack.ranker.pid, front)
    for pid in [os.getpid(), stack.envoy.pid, *(c.pid for c in stack.model_servers)]:
        pin(pid, back)
    return (f"ranker alone on core {sorted(front)}; Envoy, model servers and the load"
            f" generator on {sorted(back)}")


@dataclass
class Row:
    path: str
    p50_ms: float
    p99_ms: float
    ranks_per_s: float
    cpu_s_per_rank: float
    bytes_per_rank: float
    note: str = ""
    # CPU ms per Rank of each tier (the ranker or bare client, Envoy, the model or echo
    # servers, the rest), from the same closed loop as cpu_s_per_rank.
    cpu_ms_by_tier: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


#: The tiers of a Rank's CPU, in the order the split is printed.
TIERS = ("ranker or client", "Envoy", "model servers", "rest")


def tier_of(stack: LocalStack, pid: int) -> str:
    """Which of ``TIERS`` a stack process belongs to (the stack's own Redis, trace receiver
    and the bench's load generator are the rest)."""
    if stack.ranker is not None and pid == stack.ranker.pid:
        return TIERS[0]
    if stack.envoy is not None and pid == stack.envoy.pid:
        return TIERS[1]
    if any(pid == c.pid for c in stack.model_servers):
        return TIERS[2]
    return TIERS[3]


def tier_cpu(stack: LocalStack, pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of ``pids``, summed per tier."""
    out = dict.fromkeys(TIERS, 0.0)
    for pid in pids:
        out[tier_of(stack, pid)] += cpu_seconds([pid])
    return out


def tier_table(rows: list[Row]) -> str:
    """Each row's CPU per Rank split by tier, for the rows that carry a split."""
    head = f"| {'path':<46} | " + " | ".join(f"{t:>16}" for t in TIERS) + " |"
    sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    out = ["CPU ms per Rank by tier:", "", head, sep]
    for r in rows:
        if r.cpu_ms_by_tier:
            out.append(f"| {r.path:<46} | " + " | ".join(
                f"{r.cpu_ms_by_tier.get(t, 0.0):16.2f}" for t in TIERS) + " |")
    return "\n".join(out)


def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies_s) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def table(rows: list[Row]) -> str:
    head = (
        f"| {'path':<46} | {'p50 ms':>7} | {'p99 ms':>7} | {'Ranks/s':>7} | {'CPU s/Rank':>10} "
        f"| {'bytes/Rank':>10} |"
    )
    sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    out = [head, sep]
    for r in rows:
        out.append(
            f"| {r.path:<46} | {r.p50_ms:7.2f} | {r.p99_ms:7.2f} | {r.ranks_per_s:7.1f} "
            f"| {r.cpu_s_per_rank:10.4f} | {r.bytes_per_rank:10,.0f} |"
        )
    return "\n".join(out)
