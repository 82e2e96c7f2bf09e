"""A stand-in for the Kubernetes API server, for the temporary-deployment lifecycle tests.

No API server can run on this machine (none in Debian, PyPI or npm, no container engine), so
this fake implements only the client methods ``loadtest.k8s.Cluster`` calls, with the same
names, arguments, return types (the client's own models) and ``ApiException`` statuses. Every
other part of those tests is real: the rendered chart, the loopback relay, the gRPC server
and the load runner.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
)
from kubernetes.client.exceptions import ApiException

_KINDS = {"service_account": "ServiceAccount", "config_map": "ConfigMap", "service": "Service",
          "network_policy": "NetworkPolicy", "deployment": "Deployment"}


class _Item:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.metadata = V1ObjectMeta(name=obj["metadata"]["name"],
                                     namespace=obj["metadata"].get("namespace"),
                                     labels=obj["metadata"].get("labels", {}))


class _List:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    """Objects by (namespace, kind, name). ``ready_after`` polls make a Deployment available;
    ``None`` never does (its pods wait with ``waiting_reason``). ``fail_create`` maps a kind
    to an ``ApiException`` status its create raises. ``calls`` records every call."""

    def __init__(self, ready_after: int | None = 1, waiting_reason: str = "ImagePullBackOff",
                 fail_create: dict[str, int] | None = None) -> None:
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.ready_after = ready_after
        self.waiting_reason = waiting_reason
        self.fail_create = fail_create or {}
        self.calls: list[tuple[str, ...]] = []
        for snake, kind in _KINDS.items():
            setattr(self, f"create_namespaced_{snake}", self._creator(kind))
            setattr(self, f"list_namespaced_{snake}", self._lister(kind))
            setattr(self, f"delete_namespaced_{snake}", self._deleter(kind))

    # core, apps and networking are all this one object
    def _creator(self, kind: str):
        def create(namespace: str, body: dict[str, Any]) -> _Item:
            name = body["metadata"]["name"]
            self.calls.append(("create", kind, name))
            if kind in self.fail_create:
                raise ApiException(status=self.fail_create[kind], reason="Refused")
            if (namespace, kind, name) in self.store:
                raise ApiException(status=409, reason="AlreadyExists")
            self.store[(namespace, kind, name)] = copy.deepcopy(body)
            return _Item(body)

        return create

    def _lister(self, kind: str):
        def list_(namespace: str, label_selector: str = "") -> _List:
            self.calls.append(("list", kind, label_selector))
            return _List([_Item(o) for (ns, k, _), o in self.store.items()
                          if ns == namespace and k == kind
                          and _matches(o["metadata"].get("labels", {}), label_selector)])

        return list_

    def _deleter(self, kind: str):
        def delete(name: str, namespace: str, propagation_policy: str | None = None) -> None:
            self.calls.append(("delete", kind, name))
            if self.store.pop((namespace, kind, name), None) is None:
                raise ApiException(status=404, reason="NotFound")

        return delete

    def read_namespaced_deployment_status(self, name: str, namespace: str) -> V1Deployment:
        obj = self.store.get((namespace, "Deployment", name))
        if obj is None:
            raise ApiException(status=404, reason="NotFound")
        self.polls[name] = self.polls.get(name, 0) + 1
        wanted = obj["spec"]["replicas"]
        ready = self.ready_after is not None and self.polls[name] > self.ready_after
        return V1Deployment(
            metadata=V1ObjectMeta(name=name),
            spec=V1DeploymentSpec(replicas=wanted, selector=V1LabelSelector(),
                                  template=V1PodTemplateSpec()),
            status=V1DeploymentStatus(available_replicas=wanted if ready else 0))

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> V1PodList:
        pods = []
        for (ns, kind, name), obj in self.store.items():
            if ns != namespace or kind != "Deployment":
                continue
            labels = obj["spec"]["template"]["metadata"]["labels"]
            if not _matches(labels, label_selector):
                continue
            ready = self.ready_after is not None and self.polls.get(name, 0) > self.ready_after
            for i in range(obj["spec"]["replicas"]):
                container = obj["spec"]["template"]["spec"]["containers"][0]["name"]
                waiting = None if ready else V1ContainerStateWaiting(
                    reason=self.waiting_reason, message="Back-off pulling image")
                pods.append(V1Pod(
                    metadata=V1ObjectMeta(name=f"{name}-{i}", labels=labels),
                    spec=V1PodSpec(containers=[V1Container(name=container)]),
                    status=V1PodStatus(
                        phase="Running" if ready else "Pending",
                        conditions=[V1PodCondition(type="Ready",
                                                   status="True" if ready else "False")],
                        container_statuses=[V1ContainerStatus(
                            name=container, ready=ready, restart_count=0, image="x",
                            image_id="", state=V1ContainerState(waiting=waiting))])))
        return V1PodList(items=pods)

    def objects(self, namespace: str | None = None) -> list[tuple[str, str]]:
        return sorted((k, n) for (ns, k, n) in self.store if namespace in (None, ns))
