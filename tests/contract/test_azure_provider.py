"""The Azure Spot provider: the contract suite and Azure's behaviour, through the real SDK against FakeAzureArm.

Nothing in azure-mgmt-compute is patched: the provider's ``ComputeManagementClient``
talks HTTPS to the fake on 127.0.0.1 (``base_url``), trusts the fake's
throwaway CA (``connection_verify``) and authenticates with a fixed bearer
token, so retries, timeouts, LRO handling and error mapping are the SDK's own.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.mgmt.compute import ComputeManagementClient

from controlplane.domain import (
    ON_DEMAND,
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
from controlplane.domain.worker_spec import parse_worker_spec
from providers.azure import TAG_ATTEMPT, TAG_OWNER, TAG_TASK, AzureSpotProvider, vm_name
from providers.azure.body import vm_body
from providers.azure.settings import AzureSettings
from providers.base import BackendState, BackendStatus, LaunchRequest, Provider
from providers.bootstrap import (
    AZURE_TAG_ATTEMPT,
    AZURE_TAG_MARKET,
    AZURE_TAG_OWNER,
    AZURE_TAG_TASK,
    SELF_SHUTDOWN_GRACE_S,
    SELF_SHUTDOWN_REASON,
    SPEC_PATH,
    WorkerImage,
    resource_tags,
)
from tests.contract.provider_contract import ProviderContract, candidate_for, launch_request
from tests.fakes.azure_arm import FakeAzureArm, RecordedRequest

pytestmark = pytest.mark.timeout(60)

SUBSCRIPTION = "00000000-0000-0000-0000-00000000f00d"  # FakeAzureArm's default
RESOURCE_GROUP = "rg-fusionplane"
SUBNET = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network"
    "/virtualNetworks/vnet-workers/subnets/workers"
)
TOKEN = "fake-arm-token"
OWNER = "cp-test"
SIZE = "Standard_NC4as_T4_v3"
SETTINGS: dict[str, Any] = {
    "subscription_id": SUBSCRIPTION,
    "resource_group": RESOURCE_GROUP,
    "subnet_id": SUBNET,
    "image": "Canonical:ubuntu-24_04-lts:server:latest",
    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests fusionplane@test",
    "worker_image": "ghcr.io/fusionplane/worker-gpu:1.4.0",
}
AZURE = Target(
    name="azure-eastus",
    provider="azure",
    private=False,
    regions=("eastus",),
    instance_types=(SIZE,),
    max_price_usd_h=0.42,
    settings=SETTINGS,
)


def azure_target(**changes: Any) -> Target:
    settings = {**SETTINGS, **changes.pop("settings", {})}
    fields = {
        "name": AZURE.name,
        "provider": "azure",
        "private": False,
        "regions": AZURE.regions,
        "instance_types": AZURE.instance_types,
        "max_price_usd_h": AZURE.max_price_usd_h,
        **changes,
    }
    return Target(settings=settings, **fields)


class FixedToken:
    """A TokenCredential with one fixed token (what the fake expects)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)


class NoToken:
    """A credential that cannot get a token, as a managed identity whose endpoint does not answer."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError("ManagedIdentityCredential: no response from the IMDS endpoint")


Targets = Iterable[Target] | Callable[[], Iterable[Target]]


def new_provider(arm: FakeAzureArm, targets: Targets = (AZURE,), **overrides: Any) -> AzureSpotProvider:
    options: dict[str, Any] = {
        "owner": OWNER,
        "credential": FixedToken(),
        "base_url": arm.url,
        "connection_verify": str(arm.ca_path),
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "delete_timeout_s": 5.0,
        "poll_interval_s": 0.02,
        **overrides,
    }
    return AzureSpotProvider(targets, **options)


def vms_of(arm: FakeAzureArm, attempt_id: str) -> int:
    return sum(1 for vm in arm.vms() if vm.tags.get(TAG_ATTEMPT) == attempt_id)


def leftovers(arm: FakeAzureArm) -> list[str]:
    """Names of every VM, NIC and disk still in the fake: what a leak would leave."""
    return (
        [f"vm {v.name}" for v in arm.vms()]
        + [f"nic {n.name}" for n in arm.nics()]
        + [f"disk {d.name}" for d in arm.disks()]
    )


def puts(arm: FakeAzureArm) -> list[RecordedRequest]:
    return [r for r in arm.requests if r.method == "PUT" and "/virtualMachines/" in r.path]


def wait_for(provider: AzureSpotProvider, attempt_id: str, state: BackendState, tries: int = 20) -> BackendStatus:
    status = provider.status(attempt_id)
    for _ in range(tries):  # each status() is one poll of the fake: bounded, no sleeping
        if status.state is state:
            break
        status = provider.status(attempt_id)
    return status


def spec_with_token(attempt_id: str) -> dict[str, Any]:
    return {
        "version": 1,
        "task_id": "task-azure",
        "attempt_id": attempt_id,
        "source": "s3://in/source.png",
        "target": "s3://in/target.png",
        "output": "s3://out/result.png",
        "callback": {"url": f"https://cp.example/v1/attempts/{attempt_id}", "token": "att_SECRET-callback-token"},
    }


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[FakeAzureArm]:
    fake = FakeAzureArm(cert_dir=tmp_path / "arm-tls").start()
    yield fake
    fake.stop()


@pytest.fixture
def make(arm: FakeAzureArm) -> Iterator[Callable[..., AzureSpotProvider]]:
    """Providers on ``arm``; each is closed (its HTTP sessions) at the end."""
    made: list[AzureSpotProvider] = []

    def build(targets: Targets = (AZURE,), **overrides: Any) -> AzureSpotProvider:
        provider = new_provider(arm, targets, **overrides)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


@pytest.fixture
def azure(make: Callable[..., AzureSpotProvider]) -> AzureSpotProvider:
    return make()


# ---- the contract ---------------------------------------------------------------------------------


class TestAzureSpotProvider(ProviderContract):
    target = AZURE

    @pytest.fixture(autouse=True)
    def _arm(self, tmp_path: Path) -> Iterator[None]:
        # autouse: set up before the contract's provider fixture, torn down after it
        self.arm = FakeAzureArm(cert_dir=tmp_path / "arm-tls").start()
        yield
        self.arm.stop()

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[Provider]:
        provider = self.make_provider(tmp_path)
        yield provider
        for owned in provider.list_owned():
            provider.cancel(owned.attempt_id)
        assert leftovers(self.arm) == [], "cancel leaked resources"
        provider.close()

    def make_provider(self, tmp_path: Path) -> AzureSpotProvider:
        return new_provider(self.arm)

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        return vms_of(self.arm, attempt_id)


class TestAzureOnDemandProvider(TestAzureSpotProvider):
    """The same contract for on-demand candidates: a Regular VM, launched, adopted and deleted the same way."""

    target = dataclasses.replace(AZURE, name="azure-on-demand", market=ON_DEMAND)

    def make_provider(self, tmp_path: Path) -> AzureSpotProvider:
        return new_provider(self.arm, (self.target,))


# ---- the request -------------------------------------------------------------------------------------


def test_the_put_is_a_spot_vm_that_deletes_its_nic_and_disk(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    attempt = "att_01HBODY"
    request = LaunchRequest(
        attempt_id=attempt,
        task_id="task-azure",
        candidate=candidate_for(AZURE),
        worker_spec=parse_worker_spec(spec_with_token(attempt)),
    )
    result = azure.launch(request)

    [put] = puts(arm)
    name = vm_name(attempt)
    assert name == "fp-att-01hbody"
    assert put.path.endswith(f"/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/{name}")
    assert result.backend_ref.endswith(f"/virtualMachines/{name}")
    assert put.headers["if-none-match"] == "*"  # create only: never an update of someone's VM
    assert put.headers["authorization"] == f"Bearer {TOKEN}"
    body = put.json()
    props = body["properties"]
    assert body["location"] == "eastus"
    assert props["hardwareProfile"] == {"vmSize": SIZE}
    assert props["priority"] == "Spot"
    assert props["evictionPolicy"] == "Delete"
    assert props["billingProfile"] == {"maxPrice": 0.42}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "Canonical",
        "offer": "ubuntu-24_04-lts",
        "sku": "server",
        "version": "latest",
    }
    os_disk = props["storageProfile"]["osDisk"]
    assert os_disk["deleteOption"] == "Delete"
    assert os_disk["name"] == f"{name}-osdisk"
    network = props["networkProfile"]
    assert network["networkApiVersion"]
    [nic] = network["networkInterfaceConfigurations"]
    assert nic["properties"]["deleteOption"] == "Delete"
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"] == {"id": SUBNET}
    assert "publicIPAddressConfiguration" not in json.dumps(nic)
    os_profile = props["osProfile"]
    assert os_profile["computerName"] == name
    assert os_profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert os_profile["linuxConfiguration"]["ssh"]["publicKeys"] == [
        {"path": "/home/fusionplane/.ssh/authorized_keys", "keyData": SETTINGS["ssh_public_key"]}
    ]

    # the spec, token included, reaches the VM only as a 0600 file written by cloud-init
    user_data = base64.b64decode(os_profile["customData"]).decode()
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    [spec_file] = [f for f in config["write_files"] if f["path"] == SPEC_PATH]
    assert spec_file["permissions"] == "0600"
    assert json.loads(base64.b64decode(spec_file["content"])) == spec_with_token(attempt)
    assert SETTINGS["worker_image"] in base64.b64decode(config["write_files"][1]["content"]).decode()

    # tags: ids only, with Azure-legal names (no '/'), and nowhere the token
    assert body["tags"] == {
        "fusionplane.io_task-id": "task-azure",
        "fusionplane.io_attempt-id": attempt,
        "fusionplane.io_owner": OWNER,
        "fusionplane.io_market": "spot",
    }
    assert (
        tuple(body["tags"])
        == (TAG_TASK, TAG_ATTEMPT, TAG_OWNER, AZURE_TAG_MARKET)
        == (AZURE_TAG_TASK, AZURE_TAG_ATTEMPT, AZURE_TAG_OWNER, AZURE_TAG_MARKET)
    )
    assert body["tags"] == resource_tags(
        task_id="task-azure", attempt_id=attempt, owner=OWNER, market="spot", for_azure=True
    )
    assert "att_SECRET-callback-token" not in json.dumps(body["tags"])
    assert "att_SECRET-callback-token" not in put.path + json.dumps(put.query)


def test_no_max_price_pays_up_to_on_demand(arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]) -> None:
    target = azure_target(max_price_usd_h=None)
    make((target,)).launch(launch_request("att-no-max", on=target))
    assert puts(arm)[0].json()["properties"]["billingProfile"] == {"maxPrice": -1}


def test_launch_returns_once_the_vm_exists_without_polling(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att-fast", on=AZURE))
    vm = arm.vm(vm_name("att-fast"))
    assert vm is not None
    assert vm.provisioning_state == "Creating"  # launch did not wait for provisioning
    assert [(r.method, "/operations/" in r.path) for r in arm.requests] == [("GET", False), ("PUT", False)]
    assert wait_for(azure, "att-fast", BackendState.RUNNING).state is BackendState.RUNNING


def test_the_fakes_operations_satisfy_the_sdks_own_poller(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    """The fake's Azure-AsyncOperation flow is what ARMPolling expects: create and delete run to completion."""
    azure.launch(launch_request("att-template", on=AZURE))
    body = puts(arm)[0].json()
    client = ComputeManagementClient(
        FixedToken(), SUBSCRIPTION, base_url=arm.url, connection_verify=str(arm.ca_path), polling_interval=0.01
    )
    with client:
        vm = client.virtual_machines.begin_create_or_update(RESOURCE_GROUP, "fp-polled", body).result(timeout=10)
        assert vm.provisioning_state == "Succeeded"
        client.virtual_machines.begin_delete(RESOURCE_GROUP, "fp-polled").result(timeout=10)
    assert arm.vm("fp-polled") is None
    assert any("/operations/" in r.path for r in arm.requests)


def test_the_sdk_refuses_a_bearer_token_over_plain_http() -> None:
    """Why the fake serves TLS: azure-core will not send a bearer token to an http:// URL."""
    # retry_total=0: the refusal is raised before any connection, so retries would only add backoff
    client = ComputeManagementClient(FixedToken(), SUBSCRIPTION, base_url="http://127.0.0.1:9", retry_total=0)
    with client, pytest.raises(ServiceRequestError, match="non-TLS"):
        client.virtual_machines.get(RESOURCE_GROUP, "fp-any")


# ---- idempotency -------------------------------------------------------------------------------------


def test_a_restarted_control_plane_adopts_without_a_second_put(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    first = make().launch(launch_request("att-crash", on=AZURE))
    again = make().launch(launch_request("att-crash", on=AZURE))  # a new provider: nothing in memory
    assert again.adopted
    assert again.backend_ref == first.backend_ref
    assert len(puts(arm)) == 1
    assert arm.created == [vm_name("att-crash")]


def test_a_put_whose_answer_was_lost_is_adopted_through_412(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    make().launch(launch_request("att-412", on=AZURE))
    # the restarted provider's first read misses (as if its GET raced the first PUT): its create-only
    # PUT gets 412 and it adopts the VM instead of updating it
    arm.fail(status=404, code="ResourceNotFound", message="not yet", times=1, method="GET", kind="vm")
    result = make().launch(launch_request("att-412", on=AZURE))
    assert result.adopted
    assert len(puts(arm)) == 2
    assert arm.created == [vm_name("att-412")]
    vm = arm.vm(vm_name("att-412"))
    assert vm is not None
    assert vm.updates == 0


def test_two_attempts_that_map_to_one_name_do_not_share_a_vm(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att_same", on=AZURE))
    with pytest.raises(InvalidSpec, match="belongs to attempt 'att_same'"):
        azure.launch(launch_request("att-same", on=AZURE))
    assert azure.status("att-same").state is BackendState.LOST
    azure.cancel("att-same")  # must not delete att_same's VM
    assert vms_of(arm, "att_same") == 1


# ---- errors -----------------------------------------------------------------------------------------

_REFUSALS = [
    (
        409,
        "SkuNotAvailable",
        "The requested size for resource '/subscriptions/x/.../fp-att' is currently not available in location "
        "'eastus' zones '' for subscription 'x'. Please try another size or deploy to a different location or zones.",
        InsufficientCapacity,
    ),
    (409, "AllocationFailed", "Allocation failed. We do not have sufficient capacity.", InsufficientCapacity),
    (409, "ZonalAllocationFailed", "Allocation failed in the zone.", InsufficientCapacity),
    (409, "OverconstrainedAllocationRequest", "Allocation failed: too many constraints.", InsufficientCapacity),
    (
        409,
        "OperationNotAllowed",
        "Operation could not be completed as it results in exceeding approved LowPriorityCores quota. Additional "
        "details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 0, Current Usage: 0, "
        "Additional Required: 4, (Minimum) New Limit Required: 4.",
        QuotaExceeded,
    ),
    (409, "OperationNotAllowed", "The operation is not allowed: another operation is in progress.", Unavailable),
    (
        400,
        "SpotPriceGreaterThanProvidedMaxPrice",
        "Unable to perform operation 'Create VM' since the provided max price '0.42 USD' is lower than the current "
        "spot price '0.55 USD' for Azure Spot Virtual Machine size 'Standard_NC4as_T4_v3'.",
        PriceTooHigh,
    ),
    (
        403,
        "AuthorizationFailed",
        "The client 'x' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/write'.",
        InvalidSpec,
    ),
    (
        400,
        "AzureSpotIsNotSupportedForThisVMSize",
        "Azure Spot Virtual Machine is not supported for this VM size.",
        InvalidSpec,
    ),
    (500, "InternalServerError", "An internal server error occurred.", Unavailable),
    (503, "ServiceUnavailable", "The service is unavailable.", Unavailable),
]


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"), _REFUSALS, ids=[f"{r[1]}-{r[3].__name__}" for r in _REFUSALS]
)
def test_refusals_map_to_the_taxonomy(
    arm: FakeAzureArm, azure: AzureSpotProvider, status: int, code: str, message: str, expected: type[ProviderError]
) -> None:
    arm.refuse_next_create(code, message, status=status)
    with pytest.raises(ProviderError) as caught:
        azure.launch(launch_request("att-refused", on=AZURE))
    assert type(caught.value) is expected
    assert code in caught.value.message
    if status == 403:
        assert "access denied" in caught.value.message
        assert "the target's configuration or permissions" in caught.value.message
    assert caught.value.target == f"{AZURE.name}/eastus/{SIZE}"
    assert leftovers(arm) == []


def test_a_size_the_region_does_not_offer_is_invalid_spec(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    target = azure_target(regions=("westeurope",), instance_types=("Standard_NC8as_T4_v3",))
    with pytest.raises(InvalidSpec, match="not available in the current region"):
        make((target,)).launch(launch_request("att-nosize", on=target))
    assert not arm.vms()


def test_throttling_is_answered_at_once_with_the_retry_after(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    arm.throttle(retry_after=37, method="PUT")
    started = time.monotonic()
    with pytest.raises(Throttled, match="Retry-After: 37") as caught:
        azure.launch(launch_request("att-429", on=AZURE))
    assert time.monotonic() - started < 5  # the SDK did not sleep the 37 s itself
    assert caught.value.retryable
    assert len(puts(arm)) == 1  # and did not retry
    assert not arm.vms()


def test_a_wrong_token_is_invalid_spec(arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]) -> None:
    provider = make(credential=FixedToken("someone-elses-token"))
    with pytest.raises(InvalidSpec, match="AuthenticationFailed") as caught:
        provider.launch(launch_request("att-401", on=AZURE))
    # worded as every provider words a refusal of access: the target's setup, not the task
    assert "access denied" in caught.value.message
    assert "the target's configuration or permissions" in caught.value.message
    assert "role assignments" in caught.value.message
    with pytest.raises(InvalidSpec):
        provider.status("att-401")


def test_no_token_at_all_is_unavailable(make: Callable[..., AzureSpotProvider]) -> None:
    with pytest.raises(Unavailable, match="cannot get an Azure token"):
        make(credential=NoToken()).status("att-notoken")


def test_a_missing_resource_group_is_invalid_spec(arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]) -> None:
    target = azure_target(settings={"resource_group": "rg-typo"})
    provider = make((target,))
    with pytest.raises(InvalidSpec, match="ResourceGroupNotFound"):
        provider.launch(launch_request("att-norg", on=target))
    # reads: no group, no VM; that is "nothing there", not an error
    assert provider.status("att-norg").state is BackendState.LOST
    provider.cancel("att-norg")


def test_a_launch_whose_answer_is_lost_deletes_what_it_may_have_created(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    # the PUT takes effect but its answer comes too late: the attempt fails, and its VM must not stay
    arm.slow(3.0, times=1, method="PUT", after=True)
    provider = make(read_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        provider.launch(launch_request("att-lostanswer", on=AZURE))
    assert time.monotonic() - started < 3
    deletes = [r for r in arm.requests if r.method == "DELETE"]
    assert len(deletes) == 1
    assert deletes[0].path.endswith(vm_name("att-lostanswer"))
    arm.settle()
    assert leftovers(arm) == []


# ---- status -----------------------------------------------------------------------------------------


def test_status_goes_from_pending_to_running(azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att-life", on=AZURE))
    assert azure.status("att-life").state is BackendState.PENDING
    assert wait_for(azure, "att-life", BackendState.RUNNING).state is BackendState.RUNNING


def test_eviction_is_preempted_and_leaves_nothing(arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]) -> None:
    provider = make()
    provider.launch(launch_request("att-evicted", on=AZURE))
    assert wait_for(provider, "att-evicted", BackendState.RUNNING).state is BackendState.RUNNING
    arm.evict(vm_name("att-evicted"))
    status = provider.status("att-evicted")
    assert status.state is BackendState.PREEMPTED
    assert status.reason
    assert "eviction" in status.reason
    assert leftovers(arm) == []  # evictionPolicy Delete + deleteOption Delete
    # a restarted control plane cannot tell an evicted VM from one that never was: LOST, never an error
    restarted = make().status("att-evicted")
    assert restarted.state is BackendState.LOST
    assert restarted.reason
    assert "unknown attempt" in restarted.reason


def test_a_failed_allocation_after_acceptance_is_preempted(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    arm.fail_next_provisioning("ZonalAllocationFailed")
    azure.launch(launch_request("att-noalloc", on=AZURE))  # accepted: 201
    status = wait_for(azure, "att-noalloc", BackendState.PREEMPTED)
    assert status.state is BackendState.PREEMPTED
    assert status.reason
    assert "ZonalAllocationFailed" in status.reason


def test_other_provisioning_failures_are_failed(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    arm.fail_next_provisioning("OSProvisioningTimedOut", "OS Provisioning for VM 'fp-att' did not finish in time.")
    azure.launch(launch_request("att-osfail", on=AZURE))
    status = wait_for(azure, "att-osfail", BackendState.FAILED)
    assert status.state is BackendState.FAILED
    assert status.reason
    assert "OSProvisioningTimedOut" in status.reason


def test_a_vm_that_powered_itself_off_waits_for_the_callback_then_is_lost(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    """The rule EC2 follows too (providers.bootstrap.SelfShutdownGrace): RUNNING for the grace, then LOST."""
    now = [1000.0]
    azure = make(monotonic=lambda: now[0])
    azure.launch(launch_request("att-done", on=AZURE))
    assert wait_for(azure, "att-done", BackendState.RUNNING).state is BackendState.RUNNING
    arm.power_off(vm_name("att-done"))  # cloud-init's "shutdown -h now" after the worker exited
    waiting = azure.status("att-done")
    # the worker's callback normally made the attempt final already; one still committing gets the grace
    assert waiting.state is BackendState.RUNNING
    assert waiting.reason
    assert "shut down by itself" in waiting.reason
    now[0] += SELF_SHUTDOWN_GRACE_S - 1
    assert azure.status("att-done").state is BackendState.RUNNING
    now[0] += 2.0
    lost = azure.status("att-done")
    # never SUCCEEDED (the exit code is on the VM's disk) nor FAILED (a success may have lost its callback)
    assert lost.state is BackendState.LOST
    assert lost.reason
    assert lost.reason.endswith(SELF_SHUTDOWN_REASON)
    assert lost.exit_code is None
    # a restarted control plane gives the callback its grace again instead of deciding at once
    assert make(monotonic=lambda: now[0]).status("att-done").state is BackendState.RUNNING
    assert make(self_shutdown_grace_s=0.0).status("att-done").state is BackendState.LOST
    # a stopped VM is still allocated and billed: status only reads, the control plane's cancel deletes it
    assert arm.vm(vm_name("att-done")) is not None
    azure.cancel("att-done")
    assert leftovers(arm) == []


# ---- cancel -----------------------------------------------------------------------------------------


def test_cancel_deletes_the_vm_its_nic_and_its_disk(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att-gone", on=AZURE))
    wait_for(azure, "att-gone", BackendState.RUNNING)
    assert len(arm.nics()) == 1
    assert len(arm.disks()) == 1
    azure.cancel("att-gone")
    assert leftovers(arm) == []
    [delete] = [r for r in arm.requests if r.method == "DELETE"]
    assert delete.query["forceDeletion"] == ["true"]
    status = azure.status("att-gone")
    assert status.state is BackendState.FAILED
    assert status.reason
    assert status.reason.startswith("cancelled")


def test_cancel_while_creating_leaves_nothing(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att-early", on=AZURE))
    azure.cancel("att-early")
    assert leftovers(arm) == []


def test_cancel_removes_a_nic_and_disk_that_outlived_their_vm(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    # a VM created with deleteOption Detach (an older version of this provider): the NIC and disk stay
    azure.launch(launch_request("att-detach", on=AZURE))
    body = puts(arm)[0].json()
    for vm in arm.vms():
        vm.properties["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["deleteOption"] = "Detach"
    for nic in arm.nics():
        nic.delete_option = "Detach"
    for disk in arm.disks():
        disk.delete_option = "Detach"
    assert body["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    azure.cancel("att-detach")
    assert leftovers(arm) == []
    assert [r.method for r in arm.requests if "/disks/" in r.path or "/networkInterfaces/" in r.path].count(
        "DELETE"
    ) == 2


def test_cancel_of_what_is_already_gone_sends_no_delete(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.cancel("att-nothing")
    azure.launch(launch_request("att-twice", on=AZURE))
    azure.cancel("att-twice")
    azure.cancel("att-twice")
    assert [r.method for r in arm.requests].count("DELETE") == 1


def test_cancel_waits_a_bounded_time_then_resumes(arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]) -> None:
    arm.delete_polls = 10**6  # Azure takes its time deleting
    provider = make(delete_timeout_s=0.3)
    provider.launch(launch_request("att-slowdelete", on=AZURE))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="still being deleted"):
        provider.cancel("att-slowdelete")
    assert time.monotonic() - started < 3
    arm.settle()
    provider.cancel("att-slowdelete")  # resumes: no second DELETE of a VM already being deleted
    assert [r.method for r in arm.requests].count("DELETE") == 1
    assert leftovers(arm) == []
    assert provider.status("att-slowdelete").state is BackendState.FAILED


# ---- list_owned ---------------------------------------------------------------------------------------


def test_list_owned_keeps_only_this_owners_vms_across_pages(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    arm.page_size = 2
    ours, theirs = make(), make(owner="cp-someone-else")
    for index in range(4):
        ours.launch(launch_request(f"att-ours-{index}", task_id=f"task-{index}", on=AZURE))
    theirs.launch(launch_request("att-theirs", on=AZURE))
    owned = {o.attempt_id: o for o in make().list_owned()}  # a fresh provider: found by tag alone
    assert set(owned) == {f"att-ours-{i}" for i in range(4)}
    assert owned["att-ours-2"].task_id == "task-2"
    assert owned["att-ours-2"].backend_ref.endswith("/virtualMachines/fp-att-ours-2")
    assert owned["att-ours-2"].state in (BackendState.PENDING, BackendState.RUNNING)
    assert any("$skiptoken" in r.query for r in arm.requests)


# ---- outages ---------------------------------------------------------------------------------------------


def test_azure_down_is_unavailable_within_a_bounded_time(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    azure.launch(launch_request("att-outage", on=AZURE))
    arm.stop()
    calls: list[Callable[[], object]] = [
        lambda: azure.launch(launch_request("att-outage-2", on=AZURE)),
        lambda: azure.status("att-outage"),
        lambda: azure.cancel("att-outage"),
        azure.list_owned,
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            call()
        assert time.monotonic() - started < 5
    arm.start()  # same port, same state: Azure is back
    assert azure.status("att-outage").state in (BackendState.PENDING, BackendState.RUNNING)


def test_a_slow_api_is_unavailable_after_the_read_timeout(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    provider = make(read_timeout_s=0.5)
    arm.slow(10.0, times=1)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        provider.status("att-slow")
    assert time.monotonic() - started < 3


def test_server_errors_on_reads_are_unavailable(arm: FakeAzureArm, azure: AzureSpotProvider) -> None:
    arm.fail(status=500, times=1, method="GET")
    with pytest.raises(Unavailable, match="InternalServerError"):
        azure.status("att-500")
    assert azure.status("att-500").state is BackendState.LOST  # one failure, not a retry loop


# ---- configuration, quote, capacity ---------------------------------------------------------------------


def test_quote_uses_the_injected_price(make: Callable[..., AzureSpotProvider]) -> None:
    seen: list[Candidate] = []

    def price(candidate: Candidate) -> float:
        seen.append(candidate)
        return 0.1234

    quote = make(price=price).quote(candidate_for(AZURE))
    assert quote.usd_per_hour == 0.1234
    assert quote.observed_at is not None
    assert seen[0].instance_type == SIZE
    assert make().quote(candidate_for(AZURE)).usd_per_hour is None
    capacity = make().capacity(AZURE)
    assert capacity.free is None
    assert capacity.total is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"subnet_id": None}, "subnet_id is required"),
        ({"subnet_id": "/subscriptions/x/resourceGroups/y"}, "subnet resource id"),
        ({"image": "ubuntu"}, "publisher:offer:sku:version"),
        ({"ssh_public_key": ""}, "ssh_public_key is required"),
        ({"os_disk_size_gb": 0}, "os_disk_size_gb"),
        ({"resource_group": "rg/with/slashes"}, "settings.resource_group must be a resource group name"),
        ({"subnet": SUBNET}, "settings.subnet is not a setting of azure targets"),
    ],
)
def test_bad_settings_fail_at_construction(arm: FakeAzureArm, settings: dict[str, Any], message: str) -> None:
    # a fixed list of targets is checked when the provider is built
    with pytest.raises(ValueError, match=message):
        new_provider(arm, (azure_target(settings=settings),))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"subnet_id": None}, "settings.subnet_id is required"),
        ({"image": "ubuntu"}, "settings.image must be"),
        ({"worker_image": None}, "settings.worker_image is required"),
        ({"worker_gpus": "yes"}, "settings.worker_gpus must be true or false"),
    ],
)
def test_bad_settings_of_reloaded_targets_fail_their_launch(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider], settings: dict[str, Any], message: str
) -> None:
    # targets from a function (a policy reload) are checked at launch, naming the key, before any PUT
    broken = azure_target(settings=settings)
    provider = make(lambda: [broken])
    with pytest.raises(InvalidSpec, match=message) as caught:
        provider.launch(launch_request("att-broken", on=broken))
    assert not caught.value.retryable
    assert puts(arm) == []
    # and a group that can still be read is still searched: status and cancel work
    assert provider.status("att-broken").state is BackendState.LOST


def test_the_default_image_and_a_per_target_override_over_a_reloaded_policy(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    """The constructor every provider shares: callable targets, a default WorkerImage, settings.worker_image."""
    default = WorkerImage(image="registry.example/fusionplane-worker:default", env={"LOG_LEVEL": "debug"})
    plain = azure_target(name="azure-plain", settings={"worker_image": None})
    current = [plain]
    provider = make(lambda: current, image=default)
    provider.launch(launch_request("att-plain", on=plain))
    pinned = azure_target(name="azure-pinned", settings={"worker_gpus": False})  # SETTINGS pin worker_image
    current = [plain, pinned, Target(name="k8s", provider="kubernetes", private=True)]  # others are ignored
    provider.launch(launch_request("att-pinned", on=pinned))
    plain_script, pinned_script = (_worker_script(put) for put in puts(arm))
    assert default.image in plain_script
    assert "--gpus all" in plain_script
    assert "-e LOG_LEVEL=debug" in plain_script
    assert SETTINGS["worker_image"] in pinned_script
    assert default.image not in pinned_script
    assert "--gpus" not in pinned_script
    assert "-e LOG_LEVEL=debug" in pinned_script  # only the image reference is overridden


def _worker_script(put: RecordedRequest) -> str:
    user_data = base64.b64decode(put.json()["properties"]["osProfile"]["customData"]).decode()
    [script] = [f for f in yaml.safe_load(user_data)["write_files"] if f["path"] != SPEC_PATH]
    return base64.b64decode(script["content"]).decode()


def test_a_candidate_of_another_target_is_invalid_spec(azure: AzureSpotProvider) -> None:
    other = azure_target(name="azure-elsewhere")
    with pytest.raises(InvalidSpec, match="no azure target named 'azure-elsewhere' is configured"):
        azure.launch(launch_request("att-other", on=other))
    # like every provider, it takes the policy's whole target list and uses only its own provider's
    local = Target(name="local", provider="local", private=True)
    only_local = AzureSpotProvider([local], owner=OWNER)
    assert only_local.list_owned() == []  # no group to look in, no call
    with pytest.raises(InvalidSpec, match="no azure target named 'local'"):
        only_local.launch(launch_request("att-local", on=local))


# ---- on-demand (Regular VMs) ----------------------------------------------------------------------------


ON_DEMAND_TARGET = azure_target(market=ON_DEMAND)


def test_an_on_demand_launch_is_a_regular_vm_without_eviction_or_billing_profile(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    provider = make((ON_DEMAND_TARGET,))
    provider.launch(launch_request("att-regular", on=ON_DEMAND_TARGET))
    [put] = puts(arm)
    body = put.json()
    props = body["properties"]
    assert props["priority"] == "Regular"
    assert "evictionPolicy" not in props
    assert "billingProfile" not in props  # the target's max price is a Spot notion
    assert body["tags"][AZURE_TAG_MARKET] == "on-demand"
    assert put.headers["if-none-match"] == "*"
    # what the fake (as ARM) stored and answers
    stored = arm.vm(vm_name("att-regular"))
    assert stored is not None
    assert stored.priority == "Regular"
    assert stored.eviction_policy is None
    assert "billingProfile" not in stored.properties
    assert stored.tags[AZURE_TAG_MARKET] == "on-demand"
    assert wait_for(provider, "att-regular", BackendState.RUNNING).state is BackendState.RUNNING
    # a second launch (a restarted control plane) adopts it without a second PUT
    assert make((ON_DEMAND_TARGET,)).launch(launch_request("att-regular", on=ON_DEMAND_TARGET)).adopted
    assert len(puts(arm)) == 1
    provider.cancel("att-regular")
    assert leftovers(arm) == []


def test_the_fake_refuses_spot_only_fields_on_a_regular_vm_as_azure_does(arm: FakeAzureArm) -> None:
    """What Azure answers when Spot's evictionPolicy or maxPrice come with priority Regular (or an unknown priority)."""
    request = launch_request("att-mixed", on=ON_DEMAND_TARGET)
    body = vm_body_of(request)
    client = ComputeManagementClient(
        FixedToken(), SUBSCRIPTION, base_url=arm.url, connection_verify=str(arm.ca_path), retry_total=0
    )
    refusals = [
        ({"evictionPolicy": "Delete"}, "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines"),
        ({"billingProfile": {"maxPrice": -1}}, "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines"),
        ({"priority": "Cheap"}, "InvalidParameter"),
    ]
    with client:
        for extra, code in refusals:
            mixed = {**body, "properties": {**body["properties"], **extra}}
            with pytest.raises(HttpResponseError) as raised:
                client.virtual_machines.begin_create_or_update(RESOURCE_GROUP, "fp-mixed", mixed, polling=False)
            assert raised.value.status_code == 400
            assert raised.value.error is not None
            assert raised.value.error.code == code
    assert arm.vms() == []


def vm_body_of(request: LaunchRequest) -> dict[str, Any]:
    settings = AzureSettings.from_target(ON_DEMAND_TARGET, None)
    return vm_body(request, settings, vm_name(request.attempt_id), owner=OWNER)


def test_a_regular_vm_deleted_or_deallocated_by_someone_else_is_failed_not_preempted(
    arm: FakeAzureArm, make: Callable[..., AzureSpotProvider]
) -> None:
    provider = make((ON_DEMAND_TARGET,))
    provider.launch(launch_request("att-reg-dealloc", on=ON_DEMAND_TARGET))
    assert wait_for(provider, "att-reg-dealloc", BackendState.RUNNING).state is BackendState.RUNNING
    with pytest.raises(ValueError, match="not a Spot VM"):
        arm.evict(vm_name("att-reg-dealloc"))  # Azure never evicts a Regular VM
    vm = arm.vm(vm_name("att-reg-dealloc"))
    assert vm is not None
    vm.power_state = "deallocated"  # an operator's "Stop" in the portal
    dealloc = provider.status("att-reg-dealloc")
    assert dealloc.state is BackendState.FAILED
    assert dealloc.reason is not None
    assert dealloc.reason.startswith("cancelled outside FusionPlane")

    provider.launch(launch_request("att-reg-deleted", on=ON_DEMAND_TARGET))
    assert wait_for(provider, "att-reg-deleted", BackendState.RUNNING).state is BackendState.RUNNING
    someone = ComputeManagementClient(
        FixedToken(), SUBSCRIPTION, base_url=arm.url, connection_verify=str(arm.ca_path), polling_interval=0.01
    )
    with someone:
        someone.virtual_machines.begin_delete(RESOURCE_GROUP, vm_name("att-reg-deleted")).result(timeout=10)
    deleted = provider.status("att-reg-deleted")
    assert deleted.state is BackendState.FAILED
    assert deleted.reason is not None
    assert deleted.reason.startswith("cancelled outside FusionPlane")
    assert "Regular VM" in deleted.reason
    provider.cancel("att-reg-dealloc")
    provider.cancel("att-reg-deleted")
    assert leftovers(arm) == []
