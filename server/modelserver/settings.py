"""Settings of the model server: one class, read from RANKSERVE_MODELSERVER_* and overridden by
command-line flags. Built explicitly by the caller, never at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelServerSettings(BaseSettings):
    """Everything the model server process can be told. Serve one model with ``model_name`` +
    ``model_base_path``, or several with ``model_config_file`` (TF Serving's format)."""

    model_config = SettingsConfigDict(
        env_prefix="RANKSERVE_MODELSERVER_", extra="forbid", protected_namespaces=()
    )

    host: str = Field("127.0.0.1", description="Address to bind; loopback unless exposed.")
    port: int = Field(
        8500, ge=0, le=65535,
        description="gRPC port (TF Serving's default); 0 picks a free one, see --ready-file.",
    )
    metrics_port: int = Field(
        9465, ge=0, le=65535,
        description="Port of the Prometheus /metrics endpoint on --host; 0 picks a free one,"
        " see --ready-file.",
    )
    model_name: str | None = Field(
        None,
        description="Serve one model under this name, the ModelSpec.name clients send (needs"
        " --model-base-path).",
    )
    model_base_path: Path | None = Field(
        None,
        description="Directory of the model given by --model-name, holding"
        " <version>/saved_model.pb.",
    )
    model_config_file: Path | None = Field(
        None,
        description="TF Serving model config (text ModelServerConfig) naming several models,"
        " their version policies and labels, re-read on every poll; instead of"
        " --model-name/--model-base-path.",
    )
    version_policy: str = Field(
        "latest:1",
        description="Versions of --model-name to serve: 'latest:N' (newest N), 'all' or"
        " 'specific:1,3'; config files set model_version_policy instead.",
    )
    poll_interval_s: float = Field(
        2.0, gt=0,
        description="Seconds between scans for new/removed versions and re-reads of the config.",
    )
    trace_hold_s: float = Field(
        0.0, ge=0,
        description="With tracing on: record the spans of calls whose trace was not"
        " head-sampled and hold them this many seconds, exporting a trace's when a later call"
        " names it in its x-rankserve-keep-traces header (the ranker does, for a slow or"
        " failed Rank, with --trace-keep-slower-than-ms). 0: unsampled calls are not"
        " recorded.")
    batch_max_rows: int = Field(
        1000, ge=1, description="Most rows one merged model call may hold."
    )
    batch_max_wait_ms: float = Field(
        15.0, ge=0,
        description="Longest a call waits for others to merge with, in ms, counted from the"
        " first call of its group (calls that can share a model call); 0 disables waiting. On"
        " the local stack (2 cores), 15 with --batch-idle-gap-ms 3 made 3 model calls per Rank"
        " where 5 and 1 made 7-8 (6 and 9 at 4 callers), for 6% less CPU per Rank, 5% more"
        " Ranks/s and a 10% lower p50 (20 and 4: no better).",
    )
    batch_idle_gap_ms: float | None = Field(
        3.0, ge=0,
        description="A group's merged call also runs once no Predict of that group arrived for"
        " this long, in ms, before --batch-max-wait-ms is up: a Rank's calls come in a burst"
        " the window merges whole, and a lone call waits only the gap. Empty: every call waits"
        " --batch-max-wait-ms.",
    )
    batch_inline_below_ms: float = Field(
        5.0, ge=0,
        description="A merged model call runs on the server's event loop, not on the model's"
        " thread, while the model's calls have taken less than this on average, in ms:"
        " handing a call to a thread and back costs more CPU than it saves (with the demo"
        " model, 15-25% less CPU per Predict at 40 in flight). A slower model runs on its"
        " thread, so one call never holds up health checks and other models for long; 0: every"
        " call on the thread.",
    )
    max_queued_rows: int = Field(
        20000, ge=0,
        description="Most rows that may wait for a model call, per model version (TF Serving's"
        " max_enqueued_batches x max_batch_size); a Predict that would make more wait is"
        " answered RESOURCE_EXHAUSTED at once with a grpc-retry-pushback-ms hint, and Envoy"
        " retries it on another replica. A replica left alone must queue, not refuse, what a"
        " dead one would have served: with 2000, the survivor of two refused the 4000 rows of"
        " four concurrent Ranks, Envoy retried them onto the dead replica and every Rank"
        " degraded. 20000 rows are 20 merged calls, about 100 ms of model time on the local"
        " stack. 0: no bound (calls queue until their deadlines).",
    )
    max_message_mb: int = Field(
        64, ge=1,
        description="Largest request accepted, in MiB, and the most its inputs may take once"
        " decoded (a short typed field may declare a large shape); either over it gets"
        " RESOURCE_EXHAUSTED.",
    )
    onnx_models: str = Field(
        "",
        description="Models (comma-separated names, or '*' for all) whose signatures run on"
        " ONNX Runtime: each version is loaded by TensorFlow as always, converted with tf2onnx"
        " and run on both over seeded random inputs and its warm-up requests (TF Serving's"
        " assets.extra file, if any); a signature that converts and agrees"
        " (rtol 1e-3, atol 1e-4) runs on ONNX Runtime, any other stays on TensorFlow (the log"
        " says why). Measured on the demo's model: 0.17 against 0.68 ms for a call of 300 rows.",
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description="Where --onnx-models keeps its conversions, under a digest of the"
        " SavedModel's files, the signature and tf2onnx's version: a restart, a replica sharing"
        " the directory, or the same version under another path skips converting (seconds per"
        " signature); the parity check still runs at every load, and a kept file that fails it"
        " is converted again. Unset: convert at every load.",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="Threads TensorFlow uses inside one op (TF Serving's"
        " --tensorflow_intra_op_parallelism); 0 = one per core. With several replicas on few"
        " cores, 1 stops idle pool threads from spinning on cores that serve requests.",
    )
    inter_op_threads: int = Field(
        0,
        ge=0,
        description="Ops TensorFlow runs at once (TF Serving's"
        " --tensorflow_inter_op_parallelism); 0 = one per core.",
    )
    drain_s: float = Field(
        5.0, ge=0,
        description="On SIGTERM, seconds to keep serving while health answers NOT_SERVING, so"
        " load balancers (Envoy's health checks, the kubelet's readiness probe) stop choosing"
        " this replica before it stops listening. Set it above the load balancer's detection"
        " time (Envoy: health check interval x unhealthy threshold). SIGINT skips it.")
    grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM/SIGINT, after the drain, seconds in-flight calls get"
        " to finish."
    )
    tls_cert: str = Field(
        "", description="Serve TLS with this certificate chain (PEM file); needs --tls-key."
        " Empty: plaintext.")
    tls_key: str = Field("", description="Private key (PEM file) of --tls-cert.")
    tls_client_ca: str = Field(
        "", description="Require every client (Envoy) to present a certificate this CA (PEM"
        " file) verifies: mutual TLS.")
    health_port: int | None = Field(
        None, ge=0, le=65535,
        description="Also serve grpc.health.v1 alone, in plaintext, on this port (on --host),"
        " for probes that cannot speak TLS (the kubelet's); 0 picks a free one. Empty: none.")
    profiler_port: int | None = Field(
        None, ge=0, le=65535,
        description="Serve TensorFlow's profiler service (tensorflow.ProfilerService/Profile,"
        " what TensorBoard's 'capture profile' and `rankserve loadtest --profile` call) on this"
        " port on --host, with the gRPC port's TLS; 0 picks a free one, see --ready-file."
        " Empty: no profiler. A capture traces the whole process while it runs.")
    ready_file: Path | None = Field(
        None,
        description='Once SERVING, write {"address": "HOST:PORT", "pid": PID,'
        ' "metrics_address": "HOST:PORT"} here (atomically), plus "profiler_address" with'
        " --profiler-port, so a launcher can read the ports back.",
    )

    @model_validator(mode="after")
    def _one_model_source(self) -> ModelServerSettings:
        """Exactly one way of naming models, so nothing is silently ignored."""
        single = self.model_name is not None or self.model_base_path is not None
        if single and self.model_config_file is not None:
            raise ValueError("give either model_name + model_base_path or model_config_file")
        if single and (self.model_name is None or self.model_base_path is None):
            raise ValueError("model_name and model_base_path go together")
        if self.model_config_file is not None and "version_policy" in self.model_fields_set:
            raise ValueError(
                "version_policy applies to model_name; a config file sets model_version_policy"
            )
        if not single and self.model_config_file is None:
            raise ValueError("name a model (model_name + model_base_path) or model_config_file")
        return self
