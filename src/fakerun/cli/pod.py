"""The Kubernetes pod a job runs in, as dcgm-exporter's pod mapper labels
the GPUs it holds (pkg/dcgmexporter/kubernetes.go at 3.3.8-3.6.0: the
kubelet's pod-resources say which pod and container have each GPU; the
metric gets `container`, `namespace` and `pod`). Inside the pod the same
three are: the container a Kubeflow PyTorchJob runs torchrun in, which the
training operator requires to be named `pytorch` (kubeflow/training-
operator v1.9.0 pkg/apis/kubeflow.org/v1 PyTorchJobDefaultContainerName),
the pod's namespace (its service account's, mounted in every pod that keeps
the default automountServiceAccountToken) and its name (the pod's hostname,
$HOSTNAME). Known only together: none of them otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONTAINER = "pytorch"
# Every pod's environment has the API server's Service (kubelet's service env
# vars); the operator gives a PyTorchJob's pods their PET_ variables.
IN_A_POD = "KUBERNETES_SERVICE_HOST"
PYTORCHJOB = ("PET_NNODES", "PET_NODE_RANK", "PET_MASTER_ADDR")


Labels = tuple[tuple[str, str], ...]


def pod_labels(environ: Mapping[str, str], namespace_file: Path = NAMESPACE_FILE) -> Labels:
    """(("container", …), ("namespace", …), ("pod", …)), or () outside a PyTorchJob's pod."""
    name = environ.get("HOSTNAME", "")
    if IN_A_POD not in environ or not any(v in environ for v in PYTORCHJOB) or not name:
        return ()
    try:
        namespace = namespace_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ()
    return (("container", CONTAINER), ("namespace", namespace), ("pod", name)) if namespace else ()
