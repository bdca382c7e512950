"""The Azure Spot provider: clients, resource groups and the provider contract over the pure modules."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine

from controlplane.domain import (
    ON_DEMAND,
    Candidate,
    InvalidSpec,
    Target,
    Unavailable,
)
from providers.azure.body import vm_body, vm_name
from providers.azure.errors import fate_unknown, translate
from providers.azure.settings import AzureSettings
from providers.azure.status import OUTSIDE, is_regular, judge
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
    SelfShutdownGrace,
    WorkerImage,
    cloud_market,
)
from providers.common import BoundedMemory, ClientCache, own_targets

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


NETWORK_API_VERSION = "2024-05-01"
#: api-version for disk reads and deletes (Microsoft.Compute/disks)
DISK_API_VERSION = "2024-03-02"
#: how many attempts one process remembers having seen or cancelled (404 -> PREEMPTED, not LOST)
REMEMBERED_ATTEMPTS = 100_000

_RESOURCE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/providers/(?P<type>.+)/(?P<name>[^/]+)$", re.I
)


#: mapping lives in providers.bootstrap (azure_tag_key), these names stay for existing imports
TAG_TASK = AZURE_TAG_TASK
TAG_ATTEMPT = AZURE_TAG_ATTEMPT
TAG_OWNER = AZURE_TAG_OWNER


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
        self._clients: ClientCache[str, ComputeManagementClient] = ClientCache()
        self._lock = threading.RLock()
        #: attempt -> (subscription, resource group) of its VM
        self._seen: BoundedMemory[tuple[str, str]] = BoundedMemory(REMEMBERED_ATTEMPTS)
        self._cancelled: BoundedMemory[tuple[str, str]] = BoundedMemory(REMEMBERED_ATTEMPTS)
        #: attempts whose VM is Regular (on-demand): never evicted, so a 404 is not an eviction
        self._regular: BoundedMemory[bool] = BoundedMemory(REMEMBERED_ATTEMPTS)

    # -- clients -------------------------------------------------------------------------------

    def _client(self, subscription_id: str) -> ComputeManagementClient:
        return self._clients.get(subscription_id, self._new_client)

    def _new_client(self, subscription_id: str) -> ComputeManagementClient:
        # under the cache's lock, so DefaultAzureCredential is made once
        credential = self._credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = self._credential = DefaultAzureCredential()
        return ComputeManagementClient(
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

    def close(self) -> None:
        """Close the HTTP sessions of every client (the credential is the caller's to close)."""
        for client in self._clients.close_all():
            client.close()

    def __enter__(self) -> AzureSpotProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _azure_targets(self) -> list[Target]:
        return own_targets(self._targets, self.name)

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
        body = vm_body(request, settings, name, owner=self.owner)
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
                    raise translate(exc, f"create VM {name}", place) from exc
                existing = self._get(client, settings.resource_group, name, place)
                if existing is None:
                    raise Unavailable(f"{name}: exists and vanished during launch", target=place) from None
                return self._adopt(existing, request.attempt_id, where, place)
            except AzureError as exc:
                error = translate(exc, f"create VM {name}", place)
                if fate_unknown(exc):
                    self._abandon(client, settings.resource_group, name)
                raise error from exc
            self._seen.put(request.attempt_id, where)
            if cloud_market(candidate) == ON_DEMAND:
                self._regular.put(request.attempt_id, True)
            return LaunchResult(backend_ref=_vm_id(*where, name), adopted=False)

    def _adopt(self, vm: VirtualMachine, attempt_id: str, where: tuple[str, str], place: str) -> LaunchResult:
        tags = vm.tags or {}
        if tags.get(TAG_ATTEMPT) != attempt_id:
            # two attempt ids that differ only in characters a VM name cannot hold map to one name
            raise InvalidSpec(
                f"VM {vm.name} belongs to attempt {tags.get(TAG_ATTEMPT)!r}, not {attempt_id!r}", target=place
            )
        self._see(attempt_id, where, vm)
        return LaunchResult(backend_ref=_vm_id(*where, str(vm.name)), adopted=True)

    def _see(self, attempt_id: str, where: tuple[str, str], vm: VirtualMachine) -> None:
        """Remember where the attempt's VM is, and whether it is Regular (for a later 404)."""
        self._seen.put(attempt_id, where)
        if is_regular(vm):
            self._regular.put(attempt_id, True)

    def _abandon(self, client: ComputeManagementClient, resource_group: str, name: str) -> None:
        """Best effort: start deleting a VM whose create may or may not have happened."""
        with contextlib.suppress(AzureError):
            client.virtual_machines.begin_delete(
                resource_group, name, force_deletion=self.force_delete or None, polling=False
            )

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
            self._see(attempt_id, (sub, rg), vm)
            return judge(attempt_id, vm, cancelled=attempt_id in self._cancelled, self_shutdown=self._self_shutdown)
        if attempt_id in self._cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the VM was deleted")
        if attempt_id in self._regular:
            return BackendStatus(
                state=BackendState.FAILED,
                reason=f"{OUTSIDE}: Regular VM {name} was deleted (Azure never evicts a Regular VM)",
            )
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
        self._cancelled.put(attempt_id, where)
        dependents = _dependents(vm)  # read now: the ids are gone with the VM
        if str(vm.provisioning_state or "").lower() != "deleting":
            try:
                # forceDeletion: no guest shutdown. Cancelled work needs no checkpoint, and a
                # GPU VM draining for minutes would bill for minutes.
                client.virtual_machines.begin_delete(rg, name, force_deletion=self.force_delete or None, polling=False)
            except ResourceNotFoundError:
                pass  # gone meanwhile (evicted): still check that its NIC and disk went too
            except AzureError as exc:
                raise translate(exc, f"delete VM {name}", self.name) from exc

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
            raise translate(exc, f"{method} {resource_id}", self.name) from exc
        if response.status_code >= 400 and not (method == "GET" and response.status_code == 404):
            refused = HttpResponseError(response=response)
            raise translate(refused, f"{method} {resource_id}", self.name) from refused
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
                raise translate(exc, f"list VMs in {rg}", self.name) from exc
            for vm in vms:
                tags = vm.tags or {}
                attempt_id = tags.get(TAG_ATTEMPT)
                if tags.get(TAG_OWNER) != self.owner or not attempt_id:
                    continue
                self._see(attempt_id, (sub, rg), vm)
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
            raise translate(exc, f"read VM {name}", place) from exc


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
