"""Finding and loading the kubeconfig: the only way this tool reaches a cluster.

Order: ``--kubeconfig``, then ``KUBECONFIG`` (a path list, as kubectl reads it; the first
existing file is used), then ``~/.kube/config``. Without any, the live path does not start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class KubeconfigError(RuntimeError):
    """No kubeconfig, or one that cannot be used; the message says what to pass."""


def find(flag: Path | None, environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if flag is not None:
        if not flag.is_file():
            raise KubeconfigError(f"--kubeconfig {flag}: no such file")
        return flag
    listed = [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    home = Path(env.get("HOME") or Path.home())
    candidates = listed + [home / ".kube" / "config"]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise KubeconfigError(f"no kubeconfig was found (looked in {looked}): pass --kubeconfig"
                          " PATH or set KUBECONFIG to deploy the model into a cluster")


def load(path: Path, context: str | None = None) -> Any:
    """An ``ApiClient`` for ``path`` (and ``context``); errors name the file and the cause."""
    try:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise KubeconfigError("the cluster path needs the Kubernetes client: pip install"
                              " 'rankserve[cluster]' (PyPI kubernetes)") from None
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a kubeconfig: expected a mapping with"
                              " clusters, contexts, users and current-context")
    try:
        return config.new_client_from_config(config_file=str(path), context=context)
    except ConfigException as exc:
        raise KubeconfigError(f"kubeconfig {path} cannot be used: {exc}") from None
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        raise KubeconfigError(f"kubeconfig {path} is malformed ({type(exc).__name__}: {exc});"
                              " check it with `kubectl config view --kubeconfig PATH`") from None
