"""What an EC2 instance says, as a BackendStatus (pure: the table is in the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from providers.aws.errors import short
from providers.base import (
    BackendState,
    BackendStatus,
)
from providers.bootstrap import (
    SelfShutdownGrace,
)

#: set by ``cancel`` before it terminates, so that status can tell our cancel from anyone else's
TAG_CANCELLED = "fusionplane.io/cancelled"

_SPOT_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
_SELF_SHUTDOWN = "Client.InstanceInitiatedShutdown"
_USER_SHUTDOWN = "Client.UserInitiatedShutdown"
_LAUNCH_CAPACITY = "Server.InsufficientInstanceCapacity"
_LIVE_STATES = ("pending", "running")


def backend_ref(region: str, instance_id: str) -> str:
    return f"aws:{region}:{instance_id}"


@dataclass(frozen=True)
class Found:
    region: str
    instance: Mapping[str, Any]

    @property
    def instance_id(self) -> str:
        return str(self.instance["InstanceId"])

    @property
    def state(self) -> str:
        return str(self.instance.get("State", {}).get("Name", ""))

    @property
    def tags(self) -> dict[str, str]:
        return {str(t.get("Key")): str(t.get("Value", "")) for t in self.instance.get("Tags") or []}

    @property
    def ref(self) -> str:
        return backend_ref(self.region, self.instance_id)


def status_of(found: Found, self_shutdown: SelfShutdownGrace) -> BackendStatus:
    """The instance's state as the contract names it (``self_shutdown`` keeps the grace's sightings)."""
    state = found.state
    if state == "pending":
        return BackendStatus(state=BackendState.PENDING)
    if state == "running":
        return BackendStatus(state=BackendState.RUNNING)
    reason = found.instance.get("StateReason") or {}
    code = str(reason.get("Code") or "")
    message = short(str(reason.get("Message") or "")) or code
    where = f"instance {found.instance_id} {state}"
    if code in _SPOT_REASONS:
        return BackendStatus(state=BackendState.PREEMPTED, reason=f"spot interruption: {where} ({code})")
    if found.tags.get(TAG_CANCELLED) == "true":
        return BackendStatus(state=BackendState.FAILED, reason=f"cancelled by FusionPlane: {where}")
    if code == _SELF_SHUTDOWN:
        # keyed by instance id: the grace runs from this process' first sighting of that instance
        return self_shutdown.status(found.instance_id, where)
    if code == _USER_SHUTDOWN:
        return BackendStatus(
            state=BackendState.FAILED,
            reason=f"cancelled outside FusionPlane: {where} through the EC2 API ({code})",
        )
    if code == _LAUNCH_CAPACITY:
        return BackendStatus(state=BackendState.PREEMPTED, reason=f"no capacity at launch: {where} ({message})")
    if code.startswith("Client."):
        return BackendStatus(state=BackendState.FAILED, reason=f"EC2 refused the instance: {where} ({message})")
    if code:
        return BackendStatus(state=BackendState.LOST, reason=f"EC2 ended the instance: {where} ({message})")
    return BackendStatus(state=BackendState.LOST, reason=f"{where} without a state reason")


def pick(found: Sequence[Found]) -> Found:
    """One instance per attempt is the rule; should there be more, the live and newest one speaks."""

    def rank(item: Found) -> tuple[int, float]:
        live = 2 if item.state in _LIVE_STATES else 1 if item.state in ("shutting-down", "stopping") else 0
        launched = item.instance.get("LaunchTime")
        return live, launched.timestamp() if isinstance(launched, datetime) else 0.0

    return max(found, key=rank)
