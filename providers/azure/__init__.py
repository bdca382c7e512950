"""The Azure provider: one Spot (or Regular, on-demand) VM per attempt, through azure-mgmt-compute.

The package: ``settings`` (the target's settings model, checked when a policy
is loaded and at launch, and what a launch resolves it to), ``body`` (the
VM's JSON, pure), ``status`` (a VM's state as a ``BackendStatus``, pure),
``errors`` (ARM's answers in the domain's taxonomy) and ``provider``
(clients, resource groups and the contract).

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

What one attempt is (``body.vm_body``)::

    PUT .../resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/fp-<attempt>
        If-None-Match: *                 create only: never update a VM of the same name
        location        candidate.region
        tags            resource_tags(..., for_azure=True): '/' -> '_' (Azure refuses '/' in tag names)
        vmSize          candidate.instance_type
        tags            ... and fusionplane.io_market: spot | on-demand
        priority Spot, evictionPolicy Delete, billingProfile.maxPrice = plan max or -1
                        (market on-demand: priority Regular, no evictionPolicy, no billingProfile)
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
Succeeded + PowerState/deallocated              PREEMPTED (evicted with evictionPolicy Deallocate);
                                                a Regular VM: FAILED "cancelled outside FusionPlane"
Failed, ``ProvisioningState/failed/<code>``     PREEMPTED if <code> is an allocation failure
                                                (AllocationFailed, ZonalAllocationFailed,
                                                Overconstrained*, SkuNotAvailable): no worker
                                                ran, another place may have capacity;
                                                FAILED with code and message otherwise
Canceled                                        FAILED
Deleting, not by us                             PREEMPTED (Azure evicting with policy Delete);
                                                a Regular VM: FAILED "cancelled outside FusionPlane"
404, after this process saw the VM              PREEMPTED (evicted: policy Delete removes it);
                                                a Regular VM: FAILED "cancelled outside FusionPlane"
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

Errors (``errors.translate``), at the boundary:

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

from providers.azure.body import vm_name
from providers.azure.errors import ACCESS_CHECK
from providers.azure.provider import NETWORK_API_VERSION, TAG_ATTEMPT, TAG_OWNER, TAG_TASK, AzureSpotProvider
from providers.azure.settings import AzureSettings, AzureTargetSettings, validate_settings
from providers.bootstrap import azure_tags

__all__ = [
    "ACCESS_CHECK",
    "NETWORK_API_VERSION",
    "TAG_ATTEMPT",
    "TAG_OWNER",
    "TAG_TASK",
    "AzureSettings",
    "AzureSpotProvider",
    "AzureTargetSettings",
    "azure_tags",
    "validate_settings",
    "vm_name",
]
