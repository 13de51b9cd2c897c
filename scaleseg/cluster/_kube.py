"""Offline checks of Dask-operator manifests (``DaskCluster``, ``DaskJob``, ``DaskWorkerGroup``).

These mirror what the operator's custom resource definitions require (dask-kubernetes 2026.3,
``customresources/templates.yaml``) and what scaleseg needs of a GPU worker group, so that a
broken spec fails here rather than after it was submitted. Nothing contacts a cluster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_kubernetes_spec", "validate_dask_resource", "worker_groups"]

API_VERSION = "kubernetes.dask.org/v1"
_KINDS = ("DaskCluster", "DaskJob", "DaskWorkerGroup", "DaskAutoscaler")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ValueError(f"{self.source}: invalid Dask resource; " + "; ".join(self.items))


def _mapping(node: Any, path: str, p: _Problems, *required: str) -> dict:
    if not isinstance(node, dict):
        p.add(path, f"expected a mapping, got {type(node).__name__}")
        return {}
    for key in required:
        if key not in node:
            p.add(path, f"missing required field {key!r}")
    return node


def _pod_spec(node: Any, path: str, p: _Problems) -> list[dict]:
    spec = _mapping(node, path, p, "containers")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        if "containers" in spec:
            p.add(f"{path}.containers", "must be a non-empty list")
        return []
    names = []
    for i, c in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        c = _mapping(c, cpath, p, "name", "image")
        if "name" in c:
            if not isinstance(c["name"], str) or not _DNS1123.match(c["name"]):
                p.add(f"{cpath}.name", f"{c['name']!r} is not a DNS-1123 label")
            names.append(c.get("name"))
        for key in ("args", "command"):
            if key in c and not (
                isinstance(c[key], list) and all(isinstance(a, str) for a in c[key])
            ):
                p.add(f"{cpath}.{key}", "must be a list of strings (quote numbers)")
        env = c.get("env") or []
        if not isinstance(env, list) or not all(isinstance(e, dict) and "name" in e for e in env):
            p.add(f"{cpath}.env", "must be a list of {name, value} mappings")
        res = c.get("resources") or {}
        for kind in ("limits", "requests"):
            for rname, qty in (res.get(kind) or {}).items():
                if not _QUANTITY.match(str(qty)):
                    p.add(f"{cpath}.resources.{kind}.{rname}", f"{qty!r} is not a quantity")
        for j, port in enumerate(c.get("ports") or []):
            if not isinstance(port, dict) or not isinstance(port.get("containerPort"), int):
                p.add(f"{cpath}.ports[{j}]", "needs an integer containerPort")
    if len(set(names)) != len(names):
        p.add(f"{path}.containers", f"container names are not unique: {names}")
    return [c for c in containers if isinstance(c, dict)]


def _worker(node: Any, path: str, p: _Problems) -> None:
    w = _mapping(node, path, p, "spec")
    if "replicas" in w and (not isinstance(w["replicas"], int) or w["replicas"] < 0):
        p.add(f"{path}.replicas", f"{w['replicas']!r} is not a non-negative integer")
    for c in _pod_spec(w.get("spec"), f"{path}.spec", p):
        args = c.get("args") or c.get("command") or []
        if not any("worker" in str(a) for a in args[:3]):
            p.add(f"{path}.spec", f"container {c.get('name')!r} does not start a dask worker")
        gpus = (c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
        if gpus is not None:
            flat = " ".join(str(a) for a in args)
            if not re.search(r"--resources[ =]\S*GPU=\d", flat):
                p.add(
                    f"{path}.spec",
                    f"container {c.get('name')!r} has nvidia.com/gpu limits but its worker "
                    "does not advertise --resources GPU=<n> (GPU tasks would never run)",
                )


def _scheduler(node: Any, path: str, p: _Problems) -> None:
    s = _mapping(node, path, p, "spec", "service")
    _pod_spec(s.get("spec"), f"{path}.spec", p)
    svc = _mapping(s.get("service", {}), f"{path}.service", p, "ports")
    ports = svc.get("ports") or []
    if not any(isinstance(x, dict) and x.get("port") == 8786 for x in ports):
        p.add(f"{path}.service.ports", "no port 8786 (the scheduler's tcp-comm)")


def _cluster_spec(node: Any, path: str, p: _Problems) -> None:
    spec = _mapping(node, path, p, "worker", "scheduler")
    if "worker" in spec:
        _worker(spec["worker"], f"{path}.worker", p)
    if "scheduler" in spec:
        _scheduler(spec["scheduler"], f"{path}.scheduler", p)


def validate_dask_resource(doc: Any, *, source: str = "<manifest>") -> dict:
    """Check one Dask-operator resource; returns it, or raises ValueError listing every problem."""
    p = _Problems(source)
    doc = _mapping(doc, "", p, "apiVersion", "kind", "metadata", "spec")
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        p.add("apiVersion", f"{doc['apiVersion']!r}, expected {API_VERSION!r}")
    kind = doc.get("kind")
    if kind is not None and kind not in _KINDS:
        p.add("kind", f"{kind!r} is not one of {', '.join(_KINDS)}")
    name = _mapping(doc.get("metadata", {}), "metadata", p, "name").get("name")
    if name is not None and (not isinstance(name, str) or not _DNS1123.match(name)):
        p.add("metadata.name", f"{name!r} is not a DNS-1123 label")
    spec = doc.get("spec")
    if kind == "DaskCluster":
        _cluster_spec(spec, "spec", p)
    elif kind == "DaskJob":
        s = _mapping(spec, "spec", p, "job", "cluster")
        job = _mapping(s.get("job", {}), "spec.job", p, "spec")
        _pod_spec(job.get("spec"), "spec.job.spec", p)
        cl = _mapping(s.get("cluster", {}), "spec.cluster", p, "spec")
        _cluster_spec(cl.get("spec"), "spec.cluster.spec", p)
    elif kind == "DaskWorkerGroup":
        s = _mapping(spec, "spec", p, "cluster", "worker")
        _worker(s.get("worker"), "spec.worker", p)
    p.raise_if_any()
    return doc


def load_kubernetes_spec(path: str | Path) -> dict:
    """Read and validate a ``DaskCluster`` manifest (YAML) for ``KubeCluster(custom_cluster_spec=)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Kubernetes cluster spec")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    doc = validate_dask_resource(doc, source=str(path))
    if doc.get("kind") != "DaskCluster":
        raise ValueError(f"{path}: kind {doc.get('kind')!r}; KubeCluster needs a DaskCluster")
    return doc


def worker_groups(doc: dict) -> dict[str, dict]:
    """``{container name: {"gpus": n, "args": [...]}}`` of the workers of a (validated) resource."""
    spec = doc["spec"]
    spec = spec["cluster"]["spec"] if doc["kind"] == "DaskJob" else spec
    out = {}
    for c in spec["worker"]["spec"]["containers"]:
        limits = (c.get("resources") or {}).get("limits", {})
        out[c["name"]] = {"gpus": int(limits.get("nvidia.com/gpu", 0)), "args": c.get("args", [])}
    return out
