"""The ranker's auth interceptor on a real TLS gRPC server (in process, 127.0.0.1 port 0).

A stand-in unary method behind the ranker's interceptor order (auth, tracing, error mapping)
shows what a refused call touches: nothing. Its request is never parsed, no span is made and
the handler never runs; the refusal is counted by reason. Health stays open.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from rankserve.server.common import ErrorMappingInterceptor, HealthState
from rankserve.server.common.tls import TlsFiles
from rankserve.server.ranking.auth import AuthInterceptor, CallerAuth, TokenFile
from rankserve.server.telemetry.interceptors import TracingServerInterceptor
from rankserve.tools.stack.certs import CALLER, CertificateAuthority, make_local_pki

METHOD = "/test.Echo/Echo"


class Seen:
    def __init__(self) -> None:
        self.parsed = 0
        self.handled = 0


async def _server(pki, *, client_ca: bool, tokens: bool, allowed=()):
    seen = Seen()

    def parse(data: bytes) -> bytes:
        seen.parsed += 1
        return data

    async def echo(request: bytes, context) -> bytes:
        seen.handled += 1
        return request

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    auth = CallerAuth(certificates=client_ca,
                      tokens=TokenFile(pki.tokens_file) if tokens else None, allowed=allowed)
    server = grpc.aio.server(interceptors=[
        AuthInterceptor(auth, registry), TracingServerInterceptor(provider.get_tracer("t")),
        ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, parse, lambda b: b)})])
    health = HealthState(server, ["test.Echo"])
    ranker = pki.pair("ranker")
    tls = TlsFiles(str(ranker.cert), str(ranker.key), str(pki.ca) if client_ca else "")
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    await health.set(True)
    return server, port, seen, exporter, registry


async def _call(port, tls: TlsFiles, metadata=()):
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", tls.channel_credentials()) as ch:
        try:
            await ch.unary_unary(METHOD)(b"payload", timeout=5, metadata=metadata or None)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details()
        return grpc.StatusCode.OK, ""


def _refused(registry, reason: str) -> float:
    return registry.get_sample_value("rankserve_auth_refused_total", {"reason": reason})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_local_pki(tmp_path_factory.mktemp("pki"), ["ranker"], days=1)


async def test_token_callers_over_server_tls(pki) -> None:
    server, port, seen, exporter, registry = await _server(pki, client_ca=False, tokens=True)
    try:
        plain = TlsFiles(ca=str(pki.ca))
        code, details = await _call(port, plain)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
        code, _ = await _call(port, plain, (("authorization", "Bearer nope"),))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # A client certificate of another CA is not asked for and proves nothing.
        other = CertificateAuthority("another CA")
        stranger = other.write_pair(pki.directory, "stranger", *other.issue("stranger"))
        code, _ = await _call(port, TlsFiles(str(stranger.cert), str(stranger.key),
                                             str(pki.ca)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert (seen.parsed, seen.handled, exporter.get_finished_spans()) == (0, 0, ())
        assert _refused(registry, "missing_credentials") == 2
        assert _refused(registry, "invalid_token") == 1

        code, _ = await _call(port, plain, (("authorization", f"Bearer {pki.token}"),))
        assert code == grpc.StatusCode.OK
        assert (seen.parsed, seen.handled, len(exporter.get_finished_spans())) == (1, 1, 1)

        async with grpc.aio.secure_channel(f"127.0.0.1:{port}",
                                           plain.channel_credentials()) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


async def test_mutual_tls_callers_and_the_allow_list(pki) -> None:
    server, port, seen, exporter, registry = await _server(
        pki, client_ca=True, tokens=False, allowed=[CALLER])
    try:
        caller = TlsFiles(str(pki.caller.cert), str(pki.caller.key), str(pki.ca))
        assert (await _call(port, caller))[0] == grpc.StatusCode.OK
        # Another certificate of the same CA: known, not allowed.
        ranker = pki.pair("ranker")
        code, details = await _call(port, TlsFiles(str(ranker.cert), str(ranker.key),
                                                   str(pki.ca)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "rankserve-ranker" in details
        assert _refused(registry, "caller_not_allowed") == 1
        # No certificate, or one of another CA: gRPC's TLS refuses the handshake (UNAVAILABLE
        # to the caller) before a request exists.
        assert (await _call(port, TlsFiles(ca=str(pki.ca))))[0] == grpc.StatusCode.UNAVAILABLE
        assert seen.handled == 1 and len(exporter.get_finished_spans()) == 1
    finally:
        await server.stop(0)


def test_servers_refuse_to_start_on_a_tls_file_they_cannot_read(tmp_path, pki) -> None:
    """A missing certificate stops the start with exit code 2 and a line naming the flag and
    the file (the model server before TensorFlow loads)."""
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs:\n  - {name: x, per: candidate, shape: [], features: [item.p]}\n")
    missing = tmp_path / "absent.key"
    ranker = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--port", "0", "--spec", str(spec),
         "--tls-cert", str(pki.pair("ranker").cert), "--tls-key", str(missing)],
        capture_output=True, text=True, timeout=60)
    assert ranker.returncode == 2, ranker.stderr
    assert f"--tls-key {missing}: cannot read the private key" in ranker.stderr
    ranker = subprocess.run(
        [sys.executable, "-m", "rankserve.server.ranking", "--port", "0", "--spec", str(spec),
         "--auth-tokens-file", str(tmp_path / "absent.txt")],
        capture_output=True, text=True, timeout=60)
    assert ranker.returncode == 2 and "--auth-tokens-file" in ranker.stderr, ranker.stderr

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "/nowhere" } }\n')
    server = subprocess.run(
        [sys.executable, "-m", "rankserve.server.modelserver", "--port", "0",
         "--model-config-file", str(config), "--tls-cert", str(missing), "--tls-key",
         str(pki.pair("ranker").key)], capture_output=True, text=True, timeout=60)
    assert server.returncode == 2, server.stderr
    assert f"--tls-cert {missing}: cannot read the certificate chain" in server.stderr
    assert "tensorflow" not in server.stderr.lower()
