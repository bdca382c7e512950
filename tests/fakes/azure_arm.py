"""A small, faithful stand-in for Azure Resource Manager's virtual machine API, for the real azure-mgmt-compute client.

Azure cannot be reached from CI, and patching ``ComputeManagementClient``
would test our beliefs about the SDK instead of the SDK. So this serves, on
127.0.0.1 over real HTTPS (the SDK's bearer-token policy refuses plain HTTP),
the part of ARM the Azure Spot provider uses, following the Compute REST
reference (``Virtual Machines - Create Or Update / Get / Delete / List``),
ARM's "Track asynchronous Azure operations" guide and the error codes the
Azure documentation lists for VMs and Spot VMs:

* ``PUT .../Microsoft.Compute/virtualMachines/{name}``: validates the body
  the way Compute does where the provider could get it wrong (name and
  computerName length, Spot-only fields, ``maxPrice`` -1 or > 0, tag names
  without ``< > % & \\ ? /``, ``customData`` base64 of at most 64 KiB,
  ``networkApiVersion`` required with ``networkInterfaceConfigurations``,
  size offered in the region), then answers **201** with the VM in
  ``provisioningState: Creating`` and an ``Azure-AsyncOperation`` header. A
  PUT on an existing VM is an *update* (200), as in ARM; changing
  ``customData`` is refused (409 ``PropertyChangeNotAllowed``), and
  ``If-None-Match: *`` on an existing VM answers 412.
* ``GET`` of a VM (``$expand=instanceView`` adds ``ProvisioningState/...``
  and ``PowerState/...`` statuses, with ``ProvisioningState/failed/<code>``
  when provisioning failed); ``customData`` is never returned, as in Azure.
* ``DELETE`` of a VM: **202** with ``Azure-AsyncOperation`` and ``Location``;
  the VM shows ``provisioningState: Deleting`` until the operation ends, then
  404. NICs and the OS disk created with the VM are deleted with it when
  their ``deleteOption`` is ``Delete`` and kept (detached) otherwise. A
  DELETE of a missing VM answers 204. ``forceDeletion`` is recorded.
* ``GET`` of the operation (``/subscriptions/{s}/providers/Microsoft.Compute/
  locations/{l}/operations/{id}``): ``InProgress``, then ``Succeeded`` or
  ``Failed`` with ``error``; the SDK's ``ARMPolling`` completes against it.
* Listing VMs of a resource group (``value`` + ``nextLink`` paging;
  ``$expand=instanceView`` without ``$filter`` is refused, as the API says it
  must be), and GET/list/DELETE of ``Microsoft.Compute/disks`` and
  ``Microsoft.Network/networkInterfaces`` so tests can prove nothing leaked.
* ARM's error body ``{"error": {"code", "message", "target"?, "details"?}}``;
  404 ``ResourceNotFound`` / ``ResourceGroupNotFound``; 400
  ``MissingApiVersionParameter``; 401 ``AuthenticationFailed`` with
  ``WWW-Authenticate`` when the bearer token is missing or wrong.

Provisioning and deletion advance by *polls*, not by wall-clock time, so
tests are deterministic: each GET of the VM or of its operation is one
poll; a VM is ``Succeeded`` and ``PowerState/running`` after
``provision_polls`` of them, and gone ``delete_polls`` polls after a DELETE.
:meth:`FakeAzureArm.settle` finishes every pending operation at once.

Deliberate differences: one subscription; resource groups, regions and
sizes are configured, not discovered; no ARM templates, VM extensions,
zones, availability sets, ``PATCH``, ``userData`` updates or Microsoft.Network
beyond NIC GET/list/DELETE; the NIC a VM creates from a network interface
configuration is named ``<vm>-<configuration name>`` (Azure does not document
the name; the provider reads NIC ids from the VM instead); the exact HTTP
status of ``SpotPriceGreaterThanProvidedMaxPrice`` is not documented (400
here). Throttling follows Compute's documented shape: 429 with a
``Retry-After`` in seconds and code ``OperationNotAllowed``
(``TooManyRequests`` in ``details``).

Faults: an error for the next PUT (``SkuNotAvailable``, quota, ...), an
allocation failure *after* the PUT was accepted, 429 + ``Retry-After``, any
status for every request until :meth:`heal`, slow answers (cut short by
``stop()``), eviction as Azure does it with ``evictionPolicy: Delete``
(VM, NIC and disk vanish) or ``Deallocate``, a guest OS shutdown
(``PowerState/stopped``), and ``stop()``/``start()`` on the same port.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.fakes.loopback import LoopbackFake, TrackedHTTPServer
from tests.support.tls import write_certificates

__all__ = [
    "DEFAULT_SIZES",
    "FakeAzureArm",
    "FakeDisk",
    "FakeNic",
    "FakeVM",
    "RecordedRequest",
]

#: region -> VM sizes offered there (what "Resource Skus - List" would say)
DEFAULT_SIZES: dict[str, tuple[str, ...]] = {
    "eastus": ("Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_D2s_v5"),
    "westeurope": ("Standard_NC4as_T4_v3", "Standard_D2s_v5"),
}
#: Compute's documented limit on custom data: "The maximum length of the binary array is 65535 bytes"
CUSTOM_DATA_MAX_BYTES = 65535
#: Linux VM names and computer names: at most 64 characters
LINUX_NAME_MAX = 64
_TAG_NAME_FORBIDDEN = set("<>%&\\?/")
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

_RG = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("vm", _RG + r"/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$"),
        ("vm_list", _RG + r"/Microsoft\.Compute/virtualMachines/?$"),
        ("disk", _RG + r"/Microsoft\.Compute/disks/(?P<name>[^/]+)$"),
        ("disk_list", _RG + r"/Microsoft\.Compute/disks/?$"),
        ("nic", _RG + r"/Microsoft\.Network/networkInterfaces/(?P<name>[^/]+)$"),
        ("nic_list", _RG + r"/Microsoft\.Network/networkInterfaces/?$"),
        (
            "operation",
            r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)"
            r"/operations/(?P<op>[^/]+)$",
        ),
    )
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent, for assertions about how the provider talks to ARM."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeDisk:
    id: str
    name: str
    resource_group: str
    location: str
    delete_option: str
    managed_by: str | None
    sku: str
    size_gb: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Compute/disks",
            "location": self.location,
            "managedBy": self.managed_by,
            "sku": {"name": self.sku},
            "properties": {
                "diskSizeGB": self.size_gb,
                "diskState": "Attached" if self.managed_by else "Unattached",
                "provisioningState": "Succeeded",
            },
        }


@dataclass
class FakeNic:
    id: str
    name: str
    resource_group: str
    location: str
    delete_option: str
    virtual_machine: str | None
    subnet_id: str

    def to_json(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "ipConfigurations": [
                {"name": "ipconfig1", "properties": {"subnet": {"id": self.subnet_id}, "privateIPAddress": "10.0.0.4"}}
            ],
        }
        if self.virtual_machine:
            props["virtualMachine"] = {"id": self.virtual_machine}
        return {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Network/networkInterfaces",
            "location": self.location,
            "properties": props,
        }


@dataclass
class _Operation:
    id: str
    location: str
    kind: str  # "create" | "delete"
    vm_key: tuple[str, str]
    status: str = "InProgress"
    error: dict[str, Any] | None = None
    start: str = field(default_factory=_now)
    end: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"startTime": self.start, "status": self.status, "name": self.id}
        if self.end:
            body["endTime"] = self.end
        if self.error:
            body["error"] = self.error
        return body

    def finish(self, status: str, error: dict[str, Any] | None = None) -> None:
        self.status, self.error, self.end = status, error, _now()


@dataclass
class FakeVM:
    """A VM as ARM stores it; ``custom_data`` is kept (Azure keeps it) but never returned by GET."""

    id: str
    name: str
    resource_group: str
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]  # the PUT's properties, as sent
    custom_data: str | None
    vm_id: str
    provisioning_state: str = "Creating"
    power_state: str | None = "starting"
    polls: int = 0
    provision_polls: int = 2
    provisioning_error: dict[str, Any] | None = None
    delete_polls_left: int = 0
    force_deleted: bool | None = None
    operation: _Operation | None = None
    nic_ids: list[str] = field(default_factory=list)
    disk_id: str | None = None
    updates: int = 0
    time_created: str = field(default_factory=_now)

    @property
    def priority(self) -> str:
        return str(self.properties.get("priority") or "Regular")

    @property
    def eviction_policy(self) -> str | None:
        value = self.properties.get("evictionPolicy")
        return str(value) if value else None

    def statuses(self) -> list[dict[str, Any]]:
        state = self.provisioning_state.lower()
        if state == "failed" and self.provisioning_error:
            code = self.provisioning_error["code"]
            provisioning = {
                "code": f"ProvisioningState/failed/{code}",
                "level": "Error",
                "displayStatus": "Provisioning failed",
                "message": self.provisioning_error["message"],
                "time": self.time_created,
            }
        else:
            provisioning = {
                "code": f"ProvisioningState/{state}",
                "level": "Info",
                "displayStatus": {"succeeded": "Provisioning succeeded"}.get(state, self.provisioning_state),
                "time": self.time_created,
            }
        out = [provisioning]
        if self.power_state:
            display = "VM " + self.power_state
            out.append({"code": f"PowerState/{self.power_state}", "level": "Info", "displayStatus": display})
        return out

    def to_json(self, *, instance_view: bool = False) -> dict[str, Any]:
        props = json.loads(json.dumps(self.properties))  # a deep copy: callers may not mutate the stored body
        os_profile = props.get("osProfile")
        if isinstance(os_profile, dict):
            os_profile.pop("customData", None)  # write-only in ARM
            os_profile.setdefault("allowExtensionOperations", True)
            os_profile.setdefault("requireGuestProvisionSignal", True)
            os_profile.setdefault("secrets", [])
        storage = props.get("storageProfile") or {}
        os_disk = storage.get("osDisk")
        if isinstance(os_disk, dict) and self.disk_id:
            os_disk.setdefault("osType", "Linux")
            managed = os_disk.setdefault("managedDisk", {})
            managed["id"] = self.disk_id
        network = props.get("networkProfile") or {}
        if self.nic_ids:
            configs = {c.get("name"): c for c in network.get("networkInterfaceConfigurations") or []}
            refs = []
            for nic_id in self.nic_ids:
                config = configs.get(nic_id.rsplit("/", 1)[-1].removeprefix(self.name + "-"), {})
                option = (config.get("properties") or {}).get("deleteOption", "Detach")
                refs.append({"id": nic_id, "properties": {"deleteOption": option}})
            network["networkInterfaces"] = refs
        props["provisioningState"] = self.provisioning_state
        props["vmId"] = self.vm_id
        props["timeCreated"] = self.time_created
        if instance_view:
            props["instanceView"] = {
                "computerName": (os_profile or {}).get("computerName"),
                "statuses": self.statuses(),
            }
        return {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.location,
            "tags": dict(self.tags),
            "properties": props,
        }


# ---- replies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> _Reply:
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        error: dict[str, Any] = {"code": code, "message": message}
        if target:
            error["target"] = target
        if details:
            error["details"] = details
        return cls.json(status, {"error": error}, headers)


@dataclass
class _Fault:
    status: int
    code: str
    message: str
    remaining: int | None  # None: until heal()
    method: str | None = None
    kind: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    details: list[dict[str, Any]] | None = None

    def matches(self, method: str, kind: str | None) -> bool:
        return (self.method is None or self.method == method) and (self.kind is None or self.kind == kind)


@dataclass
class _Slow:
    seconds: float
    remaining: int | None
    method: str | None = None
    #: False: wait before handling (nothing happened yet); True: handle, then hold the answer back
    #: (the request took effect and its answer is lost to a client that gives up)
    after: bool = False


class _Stopping(Exception):
    """The server is going away: drop the connection without an answer."""


# ---- the API ---------------------------------------------------------------------------------


class _Arm:
    """ARM's behaviour over the fake's state; every method runs with ``lock`` held."""

    def __init__(self, fake: FakeAzureArm) -> None:
        self.fake = fake
        self.vms: dict[tuple[str, str], FakeVM] = {}  # (rg, name) lower-cased
        self.disks: dict[tuple[str, str], FakeDisk] = {}
        self.nics: dict[tuple[str, str], FakeNic] = {}
        self.operations: dict[str, _Operation] = {}

    # -- dispatch --------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        kind, match = _route(path)
        if match is None:
            return _Reply.error(404, "InvalidResourceType", f"The resource type could not be found for {path!r}.")
        api_version = _first(query, "api-version")
        if not api_version:
            return _Reply.error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not _API_VERSION.match(api_version):
            return _Reply.error(400, "InvalidApiVersionParameter", f"The api-version '{api_version}' is invalid.")
        self.fake._api_versions.add(api_version)
        sub = match["sub"]
        if sub.lower() != self.fake.subscription_id.lower():
            return _Reply.error(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        if kind == "operation":
            return self._operation(method, match["op"])
        rg = match["rg"]
        if rg.lower() not in self.fake._resource_groups:
            return _Reply.error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        name = match.groupdict().get("name")
        if kind == "vm":
            assert name is not None
            if method == "PUT":
                return self._put_vm(sub, rg, name, query, headers, body)
            if method == "GET":
                return self._get_vm(rg, name, query)
            if method == "DELETE":
                return self._delete_vm(rg, name, query)
        elif kind == "vm_list" and method == "GET":
            return self._list_vms(path, rg, query)
        elif kind in ("disk", "nic"):
            assert name is not None
            table: dict[tuple[str, str], Any] = self.disks if kind == "disk" else self.nics
            if method == "GET":
                item = table.get((rg.lower(), name.lower()))
                return _Reply.json(200, item.to_json()) if item else _not_found(kind, rg, name)
            if method == "DELETE":
                return self._delete_dependent(kind, rg, name)
        elif kind in ("disk_list", "nic_list") and method == "GET":
            table = self.disks if kind == "disk_list" else self.nics
            items = [table[key].to_json() for key in sorted(table) if key[0] == rg.lower()]
            return _Reply.json(200, {"value": items})
        return _Reply.error(405, "MethodNotAllowed", f"The method {method} is not allowed on {path}.")

    # -- virtual machines ------------------------------------------------------------------------

    def _put_vm(
        self, sub: str, rg: str, name: str, query: Mapping[str, list[str]], headers: Mapping[str, str], raw: bytes
    ) -> _Reply:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _Reply.error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        if not isinstance(body, dict):
            return _Reply.error(400, "InvalidRequestContent", "The request content must be a JSON object.")
        key = (rg.lower(), name.lower())
        existing = self.vms.get(key)
        if existing is not None:
            if headers.get("if-none-match") == "*":
                return _Reply.error(
                    412, "PreconditionFailed", f"The resource '{name}' already exists (If-None-Match: *)."
                )
            return self._update_vm(existing, body)
        refusal = self.fake._take_create_refusal()
        if refusal is not None:
            return refusal
        problem = _validate_vm(name, body, self.fake.sizes)
        if problem is not None:
            return problem
        props = body["properties"]
        location = str(body["location"]).lower()
        vm_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        os_profile = props.get("osProfile") or {}
        vm = FakeVM(
            id=vm_id,
            name=name,
            resource_group=rg,
            location=location,
            tags=dict(body.get("tags") or {}),
            properties=props,
            custom_data=os_profile.get("customData"),
            vm_id=str(uuid.uuid4()),
            provision_polls=self.fake.provision_polls,
            provisioning_error=self.fake._take_provisioning_failure(),
        )
        self._create_dependents(sub, rg, vm)
        operation = self._new_operation(location, "create", key)
        vm.operation = operation
        self.vms[key] = vm
        self.fake._created.append(name)
        headers_out = {"Azure-AsyncOperation": self._operation_url(sub, location, operation.id)}
        return _Reply.json(201, vm.to_json(), headers_out)

    def _update_vm(self, vm: FakeVM, body: dict[str, Any]) -> _Reply:
        props = body.get("properties") or {}
        custom_data = (props.get("osProfile") or {}).get("customData")
        if custom_data is not None and custom_data != vm.custom_data:
            return _Reply.error(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'customData' is not allowed.",
                target="customData",
            )
        if vm.provisioning_state.lower() == "deleting":
            return _Reply.error(
                409, "OperationNotAllowed", f"The operation is not allowed since VM '{vm.name}' is marked for deletion."
            )
        vm.updates += 1
        return _Reply.json(200, vm.to_json())

    def _create_dependents(self, sub: str, rg: str, vm: FakeVM) -> None:
        props = vm.properties
        os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
        disk_name = os_disk.get("name") or f"{vm.name}_OsDisk_1_{uuid.uuid4().hex}"
        disk_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{disk_name}"
        self.disks[(rg.lower(), disk_name.lower())] = FakeDisk(
            id=disk_id,
            name=disk_name,
            resource_group=rg,
            location=vm.location,
            delete_option=str(os_disk.get("deleteOption") or "Detach"),
            managed_by=vm.id,
            sku=str((os_disk.get("managedDisk") or {}).get("storageAccountType") or "Standard_LRS"),
            size_gb=int(os_disk.get("diskSizeGB") or 30),
        )
        vm.disk_id = disk_id
        network = props.get("networkProfile") or {}
        for ref in network.get("networkInterfaces") or []:  # existing NICs, attached by id
            vm.nic_ids.append(str(ref.get("id")))
        for config in network.get("networkInterfaceConfigurations") or []:
            nic_name = f"{vm.name}-{config['name']}"
            nic_id = (
                f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{nic_name}"
            )
            config_props = config.get("properties") or {}
            ip_configs = config_props.get("ipConfigurations") or [{}]
            subnet = ((ip_configs[0].get("properties") or {}).get("subnet") or {}).get("id", "")
            self.nics[(rg.lower(), nic_name.lower())] = FakeNic(
                id=nic_id,
                name=nic_name,
                resource_group=rg,
                location=vm.location,
                delete_option=str(config_props.get("deleteOption") or "Detach"),
                virtual_machine=vm.id,
                subnet_id=str(subnet),
            )
            vm.nic_ids.append(nic_id)

    def _get_vm(self, rg: str, name: str, query: Mapping[str, list[str]]) -> _Reply:
        key = (rg.lower(), name.lower())
        vm = self.vms.get(key)
        if vm is not None:
            self._poll(vm)
            vm = self.vms.get(key)  # the poll may have finished its deletion
        if vm is None:
            return _not_found("vm", rg, name)
        expand = _first(query, "$expand")
        if expand and expand not in ("instanceView", "userData", "resiliencyView"):
            return _Reply.error(
                400, "InvalidParameter", f"The value '{expand}' of $expand is not valid.", target="$expand"
            )
        return _Reply.json(200, vm.to_json(instance_view=expand == "instanceView"))

    def _delete_vm(self, rg: str, name: str, query: Mapping[str, list[str]]) -> _Reply:
        key = (rg.lower(), name.lower())
        vm = self.vms.get(key)
        if vm is None:
            return _Reply(204)
        force = _first(query, "forceDeletion")
        if force:
            vm.force_deleted = force.lower() == "true"
        self.fake._deletes.append(name)
        if vm.provisioning_state.lower() != "deleting":
            if vm.operation is not None and vm.operation.status == "InProgress":
                vm.operation.finish("Canceled")  # a create cut short by the delete
            vm.provisioning_state = "Deleting"
            vm.delete_polls_left = self.fake.delete_polls
            vm.operation = self._new_operation(vm.location, "delete", key)
        assert vm.operation is not None
        url = self._operation_url(self.fake.subscription_id, vm.location, vm.operation.id)
        return _Reply(202, headers={"Azure-AsyncOperation": url, "Location": url + "&monitor=true"})

    def _list_vms(self, path: str, rg: str, query: Mapping[str, list[str]]) -> _Reply:
        if _first(query, "$expand") and not _first(query, "$filter"):
            return _Reply.error(
                400,
                "InvalidParameter",
                "The $expand=instanceView option can only be specified if a valid $filter option is specified.",
                target="$expand",
            )
        vms = [self.vms[key] for key in sorted(self.vms) if key[0] == rg.lower()]
        skip = int(_first(query, "$skiptoken") or 0)
        page = vms[skip : skip + self.fake.page_size]
        body: dict[str, Any] = {"value": [vm.to_json() for vm in page]}
        if skip + self.fake.page_size < len(vms):
            next_query = urlencode(
                {"api-version": _first(query, "api-version"), "$skiptoken": skip + self.fake.page_size}
            )
            body["nextLink"] = f"{self.fake.url}{quote(path)}?{next_query}"
        return _Reply.json(200, body)

    # -- NICs and disks --------------------------------------------------------------------------

    def _delete_dependent(self, kind: str, rg: str, name: str) -> _Reply:
        key = (rg.lower(), name.lower())
        if kind == "disk":
            disk = self.disks.get(key)
            if disk is None:
                return _Reply(204)
            if disk.managed_by:
                return _Reply.error(
                    409,
                    "OperationNotAllowed",
                    f"Disk {disk.name} is attached to VM {disk.managed_by}.",
                )
            del self.disks[key]
            return _Reply(200)
        nic = self.nics.get(key)
        if nic is None:
            return _Reply(204)
        if nic.virtual_machine:
            return _Reply.error(
                400,
                "NicInUse",
                f"Network Interface {nic.id} is used by existing resource {nic.virtual_machine}. "
                "In order to delete the network interface, it must be dissociated from the resource.",
            )
        del self.nics[key]
        return _Reply(200)

    # -- long-running operations -----------------------------------------------------------------

    def _new_operation(self, location: str, kind: str, vm_key: tuple[str, str]) -> _Operation:
        operation = _Operation(id=str(uuid.uuid4()), location=location, kind=kind, vm_key=vm_key)
        self.operations[operation.id] = operation
        return operation

    def _operation_url(self, sub: str, location: str, op_id: str) -> str:
        path = f"/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/{op_id}"
        return f"{self.fake.url}{path}?p={uuid.uuid4()}&api-version={self.fake.operation_api_version}"

    def _operation(self, method: str, op_id: str) -> _Reply:
        if method != "GET":
            return _Reply.error(405, "MethodNotAllowed", f"The method {method} is not allowed on an operation.")
        operation = self.operations.get(op_id)
        if operation is None:
            return _Reply.error(404, "NotFound", f"The operation '{op_id}' was not found.")
        vm = self.vms.get(operation.vm_key)
        if vm is not None and vm.operation is operation:
            self._poll(vm)
        return _Reply.json(200, operation.to_json())

    def _poll(self, vm: FakeVM) -> None:
        """One poll of the VM or its operation moves provisioning or deletion one step on."""
        vm.polls += 1
        state = vm.provisioning_state.lower()
        if state == "creating" and vm.polls >= vm.provision_polls:
            self._finish_provisioning(vm)
        elif state == "deleting":
            vm.delete_polls_left -= 1
            if vm.delete_polls_left <= 0:
                self._remove(vm)

    def _finish_provisioning(self, vm: FakeVM) -> None:
        if vm.provisioning_error is not None:
            vm.provisioning_state, vm.power_state = "Failed", None
            if vm.operation is not None:
                vm.operation.finish("Failed", dict(vm.provisioning_error))
            return
        vm.provisioning_state, vm.power_state = "Succeeded", "running"
        if vm.operation is not None:
            vm.operation.finish("Succeeded")

    def _remove(self, vm: FakeVM) -> None:
        """The VM is gone; its NICs and OS disk go too where their deleteOption says Delete."""
        self.vms.pop((vm.resource_group.lower(), vm.name.lower()), None)
        if vm.operation is not None and vm.operation.status == "InProgress":
            vm.operation.finish("Succeeded")
        for key, disk in list(self.disks.items()):
            if disk.managed_by == vm.id:
                if disk.delete_option.lower() == "delete":
                    del self.disks[key]
                else:
                    disk.managed_by = None
        for key, nic in list(self.nics.items()):
            if nic.virtual_machine == vm.id:
                if nic.delete_option.lower() == "delete":
                    del self.nics[key]
                else:
                    nic.virtual_machine = None


def _validate_vm(name: str, body: Mapping[str, Any], sizes: Mapping[str, Iterable[str]]) -> _Reply | None:
    """The checks Compute makes on a new VM that the provider could plausibly get wrong."""
    if len(name) > LINUX_NAME_MAX or not _VM_NAME.match(name) or name.endswith((".", "-")):
        return _Reply.error(400, "InvalidParameter", f"The VM name '{name}' is not valid.", target="vmName")
    location = body.get("location")
    if not isinstance(location, str) or location.lower() not in sizes:
        return _Reply.error(
            400, "LocationNotAvailableForResourceType", f"The provided location '{location}' is not available."
        )
    for tag in body.get("tags") or {}:
        if _TAG_NAME_FORBIDDEN & set(tag) or len(tag) > 512:
            return _Reply.error(
                400,
                "InvalidTagNameCharacters",
                f"The tag names '{tag}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
            )
    props = body.get("properties")
    if not isinstance(props, dict):
        return _Reply.error(400, "InvalidRequestContent", "The 'properties' of the VM are missing.")
    size = (props.get("hardwareProfile") or {}).get("vmSize")
    offered = tuple(sizes[location.lower()])
    if size not in offered:
        return _Reply.error(
            400,
            "InvalidParameter",
            f"The requested VM size {size} is not available in the current region. The sizes available in the "
            f"current region are: {','.join(offered)}.\r\nFind out more on the available VM sizes in each region "
            "at https://aka.ms/azure-regions.",
            target="vmSize",
        )
    storage = props.get("storageProfile") or {}
    if not storage.get("imageReference"):
        return _Reply.error(400, "InvalidParameter", "Required parameter 'imageReference' is missing (null).")
    if (storage.get("osDisk") or {}).get("createOption", "FromImage") != "FromImage":
        return _Reply.error(400, "InvalidParameter", "The value of parameter osDisk.createOption is invalid.")
    os_profile = props.get("osProfile") or {}
    computer_name = os_profile.get("computerName") or ""
    if not computer_name or len(computer_name) > LINUX_NAME_MAX:
        return _Reply.error(
            400, "InvalidParameter", "Linux host name cannot exceed 64 characters in length.", target="computerName"
        )
    if not os_profile.get("adminUsername"):
        return _Reply.error(400, "InvalidParameter", "Required parameter 'adminUsername' is missing.")
    custom_data = os_profile.get("customData")
    if custom_data is not None:
        try:
            decoded = base64.b64decode(custom_data, validate=True)
        except (binascii.Error, ValueError):
            return _Reply.error(
                400, "InvalidParameter", "Custom data in OSProfile must be in Base64 encoding.", target="customData"
            )
        if len(decoded) > CUSTOM_DATA_MAX_BYTES:
            return _Reply.error(400, "InvalidParameter", "Custom data in OSProfile is too long.", target="customData")
    linux = os_profile.get("linuxConfiguration") or {}
    if linux.get("disablePasswordAuthentication"):
        keys = (linux.get("ssh") or {}).get("publicKeys") or []
        admin = os_profile.get("adminUsername")
        if not keys:
            return _Reply.error(
                400, "InvalidParameter", "SSH public keys are required when password authentication is disabled."
            )
        for key in keys:
            if key.get("path") != f"/home/{admin}/.ssh/authorized_keys":
                return _Reply.error(
                    400,
                    "InvalidParameter",
                    f"Destination path for SSH public keys is currently limited to its default value "
                    f"/home/{admin}/.ssh/authorized_keys due to a known issue in Linux provisioning agent.",
                    target="linuxConfiguration.ssh.publicKeys.path",
                )
    network = props.get("networkProfile") or {}
    if network.get("networkInterfaceConfigurations"):
        if not network.get("networkApiVersion"):
            return _Reply.error(
                400,
                "InvalidParameter",
                "networkApiVersion must be specified when networkInterfaceConfigurations are specified.",
                target="networkApiVersion",
            )
        for config in network["networkInterfaceConfigurations"]:
            ip_configs = (config.get("properties") or {}).get("ipConfigurations") or []
            subnet = ((ip_configs[0].get("properties") or {}).get("subnet") or {}).get("id") if ip_configs else None
            if not config.get("name") or not subnet or "/subnets/" not in subnet.lower():
                return _Reply.error(
                    400, "InvalidParameter", "A network interface configuration needs a name and a subnet id."
                )
    elif not network.get("networkInterfaces"):
        return _Reply.error(400, "InvalidParameter", "Required parameter 'networkProfile' is missing (null).")
    priority = props.get("priority")
    if priority is not None and str(priority).lower() not in ("regular", "low", "spot"):
        return _Reply.error(400, "InvalidParameter", f"The value '{priority}' of parameter 'priority' is not valid.")
    # Low is the retired name of Spot: both take an eviction policy and a max price; Regular neither
    spot = str(priority or "Regular").lower() in ("spot", "low")
    if props.get("evictionPolicy") and not spot:
        return _Reply.error(
            400,
            "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines",
            "Eviction policy can be set only on Azure Spot Virtual Machines.",
        )
    if props.get("evictionPolicy") and props["evictionPolicy"] not in ("Deallocate", "Delete"):
        return _Reply.error(400, "InvalidParameter", f"Eviction policy '{props['evictionPolicy']}' is not valid.")
    billing = props.get("billingProfile")
    if billing is not None:
        if not spot:
            return _Reply.error(
                400,
                "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines",
                "Max price is supported only for Azure Spot Virtual Machines.",
            )
        max_price = billing.get("maxPrice")
        if not isinstance(max_price, int | float) or (max_price != -1 and max_price <= 0):
            return _Reply.error(
                400,
                "MaxPriceValueInvalid",
                "Invalid max price value. The only supported values for max price are -1 or a decimal greater "
                "than zero. Max price value of -1 indicates the Azure Spot virtual machine will not be evicted "
                "for price reasons.",
            )
    return None


def _route(path: str) -> tuple[str | None, re.Match[str] | None]:
    for kind, pattern in _ROUTES:
        match = pattern.match(path)
        if match is not None:
            return kind, match
    return None, None


def _first(query: Mapping[str, list[str]], name: str) -> str:
    for key, values in query.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return ""


def _not_found(kind: str, rg: str, name: str) -> _Reply:
    rtype = {
        "vm": "Microsoft.Compute/virtualMachines",
        "disk": "Microsoft.Compute/disks",
        "nic": "Microsoft.Network/networkInterfaces",
    }[kind]
    return _Reply.error(
        404,
        "ResourceNotFound",
        f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found. For more details please go "
        "to https://aka.ms/ARMResourceNotFoundFix",
    )


# ---- TLS -----------------------------------------------------------------------------------------


# ---- HTTP plumbing ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TrackedHTTPServer
    timeout = 30  # an idle keep-alive connection does not hold a thread forever

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.fake._answer(
                self.command, unquote(split.path), parse_qs(split.query, keep_blank_values=True), headers, body
            )
        except _Stopping:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests


class _TlsServer(TrackedHTTPServer):
    """The tracked server over TLS."""

    quiet_errors = (ConnectionError, TimeoutError, ssl.SSLError)

    def __init__(self, port: int, fake: FakeAzureArm, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(port, fake, _Handler)

    def wrap(self, request: socket.socket) -> socket.socket | None:
        # the handshake happens in the connection's own thread, so a client that connects and says
        # nothing cannot stall the accept loop
        try:
            return self._context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return None


class FakeAzureArm(LoopbackFake):
    """ARM's VM API on https://127.0.0.1 for tests; state survives ``stop()``/``start()`` (an outage).

    ``cert_dir`` receives a throwaway CA (:attr:`ca_path`, give it to the
    client as ``connection_verify``) and the server's certificate. ``token``
    is the bearer token every request must carry (``None``: not checked).
    ``provision_polls``/``delete_polls``: polls (GETs of the VM or of its
    operation) before a create or a delete completes.
    """

    def __init__(
        self,
        *,
        cert_dir: Path,
        subscription_id: str = "00000000-0000-0000-0000-00000000f00d",
        resource_groups: Iterable[str] = ("rg-fusionplane",),
        sizes: Mapping[str, Iterable[str]] | None = None,
        token: str | None = "fake-arm-token",
        provision_polls: int = 2,
        delete_polls: int = 1,
        page_size: int = 50,
        port: int = 0,
        max_delay_s: float = 30.0,
        operation_api_version: str = "2026-04-01",
    ) -> None:
        self.subscription_id = subscription_id
        self._resource_groups = {rg.lower() for rg in resource_groups}
        self.sizes: dict[str, tuple[str, ...]] = {
            region.lower(): tuple(names) for region, names in (sizes or DEFAULT_SIZES).items()
        }
        self.token = token
        self.provision_polls = provision_polls
        self.delete_polls = delete_polls
        self.page_size = page_size
        self.max_delay_s = max_delay_s
        self.operation_api_version = operation_api_version
        super().__init__(port)
        self.ca_path, cert_path, key_path = write_certificates(Path(cert_dir))
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_path, key_path)
        key_path.unlink()  # loaded: the private key need not stay on disk
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._arm = _Arm(self)
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._create_refusals: list[_Reply] = []
        self._provisioning_failures: list[dict[str, Any]] = []
        self._slow: _Slow | None = None
        self._api_versions: set[str] = set()
        self._created: list[str] = []
        self._deletes: list[str] = []

    # ---- lifecycle -------------------------------------------------------------

    thread_name = "fake-arm"

    def _new_server(self, port: int) -> TrackedHTTPServer:
        return _TlsServer(port, self, self._context)

    def _on_start(self) -> None:
        self._stop_event.clear()

    def _on_stop(self) -> None:
        self._stop_event.set()  # slow answers end at once without a reply

    @property
    def url(self) -> str:
        """The ``base_url`` to give ``ComputeManagementClient``."""
        return f"https://127.0.0.1:{self.port}"

    # ---- faults ----------------------------------------------------------------

    def refuse_next_create(self, code: str, message: str, *, status: int = 409, times: int = 1) -> None:
        """Refuse the next ``times`` VM creations (a PUT of a new VM) synchronously, as Compute's validation does."""
        with self._lock:
            self._create_refusals.extend([_Reply.error(status, code, message)] * times)

    def fail_next_provisioning(self, code: str = "AllocationFailed", message: str | None = None) -> None:
        """Accept the next VM creation (201), then fail its provisioning: the async allocation failure."""
        text = message or (
            "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
            "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
        )
        with self._lock:
            self._provisioning_failures.append({"code": code, "message": text})

    def throttle(self, *, retry_after: int = 17, times: int = 1, method: str | None = None) -> None:
        """Answer 429 (Compute's shape: code OperationNotAllowed, TooManyRequests in details) with Retry-After."""
        with self._lock:
            self._faults.append(
                _Fault(
                    429,
                    "OperationNotAllowed",
                    "The server rejected the request because too many requests have been received for this "
                    "subscription.",
                    times,
                    method=method,
                    headers={"Retry-After": str(retry_after)},
                    details=[{"code": "TooManyRequests", "target": "PutVM3Min", "message": "{...}"}],
                )
            )

    def fail(
        self,
        *,
        status: int = 500,
        code: str = "InternalServerError",
        message: str = "An internal server error occurred. Please retry later.",
        times: int | None = None,
        method: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Answer this error to matching requests: the next ``times``, or every one until :meth:`heal`."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every request until heal())")
        with self._lock:
            self._faults.append(_Fault(status, code, message, times, method=method, kind=kind))

    def slow(self, seconds: float, *, times: int | None = None, method: str | None = None, after: bool = False) -> None:
        """Delay matching answers by ``seconds`` (at most ``max_delay_s``); ``stop()`` cuts the wait short.

        ``after=False`` waits before the request is handled; ``after=True`` handles it at once and
        holds the answer back, so a client that times out does not know the request took effect.
        """
        with self._lock:
            self._slow = _Slow(min(seconds, self.max_delay_s), times, method, after)

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()
            self._slow = None
            self._create_refusals.clear()
            self._provisioning_failures.clear()

    def evict(self, name: str, resource_group: str | None = None) -> None:
        """Take the Spot VM back as Azure does: deleted with its Delete-option dependents, or deallocated."""
        with self._lock:
            vm = self._vm(name, resource_group)
            if vm.priority.lower() not in ("spot", "low"):
                raise ValueError(f"{name} is not a Spot VM: Azure does not evict it")
            if (vm.eviction_policy or "Deallocate").lower() == "delete":
                self._arm._remove(vm)
            else:
                vm.power_state = "deallocated"

    def power_off(self, name: str, resource_group: str | None = None) -> None:
        """The guest OS shut itself down (``shutdown -h``): PowerState/stopped, still allocated (and billed)."""
        with self._lock:
            vm = self._vm(name, resource_group)
            vm.power_state = "stopped"

    def settle(self) -> None:
        """Finish every pending create and delete now."""
        with self._lock:
            for vm in list(self._arm.vms.values()):
                state = vm.provisioning_state.lower()
                if state == "creating":
                    self._arm._finish_provisioning(vm)
                elif state == "deleting":
                    self._arm._remove(vm)

    # ---- direct access, for arranging and checking tests -----------------------

    def vm(self, name: str, resource_group: str | None = None) -> FakeVM | None:
        with self._lock:
            try:
                return self._vm(name, resource_group)
            except KeyError:
                return None

    def vms(self) -> list[FakeVM]:
        with self._lock:
            return list(self._arm.vms.values())

    def disks(self) -> list[FakeDisk]:
        with self._lock:
            return list(self._arm.disks.values())

    def nics(self) -> list[FakeNic]:
        with self._lock:
            return list(self._arm.nics.values())

    def add_resource_group(self, name: str) -> None:
        with self._lock:
            self._resource_groups.add(name.lower())

    @property
    def created(self) -> list[str]:
        """Names of VMs created (201), in order; an update of an existing VM is not a creation."""
        with self._lock:
            return list(self._created)

    @property
    def api_versions(self) -> set[str]:
        with self._lock:
            return set(self._api_versions)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _vm(self, name: str, resource_group: str | None) -> FakeVM:
        for (group, vm_name), vm in self._arm.vms.items():
            if vm_name == name.lower() and (resource_group is None or group == resource_group.lower()):
                return vm
        raise KeyError(name)

    # ---- called by the handler threads -----------------------------------------

    def _answer(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, dict(headers), body))
            slow = self._take_slow(method)
        # wait outside the lock so other requests (and stop()) go on; stop() ends the wait
        if slow is not None and not slow.after and self._stop_event.wait(slow.seconds):
            raise _Stopping
        reply = self._reply(method, path, query, headers, body)
        if slow is not None and slow.after and self._stop_event.wait(slow.seconds):
            raise _Stopping
        return reply

    def _reply(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        with self._lock:
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                return _Reply.error(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or invalid.",
                    headers={
                        "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                        'error="invalid_token", error_description="The authentication failed."'
                    },
                )
            kind, _ = _route(path)
            fault = self._take_fault(method, kind)
            if fault is not None:
                return _Reply.error(
                    fault.status, fault.code, fault.message, details=fault.details, headers=fault.headers
                )
            return self._arm.handle(method, path, query, headers, body)

    def _take_fault(self, method: str, kind: str | None) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, kind):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _take_slow(self, method: str) -> _Slow | None:
        slow = self._slow
        if slow is None or (slow.method is not None and slow.method != method):
            return None
        if slow.remaining is not None:
            slow.remaining -= 1
            if slow.remaining <= 0:
                self._slow = None
        return slow

    def _take_create_refusal(self) -> _Reply | None:
        return self._create_refusals.pop(0) if self._create_refusals else None

    def _take_provisioning_failure(self) -> dict[str, Any] | None:
        return self._provisioning_failures.pop(0) if self._provisioning_failures else None
