"""The ``--profile`` flags of ``loadtest run`` and ``step``, and what they ask for.

Cheap to import (the command line is built from it); the capture itself is in
``profile_capture``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rankserve.server.common.tls import TlsFiles


@dataclass(frozen=True)
class ProfileSpec:
    """What to profile: the profiler address of each replica, optionally its metrics address
    (same order), and the length of the trace."""

    addresses: tuple[str, ...]
    seconds: float
    metrics: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    connect_timeout_s: float = 5.0

    def validate(self, duration_s: float) -> None:
        if self.seconds <= 0:
            raise ValueError("--profile-seconds must be > 0")
        if self.seconds > duration_s:
            raise ValueError(f"--profile-seconds {self.seconds:g} is longer than the measured"
                             f" {duration_s:g} s: shorten it or raise --duration")
        if self.metrics and len(self.metrics) != len(self.addresses):
            raise ValueError("give one --profile-metrics per --profile, in the same order"
                             f" ({len(self.addresses)} --profile, {len(self.metrics)}"
                             " --profile-metrics)")


def add_flags(parser: Any) -> None:
    """The ``--profile`` flags of ``loadtest run`` and ``step``."""
    g = parser.add_argument_group(
        "op profile (which TensorFlow ops the model spends its time in)",
        "Traces the model servers with TensorFlow's profiler while the load runs (run: from the"
        "\nend of the warm-up; step: an extra run at the highest rate that held, after the"
        "\nsearch, so the steps themselves are measured without tracing). The report's profile"
        "\nsection gives the top ops by self time, their share and time per Predict and per row;"
        "\nthe raw traces are kept in <out>/<name>.profile for `tensorboard --logdir`.")
    g.add_argument("--profile", action="append", default=[], metavar="HOST:PORT",
                   help="Profiler address of a model-server replica to trace (repeat for each):"
                        " rankserve's model server with --profiler-port, or TF Serving's gRPC"
                        " port. Not the Envoy address: Envoy spreads calls over the replicas.")
    g.add_argument("--profile-seconds", type=float, default=None, metavar="SECONDS",
                   help="Length of the trace. Default: min(5, half the measured duration).")
    g.add_argument("--profile-metrics", action="append", default=[], metavar="HOST:PORT",
                   help="Metrics address of each --profile replica (same order): adds the time"
                        " outside the model call (queueing, decode, encode) and the model's"
                        " size, and counts Predicts and rows from the servers' own metrics.")


def from_args(args: Any, duration_s: float) -> ProfileSpec | None:
    """The profile the flags ask for (checked), or None without --profile."""
    from rankserve.server.common.tls import caller_from_args

    if not args.profile:
        if args.profile_metrics or args.profile_seconds is not None:
            raise ValueError("--profile-metrics and --profile-seconds go with --profile"
                             " HOST:PORT (a model server's profiler address)")
        return None
    if args.kind != "predict":
        raise ValueError("--profile divides model time by the Predicts answered: use --kind"
                         " predict (a model server or Envoy as --target)")
    seconds = (args.profile_seconds if args.profile_seconds is not None
               else min(5.0, duration_s / 2))
    tls, _ = caller_from_args(args)
    spec = ProfileSpec(tuple(args.profile), seconds, tuple(args.profile_metrics), tls,
                       connect_timeout_s=args.connect_timeout)
    spec.validate(duration_s)
    return spec
