"""An azure target's ``settings``: the model a policy is checked against, and what a launch uses.

:class:`AzureTargetSettings` is the form of every key (docs/providers.md,
"Azure Spot", lists them); :func:`validate_settings` is what ``fusionctl
policy validate``, every policy load and every launch run.
:class:`AzureSettings` is what a launch resolves them to (defaults applied,
the worker image chosen). Which keys a launch cannot do without is the
domain's table (``controlplane/domain/launch.py``), which the seed form
reads too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import AfterValidator

from controlplane.domain import (
    InvalidSpec,
    Target,
)
from providers.bootstrap import (
    WORKER_IMAGE_KEY,
    WorkerImage,
    worker_image,
)
from providers.common import SettingsProblem, TargetSettings, settings_problems


@dataclass(frozen=True, kw_only=True)
class AzureSettings:
    """A target's ``settings`` for Azure Spot (see docs/providers.md, "Azure Spot")."""

    subscription_id: str
    resource_group: str
    subnet_id: str
    image: Mapping[str, str]
    ssh_public_key: str
    worker_image: WorkerImage
    admin_username: str = "fusionplane"
    os_disk_type: str = "StandardSSD_LRS"
    os_disk_size_gb: int | None = None
    network_security_group_id: str | None = None
    accelerated_networking: bool = False

    @classmethod
    def from_target(cls, target: Target, default_image: WorkerImage | None = None) -> AzureSettings:
        """Read and check ``target.settings``; ``InvalidSpec`` names the first wrong key.

        ``default_image`` is the provider's default worker image, which
        ``settings.worker_image`` (then optional) overrides.
        """
        raw = dict(target.settings)
        where = f"target {target.name}: settings"

        def fail(message: str) -> InvalidSpec:
            return InvalidSpec(message, target=target.name)

        problems = validate_settings(raw)
        if problems:
            key, why = problems[0]
            raise fail(f"{where}.{key} {why}")

        def text(key: str, default: str | None = None) -> str:
            value = raw.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise fail(f"{where}.{key} is required (a non-empty string)")
            return value.strip()

        # the forms were checked above (validate_settings); what is left is presence and defaults
        subnet = text("subnet_id")
        size = raw.get("os_disk_size_gb")
        nsg = raw.get("network_security_group_id")
        image = worker_image(default_image, raw.get(WORKER_IMAGE_KEY), target=target.name)
        if raw.get("worker_gpus") is not None:
            image = replace(image, gpus=raw["worker_gpus"])
        try:
            reference = image_reference(raw.get("image"), f"{where}.image")
        except ValueError as exc:
            raise fail(str(exc)) from None
        return cls(
            subscription_id=text("subscription_id"),
            resource_group=text("resource_group"),
            subnet_id=subnet,
            image=reference,
            ssh_public_key=text("ssh_public_key"),
            worker_image=image,
            admin_username=text("admin_username", "fusionplane"),
            os_disk_type=text("os_disk_type", "StandardSSD_LRS"),
            os_disk_size_gb=size,
            network_security_group_id=nsg,
            accelerated_networking=bool(raw.get("accelerated_networking") or False),
        )


def image_reference(value: Any, where: str) -> dict[str, str]:
    """``publisher:offer:sku:version``, an image or gallery image resource id, or the imageReference mapping."""
    if isinstance(value, Mapping):
        ref = {str(k): str(v) for k, v in value.items()}
        if "id" in ref or all(ref.get(k) for k in ("publisher", "offer", "sku", "version")):
            return ref
    elif isinstance(value, str) and value.startswith("/subscriptions/"):
        return {"id": value}
    elif isinstance(value, str) and len(parts := value.split(":")) == 4 and all(parts):
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
    raise ValueError(f"{where} must be 'publisher:offer:sku:version', an image resource id, or an imageReference")


#: Azure's rule for resource group names: letters, digits, '_', '-', '.', '(' and ')', at most 90, not ending in '.'
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}$")


def _required_text(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("is required (a non-empty string)")
    return value


def _resource_group(value: Any) -> Any:
    _required_text(value)
    name = value.strip()
    if not _RESOURCE_GROUP.match(name) or name.endswith("."):
        raise ValueError(
            f"must be a resource group name (at most 90 letters, digits, '_', '-', '.', '(' or ')', "
            f"not ending in '.'), not {value!r}"
        )
    return value


def _subnet_id(value: Any) -> Any:
    _required_text(value)
    if "/subnets/" not in value.lower():
        raise ValueError("must be a subnet resource id (.../virtualNetworks/VNET/subnets/NAME)")
    return value


def _image(value: Any) -> Any:
    try:
        image_reference(value, "")
    except ValueError as exc:
        raise ValueError(str(exc).strip()) from None
    return value


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _disk_size(value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def _resource_id(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a resource id")
    return value


def _image_ref(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an image reference (a non-empty string)")
    return value


_Text = Annotated[Any, AfterValidator(_required_text)]
_ResourceGroup = Annotated[Any, AfterValidator(_resource_group)]
_SubnetId = Annotated[Any, AfterValidator(_subnet_id)]
_Image = Annotated[Any, AfterValidator(_image)]
_WorkerImage = Annotated[Any, AfterValidator(_image_ref)]
_Flag = Annotated[Any, AfterValidator(_flag)]
_DiskSize = Annotated[Any, AfterValidator(_disk_size)]
_ResourceId = Annotated[Any, AfterValidator(_resource_id)]


class AzureTargetSettings(TargetSettings):
    """The ``settings`` of an ``azure`` target (docs/providers.md, "Azure Spot")."""

    subscription_id: _Text = None
    resource_group: _ResourceGroup = None
    subnet_id: _SubnetId = None
    image: _Image = None
    ssh_public_key: _Text = None
    worker_image: _WorkerImage = None
    worker_gpus: _Flag = None
    admin_username: _Text = None
    os_disk_type: _Text = None
    os_disk_size_gb: _DiskSize = None
    network_security_group_id: _ResourceId = None
    accelerated_networking: _Flag = None


def validate_settings(settings: Mapping[str, Any]) -> list[SettingsProblem]:
    """What is wrong with an azure target's ``settings``, as (path inside settings, message)."""
    return settings_problems(AzureTargetSettings, settings, provider="azure")
