"""Settings of the local stack (`rankserve up` and `rankserve demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """One ranker, one Envoy and N model-server replicas on loopback ports."""

    model_config = SettingsConfigDict(env_prefix="RANKSERVE_STACK_", extra="forbid")

    replicas: int = Field(2, ge=1, le=8, description="Model-server replicas behind Envoy.")
    ranker_port: int = Field(
        50051, ge=0, le=65535, description="Loopback port of the ranker (0 picks a free one)."
    )
    envoy_port: int = Field(0, ge=0, le=65535, description="Loopback port of Envoy's listener.")
    catalog_dir: Path | None = Field(
        None, description="Catalog directory for the ranker; unset uses the demo catalog."
    )
    model_config_file: Path | None = Field(
        None,
        description="TF Serving model config (text format) for the model servers; unset uses"
        " the demo model.",
    )
    model_name: str = Field(
        "ranker",
        description="Model the ranker asks for by default; with model_base, the name the model"
        " servers serve it as (default: the directory's name).",
    )
    model_base: Path | None = Field(
        None,
        description="Base path of your own model (<DIR>/<version>/saved_model.pb): the model"
        " servers serve it as model_name; unset uses the demo model or model_config_file.",
    )
    spec: Path | None = Field(
        None, description="Feature spec of the model for the ranker; unset: the catalog's."
    )
    item_features: str = Field(
        "",
        description="Item feature store of the ranker (table directory, redis://..., unix://...);"
        " empty: the local Redis with redis, else the catalog's arrays.",
    )
    user_features: str = Field("", description="User feature store of the ranker, as above.")
    redis: bool = Field(
        False,
        description="Run a local redis-server on a unix socket in run_dir, the default item and"
        " user feature store of the ranker.",
    )
    batch_size: int = Field(25, ge=5, le=25, description="Candidates per Predict call.")
    compression: Literal["none", "gzip", "deflate"] = Field(
        "none", description="gRPC compression of Predict calls from the ranker."
    )
    envoy_concurrency: int = Field(1, ge=1, description="Envoy worker threads.")
    run_dir: Path | None = Field(
        None, description="Where logs and generated configs go; unset makes a temporary one."
    )
    start_timeout_s: float = Field(
        120.0, gt=0, description="How long each process may take to become ready."
    )
    grace_s: float = Field(5.0, ge=0, description="Grace period of each process on stop.")
    drain_s: float = Field(
        4.0, ge=0,
        description="When one model server or the ranker is replaced or removed (SIGTERM), how"
        " long it keeps serving while NOT_SERVING. Envoy checks health every second and drops a"
        " replica after two failed checks, so 4 s leaves it time. Stopping the whole stack"
        " skips the drain.")
    traces: bool = Field(
        True,
        description="Run a local OTLP trace receiver and have every process (Envoy included)"
        " export spans to it; off, processes export where OTEL_EXPORTER_OTLP_ENDPOINT says, or"
        " nowhere.",
    )
    trace_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of Rank calls traced (parent-based sampling).")
    trace_keep_slower_than_ms: float = Field(
        0.0, ge=0,
        description="Also keep the whole trace of every Rank at least this slow, or failed,"
        " whatever the sample ratio decided (the ranker's --trace-keep-slower-than-ms; the"
        " model servers hold unsampled spans for it). 0: the ratio alone decides.")
    onnx_models: str = Field(
        "",
        description="Models the model servers run on ONNX Runtime where it agrees with"
        " TensorFlow (their --onnx-models: comma-separated names, or '*').")
    onnx_cache_dir: Path | None = Field(
        None,
        description="Where the model servers keep their ONNX conversions (their"
        " --onnx-cache-dir), so the next `up` skips converting an unchanged model. Unset:"
        " $RANKSERVE_HOME/onnx (default ~/.cache/rankserve/onnx).")
    profiler: bool = Field(
        False,
        description="Start every model server with --profiler-port 0 (TensorFlow's profiler"
        " service) and list its address, for `rankserve loadtest run --profile` or TensorBoard.",
    )
    tls: bool = Field(
        False,
        description="Make a throw-away CA and certificates in run_dir and run every gRPC hop"
        " over mutual TLS (caller -> ranker, ranker -> Envoy, Envoy -> model servers, OTLP"
        " export to the trace receiver); callers need the printed client certificate.",
    )

    @model_validator(mode="after")
    def _own_model(self) -> StackSettings:
        if self.model_base is not None and self.model_config_file is not None:
            raise ValueError("give model_base or model_config_file, not both")
        if self.model_base is not None and "model_name" not in self.model_fields_set:
            self.model_name = self.model_base.resolve().name
        return self
