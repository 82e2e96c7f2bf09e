"""A temporary deployment as a ``TargetProvider``: create, wait, forward, yield, delete.

Deletion runs in ``finally``: after the test, after an error, after Ctrl-C, and after SIGTERM
(turned into ``Terminated`` while the deployment exists). It deletes every object carrying the
run label, plus any object this run created that the label query missed.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from rankserve.loadtest.k8s.cluster import Cluster, ClusterError, pod_problems, pod_ready
from rankserve.loadtest.k8s.manifests import KIND_ORDER, Plan
from rankserve.loadtest.targets import Target

Say = Callable[[str], None]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during the run; handled like Ctrl-C so cleanup runs."""


class DeployTimeout(RuntimeError):
    """The deployment did not become available in time; the message says what was waiting."""


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (SIGINT already raises KeyboardInterrupt) for the block's
    duration; the previous handler comes back after it. Outside the main thread, a no-op."""

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _cleanup_shielded(say: Say) -> Iterator[None]:
    """While deleting, a second Ctrl-C or SIGTERM does not cut the deletion short."""

    def hold(signum: int, frame: object) -> None:
        say("still deleting the run's objects; they would stay behind if stopped now")

    try:
        prev = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, h in prev.items():
            signal.signal(s, h)


def wait_available(cluster: Cluster, plan: Plan, timeout_s: float, say: Say,
                   poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Until every Deployment of the run has all its replicas available, or ``timeout_s``."""
    start = clock()
    last, last_said = "", start
    while True:
        states = {n: cluster.availability(n, plan.namespace) for n in plan.deployments()}
        text = ", ".join(f"{n.removeprefix(plan.release + '-')} {a}/{w}"
                         for n, (a, w) in states.items())
        elapsed = clock() - start
        if all(w > 0 and a >= w for a, w in states.values()):
            say(f"available after {elapsed:.0f} s: {text}")
            return
        if elapsed >= timeout_s:
            problems = pod_problems(cluster.pods(plan.namespace, plan.selector))
            raise DeployTimeout(
                f"the deployment was not available within {timeout_s:.0f} s ({text} replicas"
                f" available)" + (f"; pods: {'; '.join(problems)}" if problems else "")
                + ". Raise --deploy-timeout or check the values (image, model store, claims)")
        if text != last or clock() - last_said >= 15:
            say(f"waiting for replicas ({elapsed:.0f}/{timeout_s:.0f} s): {text}")
            last, last_said = text, clock()
        sleep(poll_s)


def delete_run(cluster: Cluster, plan: Plan, created: list[tuple[str, str]]) -> list[str]:
    """Deletes what carries the run label and what this run created; returns "Kind/name"."""
    kinds = [k for k in reversed(KIND_ORDER)]
    targets: list[tuple[str, str]] = []
    try:
        targets = cluster.labelled(kinds, plan.namespace, plan.selector)
    finally:
        # Even when the label query fails, what this process created is deleted by name.
        targets += [c for c in reversed(created) if c not in targets]
        deleted = []
        for kind, name in sorted(targets, key=lambda t: kinds.index(t[0])):
            if cluster.delete(kind, name, plan.namespace):
                deleted.append(f"{kind}/{name}")
    return deleted


@contextlib.contextmanager
def temporary_deployment(cluster: Cluster, plan: Plan, *, timeout_s: float = 600.0,
                         keep: bool = False, say: Say = print, poll_s: float = 2.0
                         ) -> Iterator[Target]:
    """Creates ``plan``'s objects, waits for them, yields a loopback ``Target`` relayed to a
    ready pod, and deletes everything of the run when the block ends, however it ends."""
    from rankserve.loadtest.k8s.relay import Relay

    created: list[tuple[str, str]] = []
    with _stop_signals_raise():
        try:
            say(f"creating release {plan.release} in namespace {plan.namespace}"
                f" ({plan.model}, label {plan.selector})")
            for obj in plan.objects:
                cluster.create(obj, plan.namespace)
                created.append((obj["kind"], obj["metadata"]["name"]))
                say(f"created {obj['kind']}/{obj['metadata']['name']}")
            wait_available(cluster, plan, timeout_s, say, poll_s)
            component, port = plan.entry
            pod = _ready_pod(cluster, plan, component)
            with Relay(lambda: cluster.open_stream(pod, plan.namespace, port)) as relay:
                say(f"load goes to pod {pod} port {port} ({component}) through {relay.address}")
                yield Target("predict", relay.address, (),
                             description=f"{plan.model} in {plan.namespace}/{plan.release}",
                             labels={"release": plan.release, "run": plan.run_id,
                                     "namespace": plan.namespace, "pod": pod})
                if relay.failures:
                    say(f"{relay.failures} connection(s) to the pod could not open:"
                        f" {relay.last_error}")
        finally:
            with _cleanup_shielded(say):
                _finish(cluster, plan, created, keep, say)


def _ready_pod(cluster: Cluster, plan: Plan, component: str) -> str:
    selector = f"{plan.selector},app.kubernetes.io/component={component}"
    ready = sorted(p.metadata.name for p in cluster.pods(plan.namespace, selector)
                   if pod_ready(p))
    if not ready:
        raise DeployTimeout(f"no {component} pod of {plan.release} is ready although its"
                            " Deployment reports available replicas; try again")
    return ready[0]


def _finish(cluster: Cluster, plan: Plan, created: list[tuple[str, str]], keep: bool,
            say: Say) -> None:
    if keep:
        say(f"kept release {plan.release} (--keep); delete it with: {_kubectl_delete(plan)}")
        return
    try:
        deleted = delete_run(cluster, plan, created)
    except ClusterError as exc:
        say(f"could not delete the objects of run {plan.run_id} ({exc}); delete them with:"
            f" {_kubectl_delete(plan)}")
        raise
    say(f"deleted {len(deleted)} object(s) of run {plan.run_id} from namespace"
        f" {plan.namespace}" + (f": {', '.join(deleted)}" if deleted else ""))


def provider(cluster: Cluster, plan: Plan, **kw: Any) -> Callable[[], Any]:
    """``temporary_deployment`` as a ``TargetProvider``."""
    return lambda: temporary_deployment(cluster, plan, **kw)


def _kubectl_delete(plan: Plan) -> str:
    kinds = ",".join(k.lower() for k in reversed(KIND_ORDER))
    return f"kubectl -n {plan.namespace} delete {kinds} -l {plan.selector}"
