"""Command line of the ranking server: ``rankserve ranker``, ``python -m rankserve.server.ranking``.

Flags mirror RankerSettings; a flag given on the command line overrides the environment
variable RANKSERVE_RANKER_<NAME>, which overrides the default.
"""

from __future__ import annotations

import argparse

from rankserve.server.common import settings_cli
from rankserve.server.ranking.settings import RankerSettings

DESCRIPTION = """\
Serve rankserve.ranking.v1.RankingService/Rank on gRPC: retrieve candidates from the embedded
catalog, score them in batches with a model behind --model-target (Envoy or a TF-Serving-
compatible model server) and answer the ranked page. Health (grpc.health.v1) and reflection are
served on the same port. SIGTERM: health turns NOT_SERVING while Ranks are still served for
--drain-s seconds (load balancers move away), then the port closes and in-flight calls get
--grace-s seconds; the process exits 0. Ctrl-C (SIGINT) skips the drain.

Routing (--routing-config FILE, YAML or JSON; edits take effect without a restart, a broken
edit keeps the previous policy and is logged):

  default: {model: ranker, label: stable}        # or {experiment: NAME}
  rules:                                          # first match wins
    - {name: new-users, when: {user_known: false}, model: ranker-generic, version: 1}
    - {name: item-page, when: {has_viewed_items: true}, model: item2item, label: stable}
    - {name: personal, when: {user_known: true}, experiment: ranker-v2}
  experiments:
    ranker-v2:
      salt: "2026-11"                             # users split by hash(name, salt, user id)
      arms:
        - {name: control, model: ranker, label: stable, weight: 90}
        - {name: treatment, model: ranker, label: canary, weight: 10}
      shadow: {name: next, model: ranker, version: 3}   # scores a copy; never answers

  when: user_known, has_query, has_viewed_items (true/false), devices, locales (lists).
  The response names the arm (RankResponse.experiment) and the version that scored it.

Versioned embeddings (--embeddings-root DIR): retrieval uses the highest version of
--embedding-model that has both the item index and the query/user embeddings the request
needs, falls back to older versions, never mixes two; with none it retrieves by popularity and
says so in degradation.reasons. Publish versions with `rankserve embeddings publish`.

Every flag can also be set as an environment variable RANKSERVE_RANKER_<FLAG> (upper case,
underscores), e.g. RANKSERVE_RANKER_MODEL_TARGET=127.0.0.1:10000; flags win.

TLS and callers: --tls-cert/--tls-key serve TLS; --tls-client-ca requires a client certificate
of that CA from every caller (mutual TLS), whose names identify it; --auth-tokens-file accepts
'authorization: Bearer TOKEN' from the callers it names; --auth-allowed-callers narrows either
to some callers (others: PERMISSION_DENIED). A call without valid credentials gets
UNAUTHENTICATED before its request is parsed, and is counted in rankserve_auth_refused_total.
Health checks need no credentials; --health-port serves them in plaintext too, for probes that
cannot speak TLS. --model-tls-* make the calls to --model-target TLS (mutual with a cert).

Prometheus metrics are served on --metrics-port (default 9464) at /metrics. Tracing follows
the standard OpenTelemetry variables: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g.
http://127.0.0.1:4317) to export spans over OTLP/gRPC; OTEL_SERVICE_NAME (default
rankserve-ranker), OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (e.g. parentbased_traceidratio
and 0.1) choose what is kept. Unset, nothing is traced.
"""

EPILOG = """\
example:
  rankserve ranker --catalog-dir ~/.cache/rankserve/catalog --model-target 127.0.0.1:10000 \\
      --port 0 --ready-file /tmp/ranker.json
  grpcurl -plaintext -d '{"query": "red shoes", "page_size": 5}' \\
      127.0.0.1:PORT rankserve.ranking.v1.RankingService/Rank
"""

PROG = "rankserve ranker"

# What each flag's value looks like, beside the settings' own descriptions.
_METAVARS = {
    "host": "ADDR", "port": "PORT", "metrics_port": "PORT", "catalog_dir": "DIR",
    "model_target": "HOST:PORT",
    "model_name": "NAME", "model_label": "LABEL", "model_version": "N", "batch_size": "N",
    "max_in_flight": "N", "gzip_min_bytes": "BYTES",
    "default_candidates": "N", "max_candidates": "N", "default_deadline_ms": "MS",
    "min_score_budget_ms": "MS", "merge_reserve_ms": "MS", "grace_s": "SECONDS",
    "drain_s": "SECONDS",
    "max_message_mb": "MIB", "blas_threads": "N", "routing_config": "FILE",
    "routing_check_s": "SECONDS", "embeddings_root": "DIR", "embedding_model": "NAME",
    "embedding_refresh_s": "SECONDS",
    "capture_dir": "DIR", "capture_rate": "FRACTION",
    "capture_max_per_minute": "N", "ready_file": "PATH",
    "tls_cert": "PATH", "tls_key": "PATH", "tls_client_ca": "PATH", "auth_tokens_file": "PATH",
    "auth_allowed_callers": "NAMES", "health_port": "PORT", "model_tls_ca": "PATH",
    "model_tls_cert": "PATH", "model_tls_key": "PATH", "model_tls_server_name": "NAME",
}


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds one flag per RankerSettings field to ``parser``."""
    settings_cli.add_settings_flags(parser, RankerSettings, metavars=_METAVARS)
    parser.set_defaults(func=handle)
    return parser


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``ranker`` on a parent CLI's subparsers."""
    parser = subparsers.add_parser(
        "ranker", help="serve the RankingService (retrieve, score through Predict, merge)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(parser)


def settings_from_args(args: argparse.Namespace) -> RankerSettings:
    """RankerSettings from the environment with every flag given on top."""
    return settings_cli.settings_from_args(RankerSettings, args)


def handle(args: argparse.Namespace) -> int:
    """Runs the ranking server with these flags; returns the exit code."""
    return settings_cli.run_with_settings(RankerSettings, args, PROG, _serve)


def _serve(settings: RankerSettings) -> int:
    from rankserve.server.ranking.app import run

    return run(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rankserve.server.ranking", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    args = parser.parse_args(argv)
    return args.func(args)
