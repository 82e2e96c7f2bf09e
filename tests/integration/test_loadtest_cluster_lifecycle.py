"""Create, wait, load, delete: the temporary deployment's lifecycle, also when interrupted.

The Kubernetes API is the one stand-in (tests/support/fake_kube.py: no API server can run on
this machine). The objects are the real chart's, the load is real gRPC from the real runner,
through the real loopback relay, to a real Predict server process (the pod's stand-in, reached
as a port-forward would reach it). Every test checks that no object of the run is left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time

import pytest
import yaml

from rankserve.loadtest.runner import LoadSpec, run
from rankserve.loadtest.stats import summarize
from tests.support.catalog import make_catalog
from tests.support.chart import helm
from tests.support.processes import predict_process

pytestmark = pytest.mark.timeout(120)

VALUES = {"modelServer": {"runtime": "rankserve", "modelStore": {"claimName": "models"}}}
OTHER = ("ml", "Deployment", "prod-rankserve-model-server")


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    from rankserve.loadtest.sources import synthesize

    catalog = make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=2000)
    return synthesize("predict", catalog, requests=2, batch_size=25, model=None)


def _setup(tmp_path, **fake_kw):
    helm()
    from rankserve.loadtest.k8s import Cluster, ModelVersion, plan
    from tests.support.fake_kube import FakeKube

    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(VALUES))
    p = plan(ModelVersion("ranker", 1), "ml", values_file=f, replicas=2)
    kube = FakeKube(**fake_kw)
    # Someone else's release in the same namespace: it must survive every run.
    kube.store[OTHER] = {"metadata": {"name": OTHER[2], "labels": {"app": "prod"}},
                         "spec": {"replicas": 1, "template": {
                             "metadata": {"labels": {"app": "prod"}},
                             "spec": {"containers": [{"name": "model-server"}]}}}}
    return p, kube, Cluster


def _cluster(Cluster, kube, address: str | None):
    def forward(pod: str, namespace: str, port: int):
        host, p = address.rsplit(":", 1)
        return socket.create_connection((host, int(p)))

    return Cluster(kube, kube, kube, forward=forward)


def _left(kube):
    return [o for o in kube.objects() if o != OTHER[1:]]


def test_a_run_creates_waits_loads_through_the_relay_and_deletes_everything(
        tmp_path, payloads):
    from rankserve.loadtest.k8s import temporary_deployment

    p, kube, Cluster = _setup(tmp_path, ready_after=2)
    said: list[str] = []
    with predict_process(tmp_path) as srv:
        cluster = _cluster(Cluster, kube, srv["address"])
        with temporary_deployment(cluster, p, timeout_s=30, say=said.append,
                                  poll_s=0.01) as target:
            assert sorted(kube.objects("ml")) == sorted(
                [(o["kind"], o["metadata"]["name"]) for o in p.objects] + [OTHER[1:]])
            assert target.address.startswith("127.0.0.1:") and target.server_pids == ()
            out = asyncio.run(run(target, payloads, LoadSpec(
                # The cap counts warm-up calls too: high enough that a fast machine still
                # has calls left after the warm-up, low enough to bound the run.
                mode="closed", concurrency=4, duration_s=1.0, warmup_s=0.2,
                max_requests=5000)))
    s = summarize(out)
    assert s["requests"]["counted"] > 0 and s["status_codes"] == {
        "OK": s["requests"]["counted"]}
    assert _left(kube) == [] and OTHER in kube.store
    creates = [c for c in kube.calls if c[0] == "create"]
    deletes = [c for c in kube.calls if c[0] == "delete"]
    assert sorted(c[1:] for c in creates) == sorted(c[1:] for c in deletes)
    assert any(m.startswith("waiting for replicas") for m in said), said
    assert any(m.startswith("available after") for m in said), said
    assert said[-1].startswith(f"deleted {len(p.objects)} object(s) of run {p.run_id}"), said


def _interrupt_during_load(tmp_path, payloads, signum: int, expected: type[BaseException]):
    from rankserve.loadtest.k8s import temporary_deployment

    p, kube, Cluster = _setup(tmp_path, ready_after=0)
    said: list[str] = []
    sent = threading.Event()
    with predict_process(tmp_path) as srv:
        cluster = _cluster(Cluster, kube, srv["address"])
        start = time.monotonic()
        with pytest.raises(expected):
            with temporary_deployment(cluster, p, timeout_s=30, say=said.append,
                                      poll_s=0.01) as target:
                def kill_soon() -> None:
                    time.sleep(0.8)
                    sent.set()
                    os.kill(os.getpid(), signum)

                threading.Thread(target=kill_soon, daemon=True).start()
                asyncio.run(run(target, payloads, LoadSpec(
                    mode="closed", concurrency=2, duration_s=20.0, warmup_s=0.0)))
        elapsed = time.monotonic() - start
    assert sent.is_set() and elapsed < 10, elapsed  # stopped by the signal, not by the end
    assert _left(kube) == [] and OTHER in kube.store
    assert any(m.startswith(f"deleted {len(p.objects)} object(s)") for m in said), said


def test_sigterm_during_the_load_still_deletes_every_object(tmp_path, payloads):
    from rankserve.loadtest.k8s import Terminated

    before = signal.getsignal(signal.SIGTERM)
    _interrupt_during_load(tmp_path, payloads, signal.SIGTERM, Terminated)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the run's only


def test_ctrl_c_during_the_load_still_deletes_every_object(tmp_path, payloads):
    _interrupt_during_load(tmp_path, payloads, signal.SIGINT, KeyboardInterrupt)


def test_a_deployment_that_never_becomes_available_times_out_and_is_deleted(tmp_path):
    from rankserve.loadtest.k8s import DeployTimeout, temporary_deployment

    p, kube, Cluster = _setup(tmp_path, ready_after=None, waiting_reason="ImagePullBackOff")
    said: list[str] = []
    with pytest.raises(DeployTimeout) as err:
        with temporary_deployment(_cluster(Cluster, kube, None), p, timeout_s=0.3,
                                  say=said.append, poll_s=0.05):
            pytest.fail("yielded a target although nothing became available")
    assert "was not available within 0 s" in str(err.value)
    assert "ImagePullBackOff" in str(err.value) and "model-server 0/2" in str(err.value)
    assert _left(kube) == [] and OTHER in kube.store


def test_a_name_that_exists_already_stops_the_run_and_leaves_that_object_alone(tmp_path):
    from rankserve.loadtest.k8s import ClusterError, temporary_deployment

    p, kube, Cluster = _setup(tmp_path)
    clash = p.objects[2]
    owner = ("ml", clash["kind"], clash["metadata"]["name"])
    kube.store[owner] = {"metadata": {"name": owner[2], "labels": {"app": "someone"}}}
    with pytest.raises(ClusterError, match="already exists"):
        with temporary_deployment(_cluster(Cluster, kube, None), p, say=lambda m: None):
            pytest.fail("yielded a target after a name clash")
    assert owner in kube.store and OTHER in kube.store
    assert sorted(_left(kube)) == [owner[1:]]  # only the clashing object, not created by us


def test_keep_leaves_the_objects_and_prints_how_to_delete_them(tmp_path):
    from rankserve.loadtest.k8s import temporary_deployment

    p, kube, Cluster = _setup(tmp_path, ready_after=0)
    said: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    addr = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with temporary_deployment(_cluster(Cluster, kube, addr), p, keep=True,
                                  say=said.append, poll_s=0.01):
            pass
    finally:
        listener.close()
    assert len(_left(kube)) == len(p.objects)
    assert f"delete deployment,service,networkpolicy,configmap,serviceaccount -l" \
           f" rankserve.dev/loadtest-run={p.run_id}" in said[-1]
