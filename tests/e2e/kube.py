"""A Kubeflow PyTorchJob as the tests read it: the manifest (a reader for
the plain YAML it is written in, as yaml is not a dependency), and the
environment the training operator gives each pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "pytorchjob.yaml"


def read_yaml(text: str) -> Any:
    """Block mappings and sequences, quoted or plain scalars, flow lists of
    double-quoted strings, whole-line comments: the YAML the examples use.
    Anything else (anchors, multi-line strings, trailing comments) raises,
    rather than being read wrong."""
    lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()
             if raw.strip() and not raw.lstrip().startswith("#")]
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unexpected indentation: {lines[end][1]!r}")
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            item = lines[i][1][2:]
            if ":" in item and not item.startswith(('"', "'", "[")):  # a mapping opens on the dash's line
                lines[i] = (indent + 2, item)
                value, i = _block(lines, i, indent + 2)
            else:
                value, i = _scalar(item), i + 1
            items.append(value)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, colon, rest = lines[i][1].partition(":")
        if not colon or key in mapping:
            raise ValueError(f"not a new key: {lines[i][1]!r}")
        rest = rest.strip()
        if rest:
            mapping[key], i = _scalar(rest), i + 1
        elif i + 1 < len(lines) and lines[i + 1][0] > indent:
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            raise ValueError(f"no value for {key!r}")
    return mapping, i


def _scalar(text: str) -> Any:
    if text.startswith(('"', "[")):
        return json.loads(text)  # a double-quoted scalar or flow list of them is JSON
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if " #" in text or text.startswith(("&", "*", "|", ">", "{")):
        raise ValueError(f"outside the reader's YAML: {text!r}")
    if text.isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def manifest() -> dict[str, Any]:
    return read_yaml(MANIFEST.read_text(encoding="utf-8"))


def container(job: dict[str, Any], replica: str) -> dict[str, Any]:
    """The replica's `pytorch` container: the operator reads its port and
    sets its environment by that name (PyTorchJobDefaultContainerName)."""
    containers = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "pytorch")


def operator_env(job: dict[str, Any], replica: str, index: int, master_addr: str, port: int) -> dict[str, str]:
    """What the training operator appends to a pod's environment, kubeflow/
    training-operator v1.9.0 (6f74c7f6) pkg/controller.v1/pytorch/envvar.go
    setPodEnv and master.go, for a job with a Master and no elasticPolicy.
    `master_addr` and `port` stand in for the master's Service name
    (<job>-master-0) and its pytorchjob-port, on one machine."""
    spec = job["spec"]
    if "elasticPolicy" in spec or "Master" not in spec["pytorchReplicaSpecs"]:
        raise ValueError("only a job with a Master and no elasticPolicy is modelled")
    replicas = sum(r["replicas"] for r in spec["pytorchReplicaSpecs"].values())
    nproc = spec.get("nprocPerNode", "auto")  # pytorch_defaults.go DefaultNprocPerNode
    rank = index + (1 if replica == "Worker" else 0)
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": str(port), "PET_MASTER_PORT": str(port),
        "MASTER_ADDR": master_addr, "PET_MASTER_ADDR": master_addr,
        "WORLD_SIZE": str(replicas * (int(nproc) if nproc.isdigit() else 1)),
        "RANK": str(rank), "PET_NODE_RANK": str(rank),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NNODES": str(replicas),
    }


def pod_env(job: dict[str, Any], replica: str, values: dict[tuple[str, ...], str]) -> dict[str, str]:
    """The container's own `env`, its valueFrom references resolved from
    `values` (by ("secretKeyRef", name, key) or ("fieldRef", path))."""
    env = {}
    for var in container(job, replica).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = values[("secretKeyRef", ref["name"], ref["key"])]
        else:
            env[var["name"]] = values[("fieldRef", source["fieldRef"]["fieldPath"])]
    return env
