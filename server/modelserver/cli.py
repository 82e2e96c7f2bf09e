"""Command line of the model server: ``rankserve model-server`` and
``python -m rankserve.server.modelserver``.

Flags override RANKSERVE_MODELSERVER_* environment settings; a flag left out keeps the
environment's value or the default. Importing this module is cheap (no TensorFlow): the server
is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

DESCRIPTION = """\
Serve TensorFlow SavedModels over TF Serving's gRPC API (PredictionService.Predict,
GetModelMetadata, ModelService.GetModelStatus): any TF Serving client works unchanged.

Models live as TF Serving lays them out: BASE/<version>/saved_model.pb, one numeric directory
per version. The server re-scans every --poll-interval-s: a new version is loaded and warmed up
before it takes traffic, and the version it replaces is unloaded once its in-flight requests
finish. Concurrent Predict calls for the same model version that share their fixed-size inputs
(e.g. one Rank's context) are merged into one model call.

examples:
  model-server --model-name ranker --model-base-path /models/ranker
  model-server --model-config-file models.config --port 0 --ready-file /tmp/ms.json

models.config is TF Serving's own --model_config_file format, e.g.:
  model_config_list {
    config {
      name: "ranker"  base_path: "/models/ranker"  model_platform: "tensorflow"
      model_version_policy { specific { versions: 1 versions: 2 } }
      version_labels { key: "stable" value: 1 }
      version_labels { key: "canary" value: 2 }
    }
  }
It is re-read on every poll, so editing a label moves traffic without a restart.

Every flag can also be set as RANKSERVE_MODELSERVER_<FLAG> (e.g. RANKSERVE_MODELSERVER_PORT).

Prometheus metrics (requests, latency, queue wait, rows per model call, inference time and
version states, by model and version) are served on --metrics-port at /metrics. Tracing
follows the standard OpenTelemetry variables: OTEL_EXPORTER_OTLP_ENDPOINT (e.g.
http://127.0.0.1:4317) turns OTLP/gRPC export on; OTEL_SERVICE_NAME (default
rankserve-model-server), OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose what is kept.
A caller's W3C traceparent (gRPC metadata) is continued.
"""


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the model server's flags to ``parser`` (defaults None: unset keeps env/defaults)."""
    add = parser.add_argument
    add("--host", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, help="gRPC port; 0 picks a free one, see --ready-file (default 8500)")
    add(
        "--metrics-port",
        type=int,
        help="port of the Prometheus /metrics endpoint on --host; 0 picks a free one, see"
        " --ready-file (default 9465)",
    )
    add("--model-name", help="serve one model under this name (needs --model-base-path)")
    add(
        "--model-base-path",
        help="directory of the model given by --model-name, holding <version>/saved_model.pb",
    )
    add(
        "--model-config-file",
        help="TF Serving model config (text ModelServerConfig) naming several models, their "
        "version policies and labels; instead of --model-name/--model-base-path",
    )
    add(
        "--version-policy",
        help="versions of --model-name to serve: 'latest:N' (newest N), 'all', or "
        "'specific:1,3' (default latest:1); config files set model_version_policy instead",
    )
    add(
        "--poll-interval-s",
        type=float,
        help="seconds between scans for new/removed versions and config re-reads (default 2)",
    )
    add(
        "--batch-max-rows",
        type=int,
        help="most rows one merged model call may hold (default 1000)",
    )
    add(
        "--batch-max-wait-ms",
        type=float,
        help="longest a call waits for others to merge with, in ms; 0 disables waiting "
        "(default 1.0)",
    )
    add(
        "--max-message-mb",
        type=int,
        help="largest request accepted, in MiB; larger ones get RESOURCE_EXHAUSTED (default 64)",
    )
    add(
        "--intra-op-threads",
        type=int,
        help="threads TensorFlow uses inside one op, like TF Serving's"
        " --tensorflow_intra_op_parallelism (default 0: one per core). With several replicas"
        " on few cores, 1 stops idle pool threads from spinning on cores that serve requests",
    )
    add(
        "--inter-op-threads",
        type=int,
        help="ops TensorFlow runs at once, like TF Serving's --tensorflow_inter_op_parallelism"
        " (default 0: one per core)",
    )
    add(
        "--grace-s",
        type=float,
        help="on SIGTERM/SIGINT, seconds in-flight calls get to finish (default 5)",
    )
    add(
        "--ready-file",
        help='once SERVING, write {"address": "HOST:PORT", "pid": PID, "metrics_address":'
        ' "HOST:PORT"} to this path (atomically), so a launcher can read the ports back',
    )
    parser.set_defaults(func=handle)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``model-server`` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "model-server",
        help="serve TensorFlow SavedModels over TF Serving's gRPC API",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(parser)


_FIELDS = (
    "host",
    "port",
    "metrics_port",
    "model_name",
    "model_base_path",
    "model_config_file",
    "version_policy",
    "poll_interval_s",
    "batch_max_rows",
    "batch_max_wait_ms",
    "max_message_mb",
    "intra_op_threads",
    "inter_op_threads",
    "grace_s",
    "ready_file",
)


def settings_from_args(args: argparse.Namespace):
    """Settings from the environment with every given flag on top."""
    from .settings import ModelServerSettings

    given = {f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None}
    return ModelServerSettings(**given)


def handle(args: argparse.Namespace) -> int:
    """Run the model server with these flags; returns the exit code."""
    from pydantic import ValidationError

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        from rankserve.server.common.settings_errors import report_invalid_settings

        return report_invalid_settings("model-server", exc)
    from .app import run
    from .errors import ConfigError

    try:
        return run(settings)
    except ConfigError as exc:
        print(f"model-server: {exc.message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rankserve.server.modelserver``."""
    parser = argparse.ArgumentParser(
        prog="python -m rankserve.server.modelserver",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    return args.func(args)
