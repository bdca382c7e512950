"""A kubernetes target's ``settings``: the model a policy is checked against, and what a launch uses.

:class:`KubernetesTargetSettings` is the form of every key (docs/providers.md,
"Kubernetes", lists them); :func:`validate_settings` is what ``fusionctl
policy validate`` and every policy load run. :class:`JobSettings` is what a
launch resolves the settings to (defaults applied, the worker image
chosen); it checks the same model again, so a target built in code rather
than loaded from a policy meets the same rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from controlplane.domain import (
    InvalidSpec,
    Target,
)
from providers.bootstrap import (
    WORKER_IMAGE_KEY,
    WorkerImage,
    worker_image,
)
from providers.common import ImageReference, NonBlank, SettingsProblem, TargetSettings, settings_problems

DEFAULT_NAMESPACE = "fusionplane"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TTL_AFTER_FINISHED_S = 3600
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _dns_label(value: str) -> str:
    if not DNS_LABEL.match(value):
        raise ValueError(f"must be a DNS label, not {value!r}")
    return value


def _object_name(value: str) -> str:
    if not value or not (DNS_LABEL.match(value) or is_dns_subdomain(value)):
        raise ValueError(f"must be a Kubernetes object name, not {value!r}")
    return value


_DnsLabel = Annotated[str, AfterValidator(_dns_label)]
_ObjectName = Annotated[str, AfterValidator(_object_name)]
_Count = Annotated[int, Field(ge=0)]


class KubernetesTargetSettings(TargetSettings):
    """The ``settings`` of a ``kubernetes`` target (docs/providers.md, "Kubernetes"); all optional."""

    namespace: _DnsLabel | None = None
    worker_image: ImageReference | None = None
    #: the older name of worker_image, still accepted
    image: NonBlank | None = None
    gpus: _Count | None = None
    gpu_resource: NonBlank | None = None
    #: nodeSelector is map[string]string: a YAML true is not the label value "true"
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    priority_class: _ObjectName | None = None
    #: task priority -> PriorityClass, so the cluster schedules urgent pods first (and may preempt for them)
    priority_classes: dict[Literal["urgent", "high", "normal", "low"], _ObjectName] | None = None
    service_account: _ObjectName | None = None
    image_pull_secrets: list[NonBlank] | None = None
    models_pvc: _ObjectName | None = None
    trt_cache_pvc: _ObjectName | None = None
    scratch_size_limit: NonBlank | None = None
    ttl_seconds_after_finished: _Count | None = None
    resources: dict[Literal["requests", "limits"], dict[str, str | int]] | None = None
    kubeconfig: NonBlank | None = None
    context: NonBlank | None = None


def validate_settings(settings: Mapping[str, Any]) -> list[SettingsProblem]:
    """What is wrong with a kubernetes target's ``settings``, as (path inside settings, message)."""
    problems = settings_problems(KubernetesTargetSettings, settings, provider="kubernetes")
    image, override = settings.get("image"), settings.get(WORKER_IMAGE_KEY)
    if image is not None and override is not None and image != override:
        problems.append(("image", f"and settings.{WORKER_IMAGE_KEY} differ: give only {WORKER_IMAGE_KEY}"))
    return problems


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """A kubernetes target's settings, validated (docs/providers.md lists the keys)."""

    namespace: str
    #: the resolved worker image (the provider's default, with settings.worker_image applied)
    worker: WorkerImage
    gpus: int
    gpu_resource: str
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    priority_class: str | None
    #: task priority -> PriorityClass name; a priority not listed gets ``priority_class``
    priority_classes: Mapping[str, str]
    service_account: str | None
    image_pull_secrets: tuple[str, ...]
    models_pvc: str | None
    trt_cache_pvc: str | None
    scratch_size_limit: str | None
    ttl_after_finished_s: int
    resources: Mapping[str, Mapping[str, str]]
    kubeconfig: str | None
    context: str | None

    def for_priority(self, priority: str | None) -> JobSettings:
        """These settings with the PriorityClass of a task of ``priority`` (``priority_classes``), if one is named."""
        chosen = self.priority_classes.get(priority or "")
        return self if chosen is None or chosen == self.priority_class else replace(self, priority_class=chosen)

    @classmethod
    def of(cls, target: Target, default: WorkerImage | None) -> JobSettings:
        """The launch's view of ``target.settings``; ``InvalidSpec`` names the first wrong key."""
        problems = validate_settings(target.settings)
        if problems:
            key, why = problems[0]
            raise InvalidSpec(f"target {target.name}: settings.{key} {why}", target=target.name)
        s = KubernetesTargetSettings.model_validate(dict(target.settings))
        # settings.worker_image is the key every provider reads; settings.image is this provider's older
        # name for it (on Azure "image" is the VM image, hence the common name)
        override = s.worker_image if s.worker_image is not None else s.image
        worker = worker_image(default, override, target=target.name)
        resources = s.resources or {}
        return cls(
            namespace=s.namespace or DEFAULT_NAMESPACE,
            worker=worker,
            gpus=s.gpus if s.gpus is not None else (1 if worker.gpus else 0),
            gpu_resource=s.gpu_resource or DEFAULT_GPU_RESOURCE,
            node_selector=dict(s.node_selector or {}),
            tolerations=tuple(dict(t) for t in s.tolerations or ()),
            priority_class=s.priority_class,
            priority_classes={str(k): v for k, v in (s.priority_classes or {}).items()},
            service_account=s.service_account,
            image_pull_secrets=tuple(s.image_pull_secrets or ()),
            models_pvc=s.models_pvc,
            trt_cache_pvc=s.trt_cache_pvc,
            scratch_size_limit=s.scratch_size_limit,
            ttl_after_finished_s=(
                s.ttl_seconds_after_finished
                if s.ttl_seconds_after_finished is not None
                else DEFAULT_TTL_AFTER_FINISHED_S
            ),
            resources={part: {k: str(v) for k, v in values.items()} for part, values in resources.items()},
            kubeconfig=s.kubeconfig,
            context=s.context,
        )


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and all(DNS_LABEL.match(part) for part in value.split("."))


def cluster_key(target: Target) -> tuple[str | None, str | None]:
    """Which cluster a target is on: (kubeconfig path, context); None where its settings name none."""
    kubeconfig, context = target.settings.get("kubeconfig"), target.settings.get("context")
    for key, value in (("kubeconfig", kubeconfig), ("context", context)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidSpec(f"target {target.name}: settings.{key} must be a non-empty string", target=target.name)
    return (os.path.expanduser(kubeconfig) if kubeconfig else None, context)
