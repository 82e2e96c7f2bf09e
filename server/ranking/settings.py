"""Settings of the ranking server: one class, environment prefix RANKSERVE_RANKER_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RankerSettings(BaseSettings):
    """Everything the ranking server can be told; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="RANKSERVE_RANKER_", extra="ignore",
                                      protected_namespaces=())

    host: str = Field("127.0.0.1", description="Address to bind the gRPC server to.")
    port: int = Field(8080, ge=0, le=65535,
                      description="gRPC port; 0 picks a free one (read it from the ready file).")
    metrics_port: int = Field(
        9464, ge=0, le=65535,
        description="Port of the Prometheus /metrics endpoint (on host); 0 picks a free one.")
    catalog_dir: str = Field(
        "", description="Directory of the embedded catalog (item ids, features, embeddings):"
        " retrieval over its embeddings, and its arrays as item and user features. Empty:"
        " no retrieval of its own (requests bring their candidates) and features only from"
        " --item-features / --user-features.")
    spec: str = Field(
        "", description="Feature spec of the model (YAML or JSON): its signature inputs and"
        " the item, user and request features that fill them. Empty: spec.yaml in"
        " --catalog-dir.")
    model_specs: str = Field(
        "", description="Specs of models that take other inputs than --spec's, as"
        " NAME=FILE,NAME=FILE (experiment arms and shadows of another model); every other"
        " model is fed by --spec.")
    spec_check_timeout_s: float = Field(
        5.0, ge=0, description="At start-up, how long to wait for the default model's"
        " signature (GetModelMetadata) to check the spec against; a spec that does not fit"
        " stops the start, a model that cannot be asked is logged.")
    item_features: str = Field(
        "", description="Item feature store: a table directory written by `rankserve features"
        " import`, redis://HOST:PORT/DB or unix:///PATH for Redis, or empty for the catalog's"
        " arrays.")
    user_features: str = Field(
        "", description="User feature store, as --item-features; empty for the catalog's"
        " arrays.")
    model_target: str = Field(
        "127.0.0.1:8500",
        description="host:port of Envoy or of one model server speaking TF Serving's Predict.")
    model_name: str = Field("ranker", description="Model that scores requests naming none.")
    model_label: str = Field(
        "", description="Version label of the default model, e.g. 'stable'; empty for none.")
    model_version: int = Field(
        0, ge=0, description="Version of the default model; 0 means latest (or the label).")
    batch_size: int = Field(25, ge=5, le=25,
                            description="Candidates per Predict call (5..25).")
    max_in_flight: int = Field(
        0, ge=0,
        description="Predict calls in flight at once, over all requests. 0: as many as the"
        " Ranks admitted at once (--max-concurrent-ranks, or 2 per CPU) send for"
        " --default-candidates at --batch-size, so no admitted Rank's calls wait for another's"
        " to answer. A bound below that spreads a Rank's calls out in time and the model servers"
        " merge fewer of them: on the local stack (2 cores, 4 Ranks at once, 160 calls), 64,"
        " the fixed default before, made 5.4 model calls per Rank where 160 made 4.0; 160 and"
        " more gave 11-19% more Ranks/s at 11-16% less CPU per Rank (two runs).")
    compression: Literal["none", "gzip", "deflate"] = Field(
        "none", description="Compress Predict requests (costs CPU, saves bytes). Measured on"
        " loopback: gzip and deflate halve the bytes at 2.2-2.5x the CPU per Rank; a model that"
        " declares float16 inputs halves them at no CPU cost (bench/results/rank_bench.md).")
    gzip_min_bytes: int = Field(
        16384, ge=0, description="With a codec on, only requests at least this large are"
        " compressed.")
    admission_control: bool = Field(
        True,
        description="Admit a bounded amount of work (--max-concurrent-ranks) and answer the rest"
        " RESOURCE_EXHAUSTED at once with a grpc-retry-pushback-ms hint, so past capacity the"
        " admitted calls keep their latency; off, every call is admitted and past capacity all"
        " of them miss their deadlines.")
    max_concurrent_ranks: int = Field(
        0, ge=0,
        description="Rank calls served at once; 0: 2 per CPU this process may use (its cgroup's"
        " CPU quota, else its CPU affinity). Measured on the local stack with the ranker alone"
        " on one core: 2 kept the answered p99 at 4x the load within 1.2-1.65x of its p99 at"
        " capacity over three runs (bench/results/overload_bench.md); in shorter runs of that"
        " benchmark 3 and 4 let it grow to 2.5x and 3.6x.")
    max_queued_ranks: int = Field(
        4, ge=0,
        description="Rank calls that may wait for a slot when all are busy, and only while the"
        " expected wait (from recent Rank durations) is within --max-queue-wait-ms; any other"
        " call is refused at once, before it is parsed. 4 absorbs a burst of callers a"
        " little above the slots without letting a queue build.")
    max_queue_wait_ms: float = Field(
        50.0, ge=0,
        description="Longest a Rank may wait for a slot (a call that waited this long in vain"
        " is refused then); it bounds what queueing adds to an admitted call's latency: 50 ms is"
        " under half the local stack's p99 at capacity (106-129 ms).")
    trace_keep_slower_than_ms: float = Field(
        0.0, ge=0,
        description="With tracing on: keep the whole trace of every Rank that took at least"
        " this long or failed, whatever head sampling (OTEL_TRACES_SAMPLER_ARG) decided; the"
        " spans of other unsampled Ranks are recorded, held in memory for a few seconds and"
        " dropped. The model servers need --trace-hold-s to keep their part. 0: head sampling"
        " alone decides.")
    hedge_quantile: float = Field(
        0.0, ge=0, lt=1,
        description="Envoy sends a copy of a Predict call that is still unanswered after"
        " --hedge-factor times this quantile of recent call latencies to another replica;"
        " the first answer wins. Envoy honours the delay only from a trusted caller (its"
        " trusted_callers). 0 (the default): no hedging. 0.1 is the measured choice: with"
        " --hedge-factor 3 it held Rank p99 with a 10x slower replica at 1.22x the healthy"
        " stack's (1.45x without), for 1.3% extra Predicts (bench/results/slow_replica_bench.md);"
        " a median or p95 sits on the slow replica's calls and never hedges them. Off by"
        " default because a replica killed mid-stream then cost Ranks: calls whose copy went"
        " to the dead replica failed, and with no call succeeding the delay stopped adapting.")
    hedge_factor: float = Field(
        3.0, ge=1, description="Multiple of the --hedge-quantile latency that a call waits"
        " before its copy is sent (see --hedge-quantile for what 3 measured).")
    hedge_min_ms: float = Field(
        5.0, ge=0, description="Shortest hedge delay, ms, however fast recent calls were.")
    default_candidates: int = Field(
        1000, ge=1, description="Candidates retrieved when a request sets no candidate_limit.")
    max_candidates: int = Field(5000, ge=1,
                                description="Largest candidate_limit a request may ask for.")
    default_deadline_ms: float = Field(
        1000.0, gt=0, description="Budget of a call that arrives without a deadline.")
    min_score_budget_ms: float = Field(
        5.0, ge=0,
        description="Least budget left for scoring; less fails fast with DEADLINE_EXCEEDED.")
    merge_reserve_ms: float = Field(
        5.0, ge=0,
        description="Budget kept back from Predict deadlines to merge and answer in time.")
    blas_threads: int = Field(
        1, ge=0,
        description="Threads numpy's BLAS may use (retrieval's matrix-vector product); 0 keeps"
                    " the library default. Idle BLAS threads spin, costing more CPU than the"
                    " parallelism saves at this size.")
    drain_s: float = Field(
        5.0, ge=0,
        description="On SIGTERM, seconds to keep serving while health answers NOT_SERVING, so"
        " the Service (readiness) and callers' health-checking balancers stop choosing this"
        " replica before it stops listening. SIGINT skips it.")
    grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM/SIGINT, after the drain, how long in-flight calls"
        " may finish.")
    routing_config: str = Field(
        "", description="Routing policy file (YAML or JSON): rules, experiments, default model;"
        " re-read when it changes. Empty: every request goes to --model-name.")
    routing_check_s: float = Field(
        1.0, gt=0, description="How often, at most, the routing file is checked for changes.")
    embeddings_root: str = Field(
        "", description="Root of versioned embeddings (<root>/<model>/<version>/items|tower|users"
        ", written by `rankserve embeddings publish`). Empty: the catalog's own embeddings.")
    embedding_model: str = Field(
        "retrieval", description="Embedding model under --embeddings-root to retrieve with.")
    embedding_refresh_s: float = Field(
        1.0, ge=0, description="How often, at most, newly published embedding versions are"
        " picked up.")
    max_message_mb: int = Field(
        64, ge=1, description="Largest gRPC message, in MiB, received or sent on any channel.")

    tls_cert: str = Field(
        "", description="Serve TLS with this certificate chain (PEM file); needs --tls-key."
        " Empty: plaintext.")
    tls_key: str = Field("", description="Private key (PEM file) of --tls-cert.")
    tls_client_ca: str = Field(
        "", description="CA (PEM file) of callers' client certificates: with it every caller"
        " must present one it verifies (mutual TLS; gRPC refuses others in the handshake), and"
        " the certificate's names are the caller's identity.")
    auth_tokens_file: str = Field(
        "", description="Bearer tokens of callers: lines 'NAME SHA256' (the SHA-256 of the"
        " token in hex, e.g. `printf %s \"$TOKEN\" | sha256sum`); re-read when it changes."
        " A call without a valid 'authorization: Bearer TOKEN' (or client certificate) gets"
        " UNAUTHENTICATED. Health checks need none.")
    auth_allowed_callers: str = Field(
        "", description="Comma list of caller names (certificate names, token names) allowed"
        " to call; any other authenticated caller gets PERMISSION_DENIED. Empty: all.")
    health_port: int | None = Field(
        None, ge=0, le=65535,
        description="Also serve grpc.health.v1 alone, in plaintext, on this port (on --host),"
        " for probes that cannot speak TLS (the kubelet's); 0 picks a free one. Empty: none.")
    model_tls_ca: str = Field(
        "", description="Call --model-target over TLS, verifying it with this CA (PEM file)."
        " Empty: plaintext, unless --model-tls-cert is set (then the system's roots).")
    model_tls_cert: str = Field(
        "", description="Client certificate chain (PEM file) presented to --model-target"
        " (mutual TLS); needs --model-tls-key.")
    model_tls_key: str = Field("", description="Private key (PEM file) of --model-tls-cert.")
    model_tls_server_name: str = Field(
        "", description="Name to check in --model-target's certificate instead of its host.")

    capture_dir: str = Field(
        "", description="Write a sample of Rank calls and their Predict calls to zstd files in"
        " this directory, for replay with `rankserve loadtest`; empty turns capture off.")
    capture_rate: float = Field(
        0.01, ge=0.0, le=1.0,
        description="Fraction of Rank calls captured when --capture-dir is set (0..1).")
    capture_max_per_minute: int = Field(
        600, ge=0, description="At most this many Rank calls captured per minute.")
    ready_file: Path | None = Field(
        None, description='Once serving, write {"address": "127.0.0.1:PORT", "pid": PID,'
        ' "metrics_address": "127.0.0.1:PORT"} here (atomically), so a parent process can find'
        " the ports picked by --port 0 and --metrics-port 0.")

    @model_validator(mode="after")
    def _one_version(self) -> RankerSettings:
        if self.model_label and self.model_version:
            raise ValueError("set model_label or model_version, not both")
        if self.default_candidates > self.max_candidates:
            raise ValueError("default_candidates may not exceed max_candidates")
        return self
