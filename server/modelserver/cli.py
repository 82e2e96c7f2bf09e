"""Command line of the model server: ``rankserve model-server`` and
``python -m rankserve.server.modelserver``.

Flags mirror ModelServerSettings; a flag given on the command line overrides the environment
variable RANKSERVE_MODELSERVER_<NAME>, which overrides the default. Importing this module is
cheap (no TensorFlow): the server is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from rankserve.server.common import settings_cli

from .settings import ModelServerSettings

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

SIGTERM drains: health turns NOT_SERVING while calls are still served for --drain-s seconds
(Envoy's health checks and the readiness probe move traffic away), then the port closes and
in-flight calls get --grace-s seconds. Ctrl-C (SIGINT) skips the drain.

Every flag can also be set as an environment variable RANKSERVE_MODELSERVER_<FLAG> (upper
case, underscores), e.g. RANKSERVE_MODELSERVER_PORT=8500; flags win.

Prometheus metrics (requests, latency, queue wait, rows per model call, inference time and
version states, by model and version) are served on --metrics-port at /metrics. Tracing
follows the standard OpenTelemetry variables: OTEL_EXPORTER_OTLP_ENDPOINT (e.g.
http://127.0.0.1:4317) turns OTLP/gRPC export on; OTEL_SERVICE_NAME (default
rankserve-model-server), OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose what is kept.
A caller's W3C traceparent (gRPC metadata) is continued.

With --profiler-port, TensorFlow's profiler service answers there: TensorBoard's profile
plugin ("capture profile", address HOST:PORT) or `rankserve loadtest run --profile HOST:PORT`
trace the running server, ops included.
"""


PROG = "model-server"

# What each flag's value looks like, beside the settings' own descriptions.
_METAVARS = {
    "host": "ADDR", "port": "PORT", "metrics_port": "PORT", "model_name": "NAME",
    "model_base_path": "DIR", "model_config_file": "FILE", "version_policy": "POLICY",
    "poll_interval_s": "SECONDS", "batch_max_rows": "N", "batch_max_wait_ms": "MS",
    "batch_idle_gap_ms": "MS", "batch_inline_below_ms": "MS",
    "max_message_mb": "MIB", "intra_op_threads": "N", "inter_op_threads": "N",
    "grace_s": "SECONDS", "drain_s": "SECONDS", "ready_file": "PATH",
    "tls_cert": "PATH", "tls_key": "PATH", "tls_client_ca": "PATH", "health_port": "PORT",
    "profiler_port": "PORT", "onnx_cache_dir": "DIR",
}


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds one flag per ModelServerSettings field to ``parser`` (unset keeps env/defaults)."""
    settings_cli.add_settings_flags(parser, ModelServerSettings, metavars=_METAVARS)
    parser.set_defaults(func=handle)
    return parser


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers the ``model-server`` subcommand on a parent CLI's subparsers."""
    parser = subparsers.add_parser(
        "model-server",
        help="serve TensorFlow SavedModels over TF Serving's gRPC API",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(parser)


def settings_from_args(args: argparse.Namespace) -> ModelServerSettings:
    """ModelServerSettings from the environment with every flag given on top."""
    return settings_cli.settings_from_args(ModelServerSettings, args)


def handle(args: argparse.Namespace) -> int:
    """Runs the model server with these flags; returns the exit code."""
    return settings_cli.run_with_settings(ModelServerSettings, args, PROG, _serve)


def _serve(settings: ModelServerSettings) -> int:
    from .app import run  # TensorFlow loads here, not when the CLI is built

    return run(settings)


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
