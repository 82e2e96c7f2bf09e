"""The local stack over mutual TLS (`rankserve up --tls`): every gRPC hop encrypted, callers
authenticated, traces and metrics as before.

The stack's own ranker takes callers with a certificate of the stack's CA (mutual TLS: gRPC
refuses any other in the handshake). A second ranker, started here over the same Envoy with
server-side TLS and the stack's tokens file, takes bearer tokens: it is the one that answers
UNAUTHENTICATED, counts each refusal, and lets no refused call reach Envoy or a model server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter

import grpc
import pytest

from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.server.common.tls import TlsFiles
from rankserve.server.telemetry.interceptors import TracingClientInterceptor
from rankserve.server.telemetry.tracing import exporting_provider, shutdown_provider
from rankserve.tools.stack.certs import CALLER, CertificateAuthority
from rankserve.tools.stack.processes import Child, start, stop, wait_ready_file
from rankserve.tools.traces.trace_cmd import fetch_trace
from rankserve.tools.traces.waterfall import orphans
from tests.e2e.conftest import make_stack
from tests.e2e.test_stack import rank_request

pytestmark = pytest.mark.slow
RANK = "rankserve.ranking.v1.RankingService/Rank"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def tls_stack(demo_paths, tmp_path_factory):
    s = make_stack(demo_paths, tmp_path_factory.mktemp("tls-stack"), tls=True)
    with s:
        yield s


@pytest.fixture(scope="module")
def token_ranker(tls_stack, demo_paths):
    """A second ranker over the stack's Envoy: server TLS, callers by bearer token."""
    pki, run_dir = tls_stack.pki, tls_stack.run_dir
    own = pki.pair("ranker")
    ready = run_dir / "token-ranker.ready"
    child = Child("token-ranker", [
        sys.executable, "-m", "rankserve.server.ranking", "--host", "127.0.0.1", "--port", "0",
        "--metrics-port", "0", "--ready-file", str(ready),
        "--catalog-dir", str(demo_paths.catalog_dir),
        "--model-target", tls_stack.envoy.address,
        "--tls-cert", str(own.cert), "--tls-key", str(own.key),
        "--auth-tokens-file", str(pki.tokens_file), "--auth-allowed-callers", CALLER,
        "--model-tls-ca", str(pki.ca), "--model-tls-cert", str(own.cert),
        "--model-tls-key", str(own.key)], run_dir / "token-ranker.log")
    start(child, env=tls_stack.child_env("rankserve-token-ranker", own))
    try:
        info = wait_ready_file(child, ready, 120)
        child.extra["metrics_address"] = info["metrics_address"]
        yield child
    finally:
        stop(child, 5)


def _rank(address: str, tls: TlsFiles, metadata=(), provider=None, i: int = 0):
    channel = grpc.secure_channel(address, tls.channel_credentials())
    try:
        if provider is not None:
            channel = grpc.intercept_channel(
                channel, TracingClientInterceptor(provider.get_tracer("e2e")))
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        return stub.Rank(rank_request(i), timeout=20, metadata=metadata or None)
    finally:
        channel.close()


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_rank_over_mutual_tls_is_one_trace_and_every_process_serves_metrics(tls_stack) -> None:
    pki = tls_stack.pki
    assert tls_stack.otlp_endpoint.startswith("https://")
    caller = TlsFiles(str(pki.caller.cert), str(pki.caller.key), str(pki.ca))
    provider = exporting_provider("e2e-client", tls_stack.otlp_endpoint,
                                  tls=TlsFiles(str(pki.caller.cert), str(pki.caller.key),
                                               str(pki.ca)))
    try:
        resp = _rank(tls_stack.ranker.address, caller, provider=provider)
    finally:
        shutdown_provider(provider)
    assert not resp.degradation.degraded and resp.degradation.total_batches == 40
    spans = fetch_trace(tls_stack.receiver_http, resp.trace_id, wait_s=20)
    kinds = Counter(s["service"] for s in spans)
    # client 1 + ranker (server, 6 stages, 40 batches) + Envoy 2 x 40 + model servers 40 (queue
    # wait and inference are events of their spans).
    assert kinds == {"e2e-client": 1, "rankserve-ranker": 47, "rankserve-envoy": 80,
                     "rankserve-model-server": 40}, kinds
    assert orphans(spans) == []

    ranker = _get(f"http://{tls_stack.ranker.extra['metrics_address']}/metrics")
    assert _sample(ranker, "rankserve_rank_duration_seconds_count", outcome="OK") >= 1
    for ms in tls_stack.model_servers:
        assert "rankserve_" in _get(f"http://{ms.extra['metrics_address']}/metrics")
    # Envoy really speaks TLS on both sides: handshakes with the ranker and the model servers.
    stats = _get(f"http://{tls_stack.envoy_admin}/stats?filter=ssl.handshake")
    handshakes = {line.split(":")[0]: int(line.split(":")[1]) for line in stats.splitlines()}
    assert handshakes.get("cluster.model_servers.ssl.handshake", 0) >= 2, handshakes
    assert any(k.startswith("listener.") and v >= 1 for k, v in handshakes.items()), handshakes


def test_the_printed_rank_command_line_works_and_others_are_refused_in_the_handshake(
        tls_stack, tmp_path) -> None:
    pki = tls_stack.pki
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.tools", "rank", "red leather bag", "--target",
         tls_stack.ranker.address, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.caller.cert),
         "--tls-key", str(pki.caller.key)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "OTEL_SDK_DISABLED": "true"})
    assert out.returncode == 0, out.stderr
    assert "model ranker version" in out.stdout

    # gRPC's TLS server refuses a caller without a certificate of the stack's CA before a
    # request exists: the caller sees UNAVAILABLE.
    other = CertificateAuthority("another CA")
    stranger = other.write_pair(tmp_path, "stranger", *other.issue("stranger"))
    for tls in (TlsFiles(ca=str(pki.ca)), TlsFiles(str(stranger.cert), str(stranger.key),
                                                   str(pki.ca))):
        assert _code(lambda t=tls: _rank(tls_stack.ranker.address, t)) == (
            grpc.StatusCode.UNAVAILABLE)
    # Plaintext to any TLS hop fails too (the ranker, Envoy).
    for address in (tls_stack.ranker.address, tls_stack.envoy.address):
        with grpc.insecure_channel(address) as ch:
            assert _code(lambda c=ch: ranking_pb2_grpc.RankingServiceStub(c).Rank(
                rank_request(), timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_callers_without_a_valid_token_get_unauthenticated_and_reach_no_model_server(
        tls_stack, token_ranker, tmp_path) -> None:
    pki = tls_stack.pki
    address = token_ranker.address
    plain = TlsFiles(ca=str(pki.ca))
    other = CertificateAuthority("another CA")
    stranger = other.write_pair(tmp_path, "stranger", *other.issue("stranger"))
    foreign = TlsFiles(str(stranger.cert), str(stranger.key), str(pki.ca))

    client = TlsFiles(str(pki.caller.cert), str(pki.caller.key), str(pki.ca))
    provider = exporting_provider("e2e-refused", tls_stack.otlp_endpoint, tls=client)
    tracer = provider.get_tracer("e2e")
    refused_traces = []
    try:
        for tls, metadata in ((plain, ()), (foreign, ()),
                              (plain, (("authorization", "Bearer not-the-token"),))):
            with tracer.start_as_current_span("refused call") as span:
                refused_traces.append(format(span.get_span_context().trace_id, "032x"))
                code = _code(lambda t=tls, m=metadata: _rank(address, t, m, provider))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        ok = _rank(address, plain, (("authorization", f"Bearer {pki.token}"),), provider)
    finally:
        shutdown_provider(provider)
    assert not ok.degradation.degraded and ok.degradation.total_batches == 40

    # The admitted call is traced down to the model servers; the refused ones stop at the
    # caller: no span of the ranker, Envoy or a model server.
    spans = fetch_trace(tls_stack.receiver_http, ok.trace_id, wait_s=20)
    assert Counter(s["service"] for s in spans)["rankserve-model-server"] == 40
    for trace_id in refused_traces:
        services = {s["service"] for s in fetch_trace(tls_stack.receiver_http, trace_id,
                                                      wait_s=3)}
        assert services <= {"e2e-refused"}, services

    metrics = _get(f"http://{token_ranker.extra['metrics_address']}/metrics")
    assert _sample(metrics, "rankserve_auth_refused_total", reason="missing_credentials") == 2
    assert _sample(metrics, "rankserve_auth_refused_total", reason="invalid_token") == 1
    assert _sample(metrics, "rankserve_rank_duration_seconds_count") == 1


def test_load_test_of_the_token_ranker_over_tls(tls_stack, token_ranker, demo_paths, tmp_path,
                                                capsys) -> None:
    from rankserve.tools.cli import main as rankserve_main

    pki = tls_stack.pki
    token = tmp_path / "token"
    token.write_text(pki.token)
    args = ["loadtest", "run", "--kind", "rank", "--target", token_ranker.address,
            "--catalog-dir", str(demo_paths.catalog_dir), "--rate", "4", "--duration", "2",
            "--warmup", "0.5", "--timeout-ms", "5000", "--no-progress", "--tls-ca", str(pki.ca)]
    code = rankserve_main([*args, "--token-file", str(token), "--out", str(tmp_path / "ok")])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "ok" / "report.json").read_text())["runs"][0]
    assert run["status_codes"] == {"OK": 8}
    # Without the token every call is refused, and the report says how.
    code = rankserve_main([*args, "--out", str(tmp_path / "refused")])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "refused" / "report.json").read_text())["runs"][0]
    assert run["status_codes"] == {"UNAUTHENTICATED": 8}
