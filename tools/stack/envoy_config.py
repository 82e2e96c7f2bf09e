"""The one source of the Envoy configuration in front of the model servers (decision 6 of
docs/architecture.md).

`rankserve up` renders it with static loopback endpoints; the Helm chart renders it with a
headless Service name (STRICT_DNS) so Envoy balances per pod. Both call :func:`render`, so the
retry, outlier-detection, circuit-breaker and stats settings that were tested locally are the
ones deployed.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CLUSTER = "model_servers"
LISTENER = "model_ingress"
TRACE_CLUSTER = "otlp_collector"

# What a retry is safe for. A grpc.aio upstream stopped with SIGTERM answers CANCELLED, so
# `cancelled` must be here for a dying replica to cost no call; `retriable-headers`
# retries a call a replica shed (below). A hedge on per-try timeout needs no condition here.
RETRY_ON = "unavailable,cancelled,reset,connect-failure,refused-stream,retriable-headers"
# A replica that sheds a call (its queue is full) answers RESOURCE_EXHAUSTED with this header;
# Envoy retries such a call on another replica (never the same one: previous_hosts). A call
# refused for its own size carries no such header and is not retried anywhere.
SHED_HEADER = "grpc-retry-pushback-ms"


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int


@dataclass(frozen=True)
class Tracing:
    """Envoy's OpenTelemetry tracer: spans go over OTLP/gRPC to one collector."""

    collector_host: str
    collector_port: int
    service_name: str = "rankserve-envoy"
    # Envoy's random_sampling. It gates every request, a sampled traceparent's included: at 100
    # Envoy follows the caller's decision (measured: a sampled Rank's 40 calls get their 80
    # Envoy spans, unsampled Ranks none); at 5 it traced none of a sampled Rank's calls. A call
    # without a traceparent starts a trace at this share.
    sampling_percent: float = 100.0
    # STATIC for a literal collector address, STRICT_DNS for a Service name.
    discovery: str = "STATIC"

    @classmethod
    def from_endpoint(cls, endpoint: str, sampling_percent: float = 100.0) -> Tracing:
        """From an OTEL_EXPORTER_OTLP_ENDPOINT-style URL such as http://collector:4317."""
        url = urlparse(endpoint if "//" in endpoint else f"//{endpoint}")
        if not url.hostname:
            raise ValueError(f"OTLP endpoint {endpoint!r} names no host")
        try:
            ipaddress.ip_address(url.hostname)
            discovery = "STATIC"
        except ValueError:
            discovery = "STRICT_DNS"
        return cls(url.hostname, url.port or 4317, sampling_percent=sampling_percent,
                   discovery=discovery)


@dataclass(frozen=True)
class Cidr:
    """An address range, as Envoy's CidrRange."""

    address_prefix: str
    prefix_len: int


@dataclass(frozen=True)
class DownstreamTls:
    """TLS of Envoy's listener (PEM file paths as Envoy sees them): its own certificate and
    key, and the CA every caller's client certificate must chain to. Mutual TLS: a caller (a
    ranker) without such a certificate is refused in the handshake."""

    cert: str
    key: str
    client_ca: str


@dataclass(frozen=True)
class UpstreamTls:
    """TLS of Envoy's connections to a cluster (PEM file paths): the CA that verifies the
    servers, the name sent as SNI and required among their certificates' DNS names, and
    Envoy's own certificate and key, presented for mutual TLS."""

    ca: str
    server_name: str
    cert: str
    key: str


@dataclass(frozen=True)
class EnvoyOptions:
    """Everything that differs between deployments; the rest is policy fixed in :func:`render`."""

    upstreams: tuple[Upstream, ...]
    # STATIC for literal addresses (local stack), STRICT_DNS for a headless Service name.
    discovery: str = "STATIC"
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    num_retries: int = 2
    # Envoy's default allows 3 concurrent retries per cluster; with dozens of batches in flight a
    # dead replica overflows that and calls fail (upstream_rq_retry_overflow).
    max_retries: int = 1024
    max_requests: int = 4096
    max_pending_requests: int = 4096
    max_connections: int = 1024
    connect_timeout_ms: int = 250
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 3
    # Connect failures and timeouts in a row (a hedge's per-try timeout counts). 3 ejected the
    # one live replica of two when the machine stalled and every call outlived its hedge delay
    # (the dead one being out already, Envoy then panicked onto both); a dead replica still
    # reaches 10 within one Rank's batches.
    consecutive_local_origin_failure: int = 10
    ejection_interval_ms: int = 1000
    base_ejection_ms: int = 5000
    max_ejection_percent: int = 50
    health_check_interval_ms: int = 1000
    # LEAST_REQUEST picks the less busy of two random replicas, so a slow replica (its calls
    # pile up) gets fewer; ROUND_ROBIN ignores load.
    lb_policy: str = "LEAST_REQUEST"
    # After this long without an answer a second copy of a call goes to another replica and
    # the first answer wins (Envoy's hedge on per-try timeout). 0: no fixed delay; a trusted
    # caller's x-envoy-upstream-rq-per-try-timeout-ms header sets it per call.
    per_try_timeout_ms: int = 0
    # Callers whose requests are internal to Envoy, so their x-envoy-* headers are honoured
    # (every other caller's are stripped): the ranker sends its hedge delay, taken from the
    # batch latency it observes, in x-envoy-upstream-rq-per-try-timeout-ms. The local stack
    # trusts 127.0.0.1/32; in a cluster, the ranker pods' CIDR. None: no caller is trusted.
    trusted_callers: Cidr | None = None
    # The jittered back-off before a retry, ms: base and most. A retry goes to another replica
    # (previous_hosts), so it need not wait long; Envoy's own default is 25 ms and 250 ms.
    retry_backoff_ms: int = 2
    retry_backoff_max_ms: int = 25
    max_message_bytes: int = 64 * 1024 * 1024
    extra_clusters: tuple[dict, ...] = field(default_factory=tuple)
    # Envoy's OpenTelemetry tracer; unset (None), the rendered config has no tracing at all.
    tracing: Tracing | None = None
    # TLS of the listener the rankers call (mutual); None: plaintext.
    downstream_tls: DownstreamTls | None = None
    # TLS to the model servers, their active health checks included (mutual); None: plaintext.
    upstream_tls: UpstreamTls | None = None
    # TLS to the OTLP collector of `tracing` (mutual); None: plaintext.
    tracing_tls: UpstreamTls | None = None


def _socket(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _typed(type_name: str, **body: object) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **body}


def _stats_config() -> dict:
    """Tags that make /stats/prometheus label dotted gRPC service names correctly.

    Envoy's default tags split ``tensorflow.serving.PredictionService`` at its first dots
    (service "tensorflow", method "serving"); these regexes take the service as everything up to
    the method and the method as the component before the counter name.
    """
    return {
        "use_all_default_tags": False,
        "stats_tags": [
            {"tag_name": "envoy_cluster_name", "regex": r"^cluster\.((.+?)\.)"},
            {
                "tag_name": "grpc_service",
                "regex": r"^cluster\.[^.]+\.grpc\.((.+)\.)[^.]+\.[^.]+$",
            },
            {
                "tag_name": "grpc_method",
                "regex": r"^cluster\.[^.]+\.grpc\.(?:.+\.)?(([^.]+)\.)[^.]+$",
            },
            {"tag_name": "envoy_http_conn_manager_prefix", "regex": r"^http\.((.*?)\.)"},
            # Listener stats are prefixed with the bound address (127.0.0.1_PORT): a label, so
            # metric names stay stable when the port changes.
            {
                "tag_name": "envoy_listener_address",
                "regex": r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
            },
        ],
    }


def _route() -> dict:
    return {
        "match": {"prefix": "/"},
        "route": {
            "cluster": CLUSTER,
            # No route timeout of Envoy's own: the caller's grpc-timeout header bounds each call
            # (the ranker derives it from the Rank's remaining budget).
            "timeout": "0s",
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
            "retry_policy": {
                "retry_on": RETRY_ON,
                "num_retries": None,  # filled in by render()
                "retry_host_predicate": [
                    {
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": _typed(
                            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                        ),
                    }
                ],
                # A replica that refuses at once looks idle to LEAST_REQUEST and keeps being
                # picked; enough re-picks make a retry find another one all but surely.
                "host_selection_retry_max_attempts": 20,
                "retriable_headers": [{"name": SHED_HEADER, "present_match": True}],
                "per_try_timeout": None,  # filled in by render()
                "retry_back_off": None,  # filled in by render()
            },
            # A per-try timeout does not cancel the slow attempt: a hedge races it.
            "hedge_policy": {"hedge_on_per_try_timeout": True},
        },
    }


def _tracing(t: Tracing) -> dict:
    """HCM tracing through ``envoy.tracers.opentelemetry``: it continues the W3C traceparent
    the ranker sends and passes a new one upstream (spans `ingress` and `router ... egress`)."""
    return {
        "random_sampling": {"value": t.sampling_percent},
        # The router's own span per upstream attempt (a retry shows as a second one).
        "spawn_upstream_span": True,
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": _typed(
                "envoy.config.trace.v3.OpenTelemetryConfig",
                grpc_service={"envoy_grpc": {"cluster_name": TRACE_CLUSTER}, "timeout": "1s"},
                service_name=t.service_name,
            ),
        },
    }


def _tls_certificate(cert: str, key: str) -> dict:
    return {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}


def _downstream_tls(t: DownstreamTls) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": _typed(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            require_client_certificate=True,
            common_tls_context={
                "tls_certificates": [_tls_certificate(t.cert, t.key)],
                "validation_context": {"trusted_ca": {"filename": t.client_ca}},
                # gRPC clients insist on HTTP/2 negotiated by ALPN.
                "alpn_protocols": ["h2"],
            },
        ),
    }


def _upstream_tls(t: UpstreamTls) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": _typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            sni=t.server_name,
            common_tls_context={
                "tls_certificates": [_tls_certificate(t.cert, t.key)],
                "validation_context": {
                    "trusted_ca": {"filename": t.ca},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": t.server_name}}],
                },
                "alpn_protocols": ["h2"],
            },
        ),
    }


def _trace_cluster(t: Tracing) -> dict:
    return {
        "name": TRACE_CLUSTER,
        "type": t.discovery,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
        },
        "load_assignment": {
            "cluster_name": TRACE_CLUSTER,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket(t.collector_host, t.collector_port)}}
            ]}],
        },
    }


def render(opts: EnvoyOptions) -> dict:
    """The full bootstrap configuration as a JSON-serialisable dict."""
    if not opts.upstreams:
        raise ValueError("Envoy needs at least one model-server upstream")
    if opts.discovery not in ("STATIC", "STRICT_DNS"):
        raise ValueError(f"discovery must be STATIC or STRICT_DNS, not {opts.discovery!r}")
    tracing = opts.tracing
    if tracing and not 0 <= tracing.sampling_percent <= 100:
        raise ValueError("tracing.sampling_percent must be within 0..100")
    route = _route()
    route["route"]["retry_policy"]["num_retries"] = opts.num_retries
    retry = route["route"]["retry_policy"]
    retry["per_try_timeout"] = f"{opts.per_try_timeout_ms / 1000:g}s"
    retry["retry_back_off"] = {"base_interval": f"{opts.retry_backoff_ms / 1000:g}s",
                               "max_interval": f"{opts.retry_backoff_max_ms / 1000:g}s"}
    hcm = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=LISTENER,
        codec_type="AUTO",
        # The caller's own address decides whether it is internal (trusted_callers); with no
        # trusted caller every x-envoy-* request header is stripped.
        use_remote_address=True,
        http2_protocol_options={"max_concurrent_streams": 1024},
        route_config={
            "name": "model_routes",
            "virtual_hosts": [{"name": "model_servers", "domains": ["*"], "routes": [route]}],
        },
        http_filters=[
            {
                "name": "envoy.filters.http.grpc_stats",
                "typed_config": _typed(
                    "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                    emit_filter_state=True,
                    stats_for_all_methods=True,
                ),
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
            },
        ],
    )
    if opts.trusted_callers:
        hcm["internal_address_config"] = {"cidr_ranges": [{
            "address_prefix": opts.trusted_callers.address_prefix,
            "prefix_len": opts.trusted_callers.prefix_len}]}
    cluster = {
        "name": CLUSTER,
        "type": opts.discovery,
        "lb_policy": opts.lb_policy,
        "connect_timeout": f"{opts.connect_timeout_ms / 1000:g}s",
        "per_connection_buffer_limit_bytes": opts.max_message_bytes,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {"max_concurrent_streams": 1024}},
            )
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": opts.max_connections,
                    "max_pending_requests": opts.max_pending_requests,
                    "max_requests": opts.max_requests,
                    "max_retries": opts.max_retries,
                }
            ]
        },
        "outlier_detection": {
            "consecutive_5xx": opts.consecutive_5xx,
            "consecutive_gateway_failure": opts.consecutive_gateway_failure,
            "consecutive_local_origin_failure": opts.consecutive_local_origin_failure,
            "split_external_local_origin_errors": True,
            "interval": f"{opts.ejection_interval_ms / 1000:g}s",
            "base_ejection_time": f"{opts.base_ejection_ms / 1000:g}s",
            "max_ejection_percent": opts.max_ejection_percent,
        },
        # Active gRPC health checks take a replica that is loading or draining (NOT_SERVING) out
        # of rotation before a request finds out. Without no_traffic_interval Envoy checked a
        # replica once at start and then every 60 s, traffic or not (measured: a draining
        # replica stayed "healthy" for its whole drain).
        "health_checks": [
            {
                "timeout": "1s",
                "interval": f"{opts.health_check_interval_ms / 1000:g}s",
                "no_traffic_interval": f"{opts.health_check_interval_ms / 1000:g}s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket(u.host, u.port)}} for u in opts.upstreams
                    ]
                }
            ],
        },
    }
    if opts.discovery == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_ONLY"
        # A terminating pod leaves the headless Service's DNS answer at once; by default Envoy
        # would keep it until its health checks fail, which TF Serving's (it has no
        # NOT_SERVING drain) never do before it exits.
        cluster["ignore_health_on_host_removal"] = True
    if opts.upstream_tls:
        cluster["transport_socket"] = _upstream_tls(opts.upstream_tls)
    extra = list(opts.extra_clusters)
    if tracing:
        hcm["tracing"] = _tracing(tracing)
        trace_cluster = _trace_cluster(tracing)
        if opts.tracing_tls:
            trace_cluster["transport_socket"] = _upstream_tls(opts.tracing_tls)
        extra.append(trace_cluster)
    chain: dict = {
        # Named, so the chart's generator (deploy/envoy_chart.py) knows it for the same chain
        # with TLS on and off.
        "name": LISTENER,
        "filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
        ]
    }
    if opts.downstream_tls:
        chain["transport_socket"] = _downstream_tls(opts.downstream_tls)
    return {
        "admin": {"address": _socket(opts.admin_host, opts.admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": LISTENER,
                    "address": _socket(opts.listen_host, opts.listen_port),
                    "per_connection_buffer_limit_bytes": opts.max_message_bytes,
                    "filter_chains": [chain],
                }
            ],
            "clusters": [cluster, *extra],
        },
        "stats_config": _stats_config(),
    }


def write(opts: EnvoyOptions, path: Path) -> Path:
    """Writes the config as JSON (a YAML subset Envoy reads by the .json extension)."""
    path.write_text(json.dumps(render(opts), indent=2))
    return path
