"""What a VM says, as a BackendStatus (pure: the table is in the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure.mgmt.compute.models import VirtualMachine

from providers.azure.errors import CAPACITY_CODES
from providers.base import (
    BackendState,
    BackendStatus,
)
from providers.bootstrap import (
    SelfShutdownGrace,
)

if TYPE_CHECKING:
    pass


#: a Regular (on-demand) VM is never evicted: its deletion or deallocation was someone else's doing
OUTSIDE = "cancelled outside FusionPlane"


def is_regular(vm: VirtualMachine) -> bool:
    """Whether ``vm`` is a Regular (on-demand) VM, which Azure never evicts; a VM without priority is Regular."""
    priority = vm.priority or "Regular"
    # the SDK may hand back its VirtualMachinePriorityTypes enum (a str subclass): compare its value
    return str(getattr(priority, "value", priority)).lower() == "regular"


def judge(attempt_id: str, vm: VirtualMachine, *, cancelled: bool, self_shutdown: SelfShutdownGrace) -> BackendStatus:
    """The VM's state as the contract names it; ``cancelled``: this process cancelled the attempt.

    A Regular VM is never evicted, so what reads as an eviction on a Spot VM
    (being deleted, deallocated) is FAILED "cancelled outside FusionPlane" on
    it, as EC2's user-initiated terminations are.
    """
    regular = is_regular(vm)
    provisioning = str(vm.provisioning_state or "").lower()
    statuses = list(vm.instance_view.statuses or []) if vm.instance_view else []
    power = next(
        (str(s.code).split("/", 1)[1].lower() for s in statuses if str(s.code or "").lower().startswith("powerstate/")),
        None,
    )
    if cancelled:
        return BackendStatus(state=BackendState.FAILED, reason=f"cancelled; the VM is {provisioning or 'present'}")
    if provisioning == "deleting" and regular:
        return BackendStatus(
            state=BackendState.FAILED, reason=f"{OUTSIDE}: the Regular VM is being deleted, not by this control plane"
        )
    if provisioning == "deleting":
        return BackendStatus(
            state=BackendState.PREEMPTED,
            reason="the VM is being deleted, not by this control plane: Spot eviction (evictionPolicy Delete)",
        )
    if provisioning == "failed":
        failed = next((s for s in statuses if str(s.code or "").lower().startswith("provisioningstate/failed")), None)
        code = str(failed.code).split("/", 2)[2] if failed is not None and str(failed.code).count("/") >= 2 else ""
        message = (failed.message if failed is not None else None) or "no detail from Azure"
        if code.lower() in CAPACITY_CODES:
            return BackendStatus(
                state=BackendState.PREEMPTED,
                reason=f"allocation failed after the launch was accepted, no worker ran: {code}: {message}",
            )
        return BackendStatus(state=BackendState.FAILED, reason=f"provisioning failed: {code or 'unknown'}: {message}")
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
        return self_shutdown.status(key, f"VM {vm.name} stopped")
    if power == "deallocated" and regular:
        return BackendStatus(state=BackendState.FAILED, reason=f"{OUTSIDE}: the Regular VM was deallocated")
    if power == "deallocated":
        return BackendStatus(state=BackendState.PREEMPTED, reason="the Spot VM was deallocated (eviction)")
    return BackendStatus(state=BackendState.PENDING, reason=f"VM {provisioning or 'starting'}")
