"""The VM of one attempt, as the JSON ARM takes (no API call)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from controlplane.domain import (
    ON_DEMAND,
    InvalidSpec,
)
from providers.azure.settings import AzureSettings
from providers.base import (
    LaunchRequest,
)
from providers.bootstrap import (
    cloud_init,
    cloud_market,
    resource_name,
    resource_tags,
)

if TYPE_CHECKING:
    pass


#: Microsoft.Network API version Compute uses to create the NIC from the VM's configuration
#: (the newest value azure-mgmt-compute 39's NetworkApiVersion knows)
NIC_API_VERSION = "2022-11-01"
#: api-version for the NIC reads and deletes cancel makes through the same client
#: Compute's limit on decoded custom data
CUSTOM_DATA_MAX_BYTES = 65535
#: Linux VM names and computer names: at most 64 characters
VM_NAME_MAX = 64


def vm_name(attempt_id: str) -> str:
    """The attempt's VM name (also its computer name); ValueError when no name can be made from it."""
    return resource_name("fp", attempt_id, max_length=VM_NAME_MAX)


def vm_body(request: LaunchRequest, settings: AzureSettings, name: str, *, owner: str) -> dict[str, Any]:
    """The Spot (or Regular, on-demand) VM of ``request``: its NIC and disk are created, and deleted, with it."""
    candidate = request.candidate
    market = cloud_market(candidate)
    user_data = cloud_init(
        request.worker_spec,
        settings.worker_image,
        attempt_id=request.attempt_id,
        deadline_seconds=request.deadline_seconds,
    ).encode()
    if len(user_data) > CUSTOM_DATA_MAX_BYTES:
        raise InvalidSpec(
            f"the worker's cloud-init is {len(user_data)} bytes; Azure custom data holds at most "
            f"{CUSTOM_DATA_MAX_BYTES}",
            target=candidate.target,
        )
    max_price = candidate.max_price_usd_h
    if max_price is not None and max_price <= 0:
        raise InvalidSpec(f"max price {max_price} USD/h must be above 0", target=candidate.target)
    os_disk: dict[str, Any] = {
        "name": f"{name}-osdisk",
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": settings.os_disk_type},
    }
    if settings.os_disk_size_gb is not None:
        os_disk["diskSizeGB"] = settings.os_disk_size_gb
    nic: dict[str, Any] = {
        "primary": True,
        "deleteOption": "Delete",
        "enableAcceleratedNetworking": settings.accelerated_networking,
        "ipConfigurations": [
            {"name": "ipconfig1", "properties": {"primary": True, "subnet": {"id": settings.subnet_id}}}
        ],
    }
    if settings.network_security_group_id:
        nic["networkSecurityGroup"] = {"id": settings.network_security_group_id}
    admin = settings.admin_username
    tags = resource_tags(
        task_id=request.task_id, attempt_id=request.attempt_id, owner=owner, market=market, for_azure=True
    )
    body: dict[str, Any] = {
        "location": candidate.region,
        "tags": tags,
        "properties": {
            "hardwareProfile": {"vmSize": candidate.instance_type},
            "storageProfile": {"imageReference": dict(settings.image), "osDisk": os_disk},
            "osProfile": {
                "computerName": name,
                "adminUsername": admin,
                "customData": base64.b64encode(user_data).decode("ascii"),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {"path": f"/home/{admin}/.ssh/authorized_keys", "keyData": settings.ssh_public_key}
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkApiVersion": NIC_API_VERSION,
                "networkInterfaceConfigurations": [{"name": f"{name}-nic", "properties": nic}],
            },
            **market_properties(market, max_price),
        },
    }
    return body


def market_properties(market: str, max_price: float | None) -> dict[str, Any]:
    """The VM properties of its market: Spot with eviction and billing profile, or a plain Regular VM.

    Azure refuses ``evictionPolicy`` and ``billingProfile`` on a Regular VM,
    so on-demand sends neither (the max price is a Spot notion).
    """
    if market == ON_DEMAND:
        return {"priority": "Regular"}
    return {
        "priority": "Spot",
        "evictionPolicy": "Delete",
        # -1: pay up to the on-demand price, never evicted for price; Azure takes 5 decimals
        "billingProfile": {"maxPrice": -1 if max_price is None else round(max_price, 5)},
    }
