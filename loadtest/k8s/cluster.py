"""The few Kubernetes API calls a temporary deployment makes, through the `kubernetes` client.

Objects are created (never applied over existing ones: a name that exists already belongs to
someone else, so the run stops), found again by the run label, and deleted. Pods are reached
through the API server's port-forward, which needs no Service address and works from a laptop
as from a CI runner outside the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# kind -> (API group attribute, snake_case name in the client's method names)
_KINDS: dict[str, tuple[str, str]] = {
    "ServiceAccount": ("core", "service_account"),
    "ConfigMap": ("core", "config_map"),
    "Service": ("core", "service"),
    "NetworkPolicy": ("networking", "network_policy"),
    "Deployment": ("apps", "deployment"),
}


class ClusterError(RuntimeError):
    """The API server refused a call; the message names the object and the reason."""


def _api_exception() -> type[Exception]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _unreachable() -> tuple[type[Exception], ...]:
    """Errors of a connection that never reached an API server (DNS, TLS, refused)."""
    from urllib3.exceptions import HTTPError

    return (HTTPError, OSError)


class Cluster:
    """``core``, ``apps`` and ``networking`` are CoreV1Api, AppsV1Api and NetworkingV1Api (or
    objects with the same methods); ``forward(pod, namespace, port)`` opens one byte stream to
    a pod's port (default: the API server's port-forward)."""

    def __init__(self, core: Any, apps: Any, networking: Any,
                 forward: Callable[[str, str, int], Any] | None = None) -> None:
        self._apis = {"core": core, "apps": apps, "networking": networking}
        self._forward = forward or self._port_forward

    @classmethod
    def from_client(cls, api_client: Any) -> Cluster:
        from kubernetes import client

        return cls(client.CoreV1Api(api_client), client.AppsV1Api(api_client),
                   client.NetworkingV1Api(api_client))

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        group, name = _KINDS[kind]
        return self._reach(getattr(self._apis[group], f"{verb}_namespaced_{name}"))

    def _reach(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def reached(*args: Any, **kw: Any) -> Any:
            try:
                return call(*args, **kw)
            except _unreachable() as exc:
                cause = getattr(exc, "reason", None) or exc
                raise ClusterError(f"the Kubernetes API server did not answer: {cause}; check"
                                   " the kubeconfig's server address and credentials") from None

        return reached

    def create(self, obj: dict[str, Any], namespace: str) -> None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            self._method("create", kind)(namespace, obj)
        except _api_exception() as exc:
            if exc.status == 409:
                raise ClusterError(f"{kind}/{name} already exists in namespace {namespace}:"
                                   " it is not this run's, so the run stops without touching"
                                   " it") from None
            raise ClusterError(f"creating {kind}/{name} in namespace {namespace} failed:"
                               f" {exc.status} {exc.reason}") from None

    def labelled(self, kinds: Iterable[str], namespace: str, selector: str
                 ) -> list[tuple[str, str]]:
        """(kind, name) of every object of ``kinds`` carrying ``selector``."""
        found = []
        for kind in kinds:
            items = self._method("list", kind)(namespace, label_selector=selector).items
            found.extend((kind, item.metadata.name) for item in items)
        return found

    def delete(self, kind: str, name: str, namespace: str) -> bool:
        """True when deleted, False when it was gone already."""
        try:
            # Background: the Deployment's ReplicaSets and pods go with it.
            self._method("delete", kind)(name, namespace, propagation_policy="Background")
        except _api_exception() as exc:
            if exc.status == 404:
                return False
            raise ClusterError(f"deleting {kind}/{name} in namespace {namespace} failed:"
                               f" {exc.status} {exc.reason}") from None
        return True

    def availability(self, name: str, namespace: str) -> tuple[int, int]:
        """(available, wanted) replicas of a Deployment."""
        dep = self._reach(self._apis["apps"].read_namespaced_deployment_status)(name, namespace)
        return int(dep.status.available_replicas or 0), int(dep.spec.replicas or 0)

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return list(self._reach(self._apis["core"].list_namespaced_pod)(
            namespace, label_selector=selector).items)

    def open_stream(self, pod: str, namespace: str, port: int) -> Any:
        return self._forward(pod, namespace, port)

    def _port_forward(self, pod: str, namespace: str, port: int) -> Any:
        from kubernetes.stream import portforward

        core = self._apis["core"]
        pf = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                         ports=str(port))
        return _ForwardedSocket(pf, port)


class _ForwardedSocket:
    """The socket of one port-forward; closing it closes the forward's websocket too."""

    def __init__(self, pf: Any, port: int) -> None:
        self._pf, self._sock = pf, pf.socket(port)

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            self._pf.close()


def pod_ready(pod: Any) -> bool:
    conds = pod.status.conditions or []
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in conds)


def pod_problems(pods: Iterable[Any]) -> list[str]:
    """Why pods are not ready, as kubectl shows it (ImagePullBackOff, CrashLoopBackOff...)."""
    out = []
    for pod in pods:
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason:
                out.append(f"{pod.metadata.name}/{cs.name}: {waiting.reason}"
                           + (f" ({waiting.message})" if waiting.message else ""))
        if not pod.status.container_statuses and pod.status.phase:
            reason = next((c.message for c in pod.status.conditions or []
                           if c.type == "PodScheduled" and c.status == "False"), "")
            out.append(f"{pod.metadata.name}: {pod.status.phase}"
                       + (f" ({reason})" if reason else ""))
    return out
