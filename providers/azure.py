"""The Azure Spot provider: one Spot VM per attempt, through azure-mgmt-compute.

Why a plain VM and not a one-instance scale set: a VM is the smallest thing
that runs one attempt, its name can be the attempt (idempotent launch, status
and cancel from the attempt id alone), and since api-version 2021-03-01 a VM
created with ``networkProfile.networkInterfaceConfigurations`` (plus
``networkApiVersion``) and ``deleteOption: Delete`` on the NIC and the OS
disk creates *and deletes* its NIC and disk with it. So one Compute call
starts an attempt and one removes everything it made, with
azure-mgmt-compute alone. A scale set would add a second resource to name,
find and clean up (the set and its instance), and its own orchestration
modes, for no gain at one instance.

What one attempt is (``_vm_body``)::

    PUT .../resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/fp-<attempt>
        If-None-Match: *                 create only: never update a VM of the same name
        location        candidate.region
        tags            resource_tags(..., for_azure=True): '/' -> '_' (Azure refuses '/' in tag names)
        vmSize          candidate.instance_type
        priority Spot, evictionPolicy Delete, billingProfile.maxPrice = plan max or -1
        osProfile       computerName = VM name, SSH key only, customData = base64(cloud_init(...))
        osDisk          fp-<attempt>-osdisk, deleteOption Delete
        NIC config      fp-<attempt>-nic on settings.subnet_id, deleteOption Delete, no public IP

The worker spec (with the attempt's callback token) travels only in
``customData``: cloud-init writes it to a 0600 file. ARM stores custom data
but never returns it on GET (not even with ``$expand=userData``), and it is
not a tag, so principals that can read the VM cannot read the token.

Long-running operations: ``begin_create_or_update(..., polling=False)`` sends
the PUT and returns the 201 body (``provisioningState: Creating``) without
starting the SDK's polling thread, so ``launch`` returns as soon as the VM
resource exists; ``status`` then reads the VM itself. ``cancel`` deletes with
``polling=False`` and waits (bounded) for the VM GET to answer 404, then
checks that the NIC and disk are gone too.

Status (``status``), from the VM with ``$expand=instanceView``:

==============================================  ==========================================
Azure                                           BackendState
==============================================  ==========================================
provisioningState Creating                      PENDING
Updating / Migrating                            RUNNING if PowerState/running, else PENDING
Succeeded + PowerState/starting, none yet       PENDING
Succeeded + PowerState/running or stopping      RUNNING
Succeeded + PowerState/stopped                  RUNNING for self_shutdown_grace_s, then LOST
                                                "shut down by itself ..." (see below)
Succeeded + PowerState/deallocating             RUNNING (still leaving)
Succeeded + PowerState/deallocated              PREEMPTED (evicted with evictionPolicy Deallocate)
Failed, ``ProvisioningState/failed/<code>``     PREEMPTED if <code> is an allocation failure
                                                (AllocationFailed, ZonalAllocationFailed,
                                                Overconstrained*, SkuNotAvailable): no worker
                                                ran, another place may have capacity;
                                                FAILED with code and message otherwise
Canceled                                        FAILED
Deleting, not by us                             PREEMPTED (Azure evicting with policy Delete)
404, after this process saw the VM              PREEMPTED (evicted: policy Delete removes it)
404, never seen by this process                 LOST, "unknown attempt: ..."
anything, after ``cancel`` here                 FAILED "cancelled ..."
==============================================  ==========================================

A 404 is ambiguous: a Spot VM evicted with ``evictionPolicy: Delete`` is
gone with its tags, exactly like one that never existed. This process
remembers (bounded, in memory) the attempts whose VM it created or saw, and
reports those PREEMPTED; after a restart the same 404 is LOST "unknown
attempt" (the contract's answer for a never-launched attempt). Both end the
attempt and neither counts as a result, so the difference only loses the
word "evicted", never an outcome.

A VM that powered itself off follows the rule EC2's instances follow
(:class:`providers.bootstrap.SelfShutdownGrace`): the worker's cloud-init
runs one attempt and then ``shutdown -h now``; the outcome travels in the
worker's ``complete``/``fail`` callback, sent before the container exits, so
normally the attempt is already final and ``status`` is not asked (and
``advance`` ignores a late answer). When no outcome arrived the VM cannot
tell success from failure (the exit code sits on its disk): ``status`` says
RUNNING for ``self_shutdown_grace_s`` after this process first sees the VM
stopped (a callback may still be committing), then LOST
(``SELF_SHUTDOWN_REASON``): gone without an outcome, the state meant to be
retried with the checkpoint.

A stopped Azure VM is still allocated and **still billed** (Azure has no
"delete on OS shutdown" for a single VM), and ``status`` only reads. The
provider contract therefore requires the control plane to ``cancel`` the
attempt once it is final, whatever made it final (callback or status), and
reconciliation to cancel what ``list_owned`` still shows; ``cancel`` deletes
the VM with its NIC and disk.

Errors (``_translate``), at the boundary:

=================================================================  ====================
429 (any code; Compute says OperationNotAllowed + TooManyRequests)  Throttled
401, 403 (AuthenticationFailed, AuthorizationFailed, ...)           InvalidSpec "access denied ... the
                                                                    target's configuration or permissions"
SkuNotAvailable, AllocationFailed, ZonalAllocationFailed,           InsufficientCapacity
Overconstrained(Zonal)AllocationRequest
SpotPriceGreaterThanProvidedMaxPrice                                PriceTooHigh
OperationNotAllowed / QuotaExceeded with "quota" in the message     QuotaExceeded
InvalidParameter "requested VM size ... not available in the        InvalidSpec
current region" (the size is not offered there: a target error)
other 409 (conflicts, an operation in progress)                     Unavailable
other 4xx (invalid request, missing resource group or image)        InvalidSpec
5xx, connection errors, timeouts, token acquisition failures        Unavailable
=================================================================  ====================

SkuNotAvailable is Compute's answer when Spot capacity for the size is not
there *now* ("not enough Azure Spot Virtual Machine capacity in this
location"), so another place or a later try may work; a size the region does
not offer at all is reported differently (InvalidParameter listing the sizes
that are offered), and that is a configuration error that failover would
only hide.

The SDK is made to fail fast: ``retry_total`` small, no retry on an error
status (429 and 5xx are answered to the scheduler, which owns retrying),
one retry on a dropped connection (a stale keep-alive), short connect and
read timeouts. A launch that fails with the PUT's fate unknown (5xx,
timeout, dropped connection) deletes the VM name on a best-effort basis, so a
launch error does not leave a VM behind that no attempt owns.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine
from pydantic import ValidationError

from controlplane.domain import (
    Candidate,
    InsufficientCapacity,
    InvalidSpec,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Target,
    Throttled,
    Unavailable,
)
from controlplane.domain.worker_spec import WorkerSpec
from providers.base import (
    BackendState,
    BackendStatus,
    Capacity,
    LaunchRequest,
    LaunchResult,
    OwnedResource,
    Quote,
)
from providers.bootstrap import (
    AZURE_TAG_ATTEMPT,
    AZURE_TAG_OWNER,
    AZURE_TAG_TASK,
    SELF_SHUTDOWN_GRACE_S,
    WORKER_IMAGE_KEY,
    SelfShutdownGrace,
    WorkerImage,
    access_denied,
    azure_tags,
    cloud_init,
    resource_name,
    resource_tags,
    worker_image,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "ACCESS_CHECK",
    "NETWORK_API_VERSION",
    "TAG_ATTEMPT",
    "TAG_OWNER",
    "TAG_TASK",
    "AzureSettings",
    "AzureSpotProvider",
    "azure_tags",
    "vm_name",
]

#: Microsoft.Network API version Compute uses to create the NIC from the VM's configuration
#: (the newest value azure-mgmt-compute 39's NetworkApiVersion knows)
NIC_API_VERSION = "2022-11-01"
#: api-version for the NIC reads and deletes cancel makes through the same client
NETWORK_API_VERSION = "2024-05-01"
#: api-version for disk reads and deletes (Microsoft.Compute/disks)
DISK_API_VERSION = "2024-03-02"
#: Compute's limit on decoded custom data
CUSTOM_DATA_MAX_BYTES = 65535
#: Linux VM names and computer names: at most 64 characters
VM_NAME_MAX = 64
#: how many attempts one process remembers having seen or cancelled (404 -> PREEMPTED, not LOST)
REMEMBERED_ATTEMPTS = 100_000

_CAPACITY_CODES = frozenset(
    code.lower()
    for code in (
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    )
)
_RESOURCE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/providers/(?P<type>.+)/(?P<name>[^/]+)$", re.I
)


#: the shared label keys as Azure tag names ("fusionplane.io/task-id" -> "fusionplane.io_task-id"); the
#: mapping lives in providers.bootstrap (azure_tag_key), these names stay for existing imports
TAG_TASK = AZURE_TAG_TASK
TAG_ATTEMPT = AZURE_TAG_ATTEMPT
TAG_OWNER = AZURE_TAG_OWNER
#: where an operator looks when ARM answers 401/403
ACCESS_CHECK = (
    "the control plane's Azure credential (its tenant) and its role assignments on this target's "
    "subscription and resource group, and join rights on its subnet (and NSG)"
)


def vm_name(attempt_id: str) -> str:
    """The attempt's VM name (also its computer name); ValueError when no name can be made from it."""
    return resource_name("fp", attempt_id, max_length=VM_NAME_MAX)


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

        def text(key: str, default: str | None = None) -> str:
            value = raw.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise fail(f"{where}.{key} is required (a non-empty string)")
            return value.strip()

        subnet = text("subnet_id")
        if "/subnets/" not in subnet.lower():
            raise fail(f"{where}.subnet_id must be a subnet resource id (.../virtualNetworks/VNET/subnets/NAME)")
        size = raw.get("os_disk_size_gb")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise fail(f"{where}.os_disk_size_gb must be a positive integer")
        nsg = raw.get("network_security_group_id")
        if nsg is not None and not isinstance(nsg, str):
            raise fail(f"{where}.network_security_group_id must be a resource id")
        for key in ("worker_gpus", "accelerated_networking"):
            if key in raw and not isinstance(raw[key], bool):
                raise fail(f"{where}.{key} must be true or false")
        image = worker_image(default_image, raw.get(WORKER_IMAGE_KEY), target=target.name)
        if "worker_gpus" in raw:
            image = replace(image, gpus=raw["worker_gpus"])
        try:
            reference = _image_reference(raw.get("image"), f"{where}.image")
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
            accelerated_networking=raw.get("accelerated_networking", False),
        )


def _image_reference(value: Any, where: str) -> dict[str, str]:
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


class _Recent:
    """Attempt ids one process remembers, oldest forgotten first (bounded: a control plane runs for months)."""

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()  # status, launch and cancel may run on several threads

    def add(self, attempt_id: str, where: tuple[str, str]) -> None:
        with self._lock:
            self._items[attempt_id] = where
            self._items.move_to_end(attempt_id)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def get(self, attempt_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._items.get(attempt_id)

    def __contains__(self, attempt_id: object) -> bool:
        with self._lock:
            return attempt_id in self._items


class AzureSpotProvider:
    """Runs each attempt on its own Azure Spot VM, on the Azure targets it is given.

    The constructor has the shape of every provider's: ``targets`` are the
    policy's targets, or a function returning the current ones (so that a
    policy reload is seen); only ``provider == "azure"`` ones are used (their
    ``settings``: :class:`AzureSettings`), and a launch uses the settings of
    its candidate's target, checked then (``InvalidSpec`` naming the key). A
    fixed list is also checked here, so a typo fails at start-up
    (``ValueError``). ``image`` is the default worker image; a target's
    ``settings.worker_image`` overrides its image reference, and one of the
    two is required. ``owner`` goes into every VM's owner tag and
    ``list_owned`` keeps only VMs carrying it. ``credential`` is any
    ``TokenCredential`` (default: ``azure.identity.DefaultAzureCredential``,
    i.e. a managed identity in Azure, or the environment). ``base_url`` and
    ``connection_verify`` point the SDK at another ARM endpoint (tests: a
    fake on 127.0.0.1 with its own CA). ``price`` answers ``quote``.
    ``self_shutdown_grace_s``: see the module docstring (``monotonic`` is for tests).
    """

    name = "azure"

    def __init__(
        self,
        targets: Iterable[Target] | Callable[[], Iterable[Target]],
        *,
        image: WorkerImage | None = None,
        owner: str,
        credential: TokenCredential | None = None,
        base_url: str | None = None,
        connection_verify: bool | str = True,
        price: Callable[[Candidate], float | None] | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        retry_total: int = 1,
        delete_timeout_s: float = 300.0,
        poll_interval_s: float = 5.0,
        force_delete: bool = True,
        self_shutdown_grace_s: float = SELF_SHUTDOWN_GRACE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not owner or "/" in owner:
            raise ValueError("owner must be a non-empty tag value without '/'")
        self.owner = owner
        self.image = image
        self._targets = targets if callable(targets) else tuple(targets)
        if not callable(self._targets):
            # a fixed list cannot change: say what is wrong now, not at the first launch on it
            for target in self._azure_targets():
                try:
                    AzureSettings.from_target(target, image)
                except InvalidSpec as exc:
                    raise ValueError(exc.message) from None
        self._self_shutdown = SelfShutdownGrace(self_shutdown_grace_s, monotonic=monotonic)
        self._credential = credential
        self._base_url = base_url
        self._verify = connection_verify
        self._price = price
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._retry_total = retry_total
        self.delete_timeout_s = delete_timeout_s
        self.poll_interval_s = poll_interval_s
        self.force_delete = force_delete
        self._clients: dict[str, ComputeManagementClient] = {}
        self._lock = threading.RLock()
        self._seen = _Recent(REMEMBERED_ATTEMPTS)  # attempt -> (subscription, resource group) of its VM
        self._cancelled = _Recent(REMEMBERED_ATTEMPTS)

    # -- clients -------------------------------------------------------------------------------

    def _client(self, subscription_id: str) -> ComputeManagementClient:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                credential = self._credential
                if credential is None:
                    from azure.identity import DefaultAzureCredential

                    credential = self._credential = DefaultAzureCredential()
                client = ComputeManagementClient(
                    credential,
                    subscription_id,
                    base_url=self._base_url,
                    connection_verify=self._verify,
                    connection_timeout=self._connect_timeout_s,
                    read_timeout=self._read_timeout_s,
                    # fail fast: the scheduler owns retrying (another place, or the next round). One
                    # retry covers a keep-alive connection the server closed; an error status (429,
                    # 5xx) is answered at once, never slept on (a Retry-After can be minutes).
                    retry_total=self._retry_total,
                    retry_connect=1,
                    retry_read=0,
                    retry_status=0,
                    retry_backoff_factor=0.2,
                    retry_backoff_max=2,
                )
                self._clients[subscription_id] = client
            return client

    def close(self) -> None:
        """Close the HTTP sessions of every client (the credential is the caller's to close)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> AzureSpotProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _azure_targets(self) -> list[Target]:
        targets = self._targets() if callable(self._targets) else self._targets
        return [t for t in targets if t.provider == self.name]

    def _locations(self, attempt_id: str | None = None) -> list[tuple[str, str]]:
        """Where an attempt's VM may be: where this process saw it first, then every configured group.

        Only the two keys that name a group are read here: a target whose
        other settings are wrong still holds VMs to find and cancel.
        """
        configured: list[tuple[str, str]] = []
        for target in self._azure_targets():
            sub, rg = target.settings.get("subscription_id"), target.settings.get("resource_group")
            if isinstance(sub, str) and sub.strip() and isinstance(rg, str) and rg.strip():
                configured.append((sub.strip(), rg.strip()))
        known = self._seen.get(attempt_id) if attempt_id else None
        return list(dict.fromkeys([known, *configured] if known is not None else configured))

    # -- the contract --------------------------------------------------------------------------

    def capacity(self, target: Target) -> Capacity:
        """Unknown: Azure does not publish free Spot capacity; a launch attempt is the only probe."""
        return Capacity(free=None, total=None)

    def quote(self, candidate: Candidate) -> Quote:
        if self._price is None:
            return Quote(usd_per_hour=None)
        return Quote(usd_per_hour=self._price(candidate), observed_at=datetime.now(UTC))

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Create the attempt's Spot VM and return once ARM accepted it; adopt the VM if it exists."""
        candidate = request.candidate
        target = next((t for t in self._azure_targets() if t.name == candidate.target), None)
        if target is None:
            raise InvalidSpec(f"no azure target named {candidate.target!r} is configured", target=candidate.target)
        settings = AzureSettings.from_target(target, self.image)
        if not candidate.region or not candidate.instance_type:
            raise InvalidSpec("an Azure candidate needs a region and a VM size", target=candidate.target)
        try:
            name = vm_name(request.attempt_id)
        except ValueError as exc:
            raise InvalidSpec(str(exc), target=candidate.target) from exc
        try:
            spec = WorkerSpec.model_validate(dict(request.worker_spec))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "worker_spec"
            raise InvalidSpec(f"worker_spec.{field}: {first['msg']}", target=candidate.target) from exc
        if spec.attempt_id != request.attempt_id:
            raise InvalidSpec("worker_spec.attempt_id: differs from the launch's attempt id", target=candidate.target)
        body = self._vm_body(request, settings, name)
        where = (settings.subscription_id, settings.resource_group)
        client = self._client(settings.subscription_id)
        place = f"{candidate.target}/{candidate.region}/{candidate.instance_type}"
        # serialised in this process: If-None-Match already keeps two launches of one attempt to one VM,
        # but a launch that times out deletes what it may have made, and must not delete the VM a
        # concurrent launch of the same attempt just created and adopted
        with self._lock:
            existing = self._get(client, settings.resource_group, name, place)
            if existing is not None:
                return self._adopt(existing, request.attempt_id, where, place)
            try:
                # polling=False: no poller thread; the result is the PUT's own 201 body (Creating)
                client.virtual_machines.begin_create_or_update(
                    settings.resource_group,
                    name,
                    VirtualMachine(body),
                    match_condition=MatchConditions.IfMissing,
                    polling=False,
                ).result()
            except ResourceExistsError as exc:
                # the SDK maps 409 and 412 alike to ResourceExistsError: only 412 (If-None-Match) means
                # "created meanwhile" (another scheduler, or our own earlier PUT whose answer was lost)
                if exc.status_code != 412:
                    raise _translate(exc, f"create VM {name}", place) from exc
                existing = self._get(client, settings.resource_group, name, place)
                if existing is None:
                    raise Unavailable(f"{name}: exists and vanished during launch", target=place) from None
                return self._adopt(existing, request.attempt_id, where, place)
            except AzureError as exc:
                error = _translate(exc, f"create VM {name}", place)
                if _fate_unknown(exc):
                    self._abandon(client, settings.resource_group, name)
                raise error from exc
            self._seen.add(request.attempt_id, where)
            return LaunchResult(backend_ref=_vm_id(*where, name), adopted=False)

    def _adopt(self, vm: VirtualMachine, attempt_id: str, where: tuple[str, str], place: str) -> LaunchResult:
        tags = vm.tags or {}
        if tags.get(TAG_ATTEMPT) != attempt_id:
            # two attempt ids that differ only in characters a VM name cannot hold map to one name
            raise InvalidSpec(
                f"VM {vm.name} belongs to attempt {tags.get(TAG_ATTEMPT)!r}, not {attempt_id!r}", target=place
            )
        self._seen.add(attempt_id, where)
        return LaunchResult(backend_ref=_vm_id(*where, str(vm.name)), adopted=True)

    def _abandon(self, client: ComputeManagementClient, resource_group: str, name: str) -> None:
        """Best effort: start deleting a VM whose create may or may not have happened."""
        with contextlib.suppress(AzureError):
            client.virtual_machines.begin_delete(
                resource_group, name, force_deletion=self.force_delete or None, polling=False
            )

    def _vm_body(self, request: LaunchRequest, settings: AzureSettings, name: str) -> dict[str, Any]:
        candidate = request.candidate
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
        tags = resource_tags(task_id=request.task_id, attempt_id=request.attempt_id, owner=self.owner, for_azure=True)
        return {
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
                "priority": "Spot",
                "evictionPolicy": "Delete",
                # -1: pay up to the on-demand price, never evicted for price; Azure takes 5 decimals
                "billingProfile": {"maxPrice": -1 if max_price is None else round(max_price, 5)},
            },
        }

    def status(self, attempt_id: str) -> BackendStatus:
        """Where the attempt's VM is (see the module docstring's table)."""
        try:
            name = vm_name(attempt_id)
        except ValueError:
            return BackendStatus(state=BackendState.LOST, reason="unknown attempt: no VM name can be made from its id")
        for sub, rg in self._locations(attempt_id):
            vm = self._get(self._client(sub), rg, name, self.name, instance_view=True)
            if vm is None:
                continue
            if (vm.tags or {}).get(TAG_ATTEMPT) != attempt_id:
                continue  # another attempt's VM under the same name: not this one
            self._seen.add(attempt_id, (sub, rg))
            return self._judge(attempt_id, vm)
        if attempt_id in self._cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the VM was deleted")
        if attempt_id in self._seen:
            return BackendStatus(
                state=BackendState.PREEMPTED,
                reason=f"VM {name} was deleted by Azure: Spot eviction (evictionPolicy Delete)",
            )
        groups = ", ".join(rg for _, rg in self._locations()) or "no configured resource group"
        return BackendStatus(
            state=BackendState.LOST,
            reason=f"unknown attempt: no VM {name} in {groups} (never launched, or deleted while not watched)",
        )

    def _judge(self, attempt_id: str, vm: VirtualMachine) -> BackendStatus:
        provisioning = str(vm.provisioning_state or "").lower()
        statuses = list(vm.instance_view.statuses or []) if vm.instance_view else []
        power = next(
            (
                str(s.code).split("/", 1)[1].lower()
                for s in statuses
                if str(s.code or "").lower().startswith("powerstate/")
            ),
            None,
        )
        if attempt_id in self._cancelled:
            return BackendStatus(state=BackendState.FAILED, reason=f"cancelled; the VM is {provisioning or 'present'}")
        if provisioning == "deleting":
            return BackendStatus(
                state=BackendState.PREEMPTED,
                reason="the VM is being deleted, not by this control plane: Spot eviction (evictionPolicy Delete)",
            )
        if provisioning == "failed":
            failed = next(
                (s for s in statuses if str(s.code or "").lower().startswith("provisioningstate/failed")), None
            )
            code = str(failed.code).split("/", 2)[2] if failed is not None and str(failed.code).count("/") >= 2 else ""
            message = (failed.message if failed is not None else None) or "no detail from Azure"
            if code.lower() in _CAPACITY_CODES:
                return BackendStatus(
                    state=BackendState.PREEMPTED,
                    reason=f"allocation failed after the launch was accepted, no worker ran: {code}: {message}",
                )
            return BackendStatus(
                state=BackendState.FAILED, reason=f"provisioning failed: {code or 'unknown'}: {message}"
            )
        if provisioning == "canceled":
            return BackendStatus(state=BackendState.FAILED, reason="provisioning was canceled")
        if provisioning == "creating":
            return BackendStatus(state=BackendState.PENDING, reason="VM creating")
        if provisioning in ("updating", "migrating"):
            state = BackendState.RUNNING if power == "running" else BackendState.PENDING
            return BackendStatus(state=state, reason=f"VM {provisioning}")
        if power in ("running", "stopping", "deallocating"):
            return BackendStatus(state=BackendState.RUNNING)
        if power == "stopped":
            # keyed by the VM's unique id: a later VM of the same name starts its own grace
            key = f"{attempt_id}/{vm.vm_id or vm.name}"
            return self._self_shutdown.status(key, f"VM {vm.name} stopped")
        if power == "deallocated":
            return BackendStatus(state=BackendState.PREEMPTED, reason="the Spot VM was deallocated (eviction)")
        return BackendStatus(state=BackendState.PENDING, reason=f"VM {provisioning or 'starting'}")

    def cancel(self, attempt_id: str) -> None:
        """Delete the attempt's VM (forced), wait until it is gone, and check its NIC and disk went with it."""
        try:
            name = vm_name(attempt_id)
        except ValueError:
            return
        deadline = time.monotonic() + self.delete_timeout_s
        for sub, rg in self._locations(attempt_id):
            client = self._client(sub)
            vm = self._get(client, rg, name, self.name)
            if vm is not None and (vm.tags or {}).get(TAG_ATTEMPT) == attempt_id:
                self._delete(attempt_id, client, (sub, rg), vm, deadline)
                return

    def _delete(
        self,
        attempt_id: str,
        client: ComputeManagementClient,
        where: tuple[str, str],
        vm: VirtualMachine,
        deadline: float,
    ) -> None:
        name, rg = str(vm.name), where[1]
        self._cancelled.add(attempt_id, where)
        dependents = _dependents(vm)  # read now: the ids are gone with the VM
        if str(vm.provisioning_state or "").lower() != "deleting":
            try:
                # forceDeletion: no guest shutdown. Cancelled work needs no checkpoint, and a
                # GPU VM draining for minutes would bill for minutes.
                client.virtual_machines.begin_delete(rg, name, force_deletion=self.force_delete or None, polling=False)
            except ResourceNotFoundError:
                pass  # gone meanwhile (evicted): still check that its NIC and disk went too
            except AzureError as exc:
                raise _translate(exc, f"delete VM {name}", self.name) from exc

        def vm_gone() -> bool:
            return self._get(client, rg, name, self.name) is None

        self._wait_until(deadline, f"VM {name}", vm_gone)
        self._remove_dependents(client, dependents, deadline)

    def _wait_until(self, deadline: float, what: str, gone: Callable[[], bool]) -> None:
        while not gone():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"{what} is still being deleted after {self.delete_timeout_s:g}s; cancel again to keep waiting",
                    target=self.name,
                )
            time.sleep(min(self.poll_interval_s, left))

    def _remove_dependents(self, client: ComputeManagementClient, ids: list[str], deadline: float) -> None:
        """deleteOption Delete removes them with the VM; delete what is left anyway (an older VM, a failed delete)."""
        for resource_id in ids:

            def gone(resource_id: str = resource_id) -> bool:
                response = self._send(client, "GET", resource_id)
                if response.status_code == 404:
                    return True
                body = response.json()
                # a NIC names its VM in properties.virtualMachine, a disk in managedBy
                attached = (body.get("properties") or {}).get("virtualMachine") or body.get("managedBy")
                if not attached:  # detached and left behind (Detach option, an older VM): remove it
                    self._send(client, "DELETE", resource_id)
                return False

            self._wait_until(deadline, resource_id, gone)

    def _send(self, client: ComputeManagementClient, method: str, resource_id: str) -> Any:
        """A raw ARM call through the client's own pipeline (auth, TLS, retries): NICs have no Compute API."""
        version = NETWORK_API_VERSION if "/microsoft.network/" in resource_id.lower() else DISK_API_VERSION
        try:
            response = client.send_request(HttpRequest(method, f"{resource_id}?api-version={version}"))
        except AzureError as exc:
            raise _translate(exc, f"{method} {resource_id}", self.name) from exc
        if response.status_code >= 400 and not (method == "GET" and response.status_code == 404):
            refused = HttpResponseError(response=response)
            raise _translate(refused, f"{method} {resource_id}", self.name) from refused
        return response

    def list_owned(self) -> list[OwnedResource]:
        """Every VM in the configured resource groups whose owner tag is this control plane's."""
        owned = []
        for sub, rg in self._locations():
            client = self._client(sub)
            try:
                vms = list(client.virtual_machines.list(rg))
            except ResourceNotFoundError:
                continue  # the resource group is gone, and everything that was in it
            except AzureError as exc:
                raise _translate(exc, f"list VMs in {rg}", self.name) from exc
            for vm in vms:
                tags = vm.tags or {}
                attempt_id = tags.get(TAG_ATTEMPT)
                if tags.get(TAG_OWNER) != self.owner or not attempt_id:
                    continue
                self._seen.add(attempt_id, (sub, rg))
                owned.append(
                    OwnedResource(
                        attempt_id=attempt_id,
                        task_id=tags.get(TAG_TASK, ""),
                        backend_ref=_vm_id(sub, rg, str(vm.name)),
                        state=self.status(attempt_id).state,
                    )
                )
        return owned

    # -- ARM reads ------------------------------------------------------------------------------

    def _get(
        self, client: ComputeManagementClient, rg: str, name: str, place: str, *, instance_view: bool = False
    ) -> VirtualMachine | None:
        """The VM, or None on 404 (no such VM, or no such resource group: either way nothing is there)."""
        try:
            return client.virtual_machines.get(rg, name, expand="instanceView" if instance_view else None)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _translate(exc, f"read VM {name}", place) from exc


def _vm_id(subscription_id: str, resource_group: str, name: str) -> str:
    # built, not read back: the same on create and adopt, whatever casing ARM returns
    group = f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
    return f"{group}/providers/Microsoft.Compute/virtualMachines/{name}"


def _dependents(vm: VirtualMachine) -> list[str]:
    """Resource ids of the OS disk and NICs the VM uses (read before it is deleted)."""
    ids: list[str] = []
    os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
    if os_disk is not None and os_disk.managed_disk is not None and os_disk.managed_disk.id:
        ids.append(str(os_disk.managed_disk.id))
    for nic in (vm.network_profile.network_interfaces or []) if vm.network_profile else []:
        if nic.id:
            ids.append(str(nic.id))
    return ids


def _fate_unknown(exc: AzureError) -> bool:
    """Whether a failed PUT may still have created the VM (no answer, or a server error)."""
    if isinstance(exc, HttpResponseError) and not isinstance(exc, ClientAuthenticationError):
        return exc.status_code is not None and exc.status_code >= 500
    return isinstance(exc, ServiceRequestError | ServiceResponseError)


def _error_of(exc: HttpResponseError) -> tuple[str, str]:
    """ARM's ``error.code`` and ``error.message`` (from the SDK's parsed model, else the body)."""
    code = getattr(exc.error, "code", None) if exc.error is not None else None
    message = getattr(exc.error, "message", None) if exc.error is not None else None
    if not code and exc.response is not None:
        with contextlib.suppress(Exception):  # an HTML error page or no body at all
            response: Any = exc.response  # typed as the common base, which lacks json()
            error = response.json().get("error") or {}
            code, message = error.get("code"), error.get("message")
    return str(code or ""), str(message or exc.reason or exc.message or "")


def _translate(exc: AzureError, what: str, place: str) -> ProviderError:
    """An SDK error as the domain's taxonomy (the module docstring's table)."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code, message = _error_of(exc)
        text = f"{what}: {code or status}: {message}"
        lowered = code.lower()
        if status == 429:
            headers: Any = getattr(exc.response, "headers", None) or {}
            retry_after = headers.get("Retry-After")
            return Throttled(f"{text} (Retry-After: {retry_after or 'none'})", target=place)
        if status in (401, 403):
            return access_denied(what, f"{code or status}: {message}", target=place, check=ACCESS_CHECK)
        if lowered in _CAPACITY_CODES:
            return InsufficientCapacity(text, target=place)
        if lowered == "spotpricegreaterthanprovidedmaxprice":
            return PriceTooHigh(text, target=place)
        if lowered in ("operationnotallowed", "quotaexceeded") and "quota" in message.lower():
            return QuotaExceeded(text, target=place)
        if status >= 500 or status == 409:
            return Unavailable(text, target=place)
        return InvalidSpec(text, target=place)
    if isinstance(exc, ClientAuthenticationError):
        # no HTTP status: the credential could not get a token (e.g. the managed identity endpoint
        # did not answer); that may pass, unlike a 401/403 from ARM itself
        return Unavailable(f"{what}: cannot get an Azure token: {exc.message}", target=place)
    return Unavailable(f"{what}: {type(exc).__name__}: {exc.message}", target=place)
