"""deploy/kubernetes (issue 18 item 3): both overlays render with the pinned kubectl, every resource is valid
against the Kubernetes 1.37 schemas, and the manifests say what the code does.

- security: every pod runs as non-root with a read-only root filesystem, no capabilities, RuntimeDefault seccomp;
- probes, replicas, the database per overlay, the PodDisruptionBudget;
- RBAC: the Role grants exactly the verbs the kubernetes provider calls (read from its source), and the
  ClusterRole exactly what the capacity signal lists (nodes, pods, PriorityClasses);
- every environment variable in a container is one the code (or an SDK it uses) reads;
- the policy and the models manifest in the ConfigMaps are accepted by the code that reads them.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from controlplane import config
from controlplane.policy.checks import validate_document
from controlplane.store.engine import DATABASE_URL_ENV
from faceswap.config import WorkerSettings
from faceswap.modelfill import read_fill_manifest
from tests.support.kustomize import Rendered, containers, pod_specs, render

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("trial", "ha")
KUBERNETES_VERSION = "1.37.0"
CONTROLPLANE_IMAGE = "registry.example.com/fusionplane/controlplane:0.1.0"
#: read by a library, not by our settings modules: each with who reads it
SDK_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "boto3's credential chain",
    "AWS_SECRET_ACCESS_KEY": "boto3's credential chain",
    "AWS_DEFAULT_REGION": "boto3's region",
    "AZURE_TENANT_ID": "azure-identity's EnvironmentCredential",
    "AZURE_CLIENT_ID": "azure-identity's EnvironmentCredential",
    "AZURE_CLIENT_SECRET": "azure-identity's EnvironmentCredential",
}
#: Custom resources no bundled schema covers: their shape is checked by a test of their own below
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@cache
def rendered(overlay: str) -> Rendered:
    return render(overlay)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Rendered:
    return rendered(request.param)


def _controlplane(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment", "fusionplane")


def _container(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    [found] = [c for c in containers(pod) if c["name"] == name]
    return found


# -- schemas -------------------------------------------------------------------------------------------


def test_every_resource_is_valid_against_the_kubernetes_schemas(overlay: Rendered) -> None:
    checked = 0
    for resource in overlay.resources:
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(overlay.resources) - 1  # everything but the ServiceMonitor


def test_the_schema_check_does_refuse_a_broken_resource() -> None:
    broken = copy.deepcopy(_controlplane(rendered("trial")))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    unknown = copy.deepcopy(_controlplane(rendered("trial")))
    unknown["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSION, strict=True)


def test_the_service_monitor_scrapes_the_services_metrics_port_with_a_token(overlay: Rendered) -> None:
    [monitor] = overlay.of_kind("ServiceMonitor")
    service = overlay.one("Service", "fusionplane")
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "fusionplane-metrics-token", "key": "token"},
    }


def test_both_overlays_hold_every_kind_the_install_needs() -> None:
    needed = {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment",
        "Service", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy", "ServiceMonitor", "Job",
    }  # fmt: skip
    for name in OVERLAYS:
        assert needed <= {r["kind"] for r in rendered(name).resources}, name


# -- pods --------------------------------------------------------------------------------------------------


def test_every_pod_runs_restricted(overlay: Rendered) -> None:
    for where, pod in pod_specs(overlay):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] == 10001, where  # the image's fixed user
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(pod):
            own = container["securityContext"]
            name = f"{where}/{container['name']}"
            assert own["readOnlyRootFilesystem"] is True, name
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            assert own["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["image"] == CONTROLPLANE_IMAGE, name
            assert {"requests", "limits"} <= container["resources"].keys(), name
            # a read-only root needs somewhere to write temporary files
            assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, name


def test_only_the_control_plane_holds_an_api_token(overlay: Rendered) -> None:
    for where, pod in pod_specs(overlay):
        mounted = pod.get("automountServiceAccountToken", True)
        assert mounted is (where == "Deployment/fusionplane"), where


def test_the_control_plane_probes_healthz_and_readyz(overlay: Rendered) -> None:
    container = _container(_controlplane(overlay)["spec"]["template"]["spec"], "controlplane")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080}
    assert container["args"][container["args"].index("--port") + 1] == "8080"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


def test_the_trial_is_one_replica_on_sqlite_on_its_volume() -> None:
    trial = rendered("trial")
    deployment = _controlplane(trial)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    settings = trial.config_map("fusionplane-settings")["data"]
    assert settings[DATABASE_URL_ENV] == "sqlite:////var/lib/fusionplane/fusionplane.db"
    mounts = _container(deployment["spec"]["template"]["spec"], "controlplane")["volumeMounts"]
    assert {"name": "state", "mountPath": "/var/lib/fusionplane"} in mounts
    assert trial.one("PersistentVolumeClaim", "fusionplane-state")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert trial.of_kind("PodDisruptionBudget") == []


def _secret_url(container: Mapping[str, Any]) -> Mapping[str, Any]:
    [entry] = [e for e in container.get("env", []) if e["name"] == DATABASE_URL_ENV]
    return dict(entry["valueFrom"]["secretKeyRef"])


def test_ha_is_two_replicas_on_postgresql_from_a_secret_behind_a_disruption_budget() -> None:
    ha = rendered("ha")
    deployment = _controlplane(ha)
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert DATABASE_URL_ENV not in ha.config_map("fusionplane-settings")["data"]
    pod = deployment["spec"]["template"]["spec"]
    for name in ("wait-for-schema", "controlplane"):
        assert _secret_url(_container(pod, name)) == {"name": "fusionplane-database", "key": "url"}
    [job] = [j for j in ha.of_kind("Job") if j["metadata"]["name"] == "fusionplane-db-upgrade"]
    assert _secret_url(job["spec"]["template"]["spec"]["containers"][0])["name"] == "fusionplane-database"
    # replicas never migrate side by side: the Job does, the pods wait
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-schema"]
    assert ha.one("PersistentVolumeClaim", "fusionplane-state")["spec"]["accessModes"] == ["ReadWriteMany"]
    [budget] = ha.of_kind("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


# -- RBAC: what the code calls -----------------------------------------------------------------------------

_CALL = re.compile(r"\b(batch|core)\.(read|list|create|delete|patch|replace)_namespaced_(job|secret|pod|event)\b")
_VERB = {"read": "get", "replace": "update"}
_RESOURCE = {"job": ("batch", "jobs"), "secret": ("", "secrets"), "pod": ("", "pods"), "event": ("", "events")}


def _provider_calls() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every namespaced call the kubernetes provider makes."""
    calls = set()
    for path in (REPO / "providers" / "kubernetes").glob("*.py"):
        for _client, verb, kind in _CALL.findall(path.read_text(encoding="utf-8")):
            group, resource = _RESOURCE[kind]
            calls.add((group, resource, _VERB.get(verb, verb)))
    return calls


def _granted(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_exactly_what_the_kubernetes_provider_calls(overlay: Rendered) -> None:
    calls = _provider_calls()
    assert ("batch", "jobs", "create") in calls  # the scan sees the calls at all
    granted = _granted(overlay.one("Role", "fusionplane-launcher"))
    # blockOwnerDeletion on the spec Secret's owner reference needs update on the Job's finalizers
    assert "blockOwnerDeletion" in (REPO / "providers" / "kubernetes" / "secrets.py").read_text()
    assert granted == calls | {("batch", "jobs/finalizers", "update")}
    assert not any("*" in part for grant in granted for part in grant)


def test_the_cluster_role_only_lists_what_the_capacity_signal_lists(overlay: Rendered) -> None:
    source = (REPO / "controlplane" / "signals" / "kubernetes_capacity.py").read_text(encoding="utf-8")
    assert "core.list_node" in source
    assert "core.list_pod_for_all_namespaces" in source
    assert "scheduling.list_priority_class" in source
    granted = _granted(overlay.one("ClusterRole", "fusionplane-capacity-reader"))
    assert granted == {("", "nodes", "list"), ("", "pods", "list"), ("scheduling.k8s.io", "priorityclasses", "list")}


def test_the_bindings_give_the_roles_to_the_control_planes_service_account_in_the_worker_namespace(
    overlay: Rendered,
) -> None:
    account = _controlplane(overlay)["spec"]["template"]["spec"]["serviceAccountName"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": "fusionplane"}
    binding = overlay.one("RoleBinding", "fusionplane-launcher")
    assert binding["subjects"] == [subject]
    assert binding["metadata"]["namespace"] == overlay.one("Role", "fusionplane-launcher")["metadata"]["namespace"]
    assert overlay.one("ClusterRoleBinding", "fusionplane-capacity-reader")["subjects"] == [subject]


# -- what the code reads ------------------------------------------------------------------------------------


class _Recording(dict[str, str]):
    """An empty environment that remembers every name asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return False


def _names_the_code_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    env = _Recording()
    for reader in (
        config.CloudSettings,
        config.SignalSettings,
        config.ConsulSettings,
        config.ClientSettings,
        config.LocalRunSettings,
        WorkerSettings,
    ):
        reader.from_env(env)
    config.seed_clouds_from_env(env)
    monkeypatch.setattr(os, "environ", env)  # Settings.from_env reads the process environment itself
    config.Settings.from_env()
    monkeypatch.undo()
    return env.asked | {DATABASE_URL_ENV}


def _env_names(r: Rendered) -> Iterator[tuple[str, str]]:
    """(where, variable) of every variable a container gets, from env and from envFrom ConfigMaps."""
    for where, pod in pod_specs(r):
        for container in containers(pod):
            for entry in container.get("env", []):
                yield f"{where}/{container['name']}", entry["name"]
            for source in container.get("envFrom", []):
                data = r.one("ConfigMap", source["configMapRef"]["name"])["data"]
                for name in data:
                    yield f"{where}/{container['name']} (envFrom)", name


def test_every_variable_in_the_manifests_is_one_the_code_reads(
    overlay: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = _names_the_code_reads(monkeypatch) | SDK_VARIABLES.keys()
    assert {"FUSIONPLANE_PUBLIC_URL", "CONSUL_HTTP_ADDR", "FUSIONPLANE_MODEL_DIR"} <= known  # the recording works
    unread = sorted({(where, name) for where, name in _env_names(overlay) if name not in known})
    assert unread == []


def test_the_recording_would_catch_a_misspelt_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "FUSIONPLANE_PUBLIC_URI" not in _names_the_code_reads(monkeypatch)


# -- what the ConfigMaps hold --------------------------------------------------------------------------------


def test_the_policy_configmap_is_a_valid_policy_naming_the_manifests_objects(overlay: Rendered) -> None:
    policy_map = overlay.config_map("fusionplane-policy")
    document = json.loads(policy_map["data"]["policy.json"])
    assert [str(finding) for finding in validate_document(document)] == []
    [target] = [t for t in document["targets"] if t["provider"] == "kubernetes"]
    settings = target["settings"]
    role = overlay.one("Role", "fusionplane-launcher")
    assert settings["namespace"] == role["metadata"]["namespace"]
    for claim in (settings["models_pvc"], settings["trt_cache_pvc"]):
        assert overlay.one("PersistentVolumeClaim", claim)["metadata"]["namespace"] == settings["namespace"]
    account = overlay.one("ServiceAccount", settings["service_account"])
    assert account["metadata"]["namespace"] == settings["namespace"]
    # the control plane reads the file where the ConfigMap is mounted
    data = overlay.config_map("fusionplane-settings")["data"]
    pod = _controlplane(overlay)["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in _container(pod, "controlplane")["volumeMounts"]}
    assert data["FUSIONPLANE_POLICY_FILE"] == f"{mounts['policy']}/policy.json"
    [volume] = [v for v in pod["volumes"] if v["name"] == "policy"]
    assert volume["configMap"]["name"] == policy_map["metadata"]["name"]


def test_the_control_plane_hands_the_same_models_manifest_to_vms(overlay: Rendered) -> None:
    pod = _controlplane(overlay)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _container(pod, "controlplane")["volumeMounts"]}
    named = Path(overlay.config_map("fusionplane-settings")["data"]["FUSIONPLANE_MODELS_MANIFEST"])
    [volume] = [v for v in pod["volumes"] if v["name"] == mounts[str(named.parent)]]
    for_vms = overlay.one("ConfigMap", volume["configMap"]["name"])["data"][named.name]
    for_job = overlay.config_map("fusionplane-models-manifest")["data"]["manifest.json"]
    assert for_vms == for_job


def test_the_models_fill_job_reads_a_fill_manifest_the_fill_accepts(overlay: Rendered, tmp_path: Path) -> None:
    job = overlay.one("Job", "fusionplane-models-fill")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert command[:3] == ["fusionctl", "models", "fill"]
    manifest_path = command[command.index("--manifest") + 1]
    dest = command[command.index("--dest") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    manifest_map = volumes[mounts[str(Path(manifest_path).parent)]]["configMap"]["name"]
    assert volumes[mounts[dest]]["persistentVolumeClaim"]["claimName"] == "fusionplane-models"
    document = overlay.one("ConfigMap", manifest_map)["data"][Path(manifest_path).name]
    (tmp_path / "manifest.json").write_text(document)
    _, items = read_fill_manifest(tmp_path / "manifest.json", tmp_path / "models")
    assert {item.source.split("://")[0] for item in items} == {"s3", "https"}
