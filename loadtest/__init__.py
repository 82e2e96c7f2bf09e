"""Load tests of a model (Predict) or of the whole ranker (Rank), with reports.

Replay captured traffic or synthesise it from the demo catalog; send it open loop at a rate
or closed loop at a concurrency; report latency, errors, bytes, CPU and cost as HTML, JSON and
CSV. The command line is ``rankserve loadtest``.
"""

from rankserve.loadtest.arrivals import schedule
from rankserve.loadtest.runner import LoadSpec, RunOutcome, run
from rankserve.loadtest.sources import Payloads, replay, synthesize
from rankserve.loadtest.stats import summarize
from rankserve.loadtest.targets import Target, TargetProvider, static

__all__ = [
    "LoadSpec",
    "Payloads",
    "RunOutcome",
    "Target",
    "TargetProvider",
    "replay",
    "run",
    "schedule",
    "static",
    "summarize",
    "synthesize",
]
