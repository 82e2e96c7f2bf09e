"""Load tests of a temporary deployment of one model version in a Kubernetes cluster.

The objects come from the Helm chart, rendered offline with the real Helm engine; they are
created through the `kubernetes` client, waited for, reached through port-forward, and
deleted by their run label when the test ends, also when it is interrupted.
"""

from rankserve.loadtest.k8s.cluster import Cluster, ClusterError
from rankserve.loadtest.k8s.kubeconfig import KubeconfigError
from rankserve.loadtest.k8s.manifests import RUN_LABEL, ManifestError, ModelVersion, Plan, plan
from rankserve.loadtest.k8s.provider import (
    DeployTimeout,
    Terminated,
    provider,
    temporary_deployment,
)

__all__ = [
    "RUN_LABEL",
    "Cluster",
    "ClusterError",
    "DeployTimeout",
    "KubeconfigError",
    "ManifestError",
    "ModelVersion",
    "Plan",
    "Terminated",
    "plan",
    "provider",
    "temporary_deployment",
]
