"""What a Job and its pod say, as a BackendStatus: pure functions over the API server's JSON.

See the package docstring for the mapping; nothing here calls the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.domain.exit_codes import EXIT_PREEMPTED
from providers.base import (
    BackendState,
    BackendStatus,
)
from providers.common import EXIT_MEANINGS
from providers.kubernetes.manifests import CONTAINER

#: waiting reasons of a container whose image will not come: terminal on this target
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
#: pod status reasons set when a pod was pushed off its node rather than failing on its own
DISRUPTION_REASONS = frozenset({"Evicted", "Preempting", "Terminated", "Shutdown", "NodeShutdown", "NodeLost"})


def get_path(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def items_of(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = get_path(obj, "metadata", "labels")
    return labels if isinstance(labels, Mapping) else {}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def true_condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in items_of(get_path(obj, "status", "conditions")):
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def exit_reason(code: int, *, container: str = CONTAINER, detail: str = "") -> str:
    who = "worker" if container == CONTAINER else f"{container} (init container)"
    extra = f", {detail}" if detail else ""
    if code in EXIT_MEANINGS:
        return f"{who} exited {code} ({EXIT_MEANINGS[code]}{extra})"
    if code > 128:
        return f"{who} killed by signal {code - 128} (exit {code}{extra})"
    return f"{who} exited {code} (not a documented exit code: an unhandled crash{extra})"


def terminated(pod: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """The container that decided the pod's fate: (name, exit code, reason such as OOMKilled), or None.

    A failed init container (the model check) stops the pod before the
    worker starts, so it is looked at first.
    """
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in items_of(get_path(pod, "status", key)):
            done = get_path(status, "state", "terminated") or get_path(status, "lastState", "terminated")
            if not isinstance(done, Mapping) or not isinstance(done.get("exitCode"), int):
                continue
            code = int(done["exitCode"])
            if key == "initContainerStatuses" and code == 0:
                continue  # the check passed; the worker's own status decides
            return str(status.get("name") or "?"), code, str(done.get("reason") or "")
    return None


def disruption(pod: Mapping[str, Any]) -> str | None:
    """Why the pod was pushed off its node (eviction, preemption, node shutdown), or None."""
    condition = true_condition(pod, "DisruptionTarget")
    if condition is not None:
        return f"disrupted ({condition.get('reason') or 'DisruptionTarget'}): {condition.get('message') or ''}".rstrip(
            ": "
        )
    reason = get_path(pod, "status", "reason")
    if reason in DISRUPTION_REASONS:
        return f"{reason}: {get_path(pod, 'status', 'message') or ''}".rstrip(": ")
    return None


def finished_pod_status(pod: Mapping[str, Any]) -> BackendStatus:
    """The outcome of a pod that ran to its end (phase Succeeded or Failed)."""
    decided = terminated(pod)
    disrupted = disruption(pod)
    if decided is not None:
        container, code, detail = decided
        if code == 0:
            return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
        reason = exit_reason(code, container=container, detail=detail)
        if code == EXIT_PREEMPTED:
            # the worker checkpointed on SIGTERM: whoever sent it, the work can resume elsewhere
            return BackendStatus(state=BackendState.PREEMPTED, reason=reason, exit_code=code)
        if code < 128:
            # the worker's own verdict (65 bad input, 69 models, 70 bug) stands even if the node went away after
            return BackendStatus(state=BackendState.FAILED, reason=reason, exit_code=code)
        if disrupted is not None:
            return BackendStatus(state=BackendState.PREEMPTED, reason=f"{disrupted}; {reason}", exit_code=code)
        return BackendStatus(state=BackendState.LOST, reason=reason, exit_code=code)
    if disrupted is not None:
        return BackendStatus(state=BackendState.PREEMPTED, reason=disrupted)
    if get_path(pod, "status", "phase") == "Succeeded":
        return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
    why = get_path(pod, "status", "reason") or "no container exit code"
    return BackendStatus(
        state=BackendState.LOST, reason=f"pod failed: {why}: {get_path(pod, 'status', 'message') or ''}"
    )


def pending_pod_status(pod: Mapping[str, Any], now: datetime) -> BackendStatus:
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in items_of(get_path(pod, "status", key)):
            waiting = get_path(status, "state", "waiting")
            if isinstance(waiting, Mapping) and waiting.get("reason") in IMAGE_PULL_REASONS:
                message = waiting.get("message") or ""
                return BackendStatus(
                    state=BackendState.FAILED,
                    reason=f"image pull: {waiting['reason']}: {message}".rstrip(": "),
                )
    for condition in items_of(get_path(pod, "status", "conditions")):
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            since = parse_time(condition.get("lastTransitionTime")) or parse_time(
                get_path(pod, "metadata", "creationTimestamp")
            )
            seconds = max(int((now - since).total_seconds()), 0) if since is not None else 0
            message = condition.get("message") or "no node fits"
            # the number stays in the reason for people; the executor reads the field
            return BackendStatus(
                state=BackendState.PENDING,
                reason=f"unschedulable: {message} [unschedulable_for_s={seconds}]",
                unschedulable_for_s=seconds,
            )
    for status in items_of(get_path(pod, "status", "initContainerStatuses")):
        if isinstance(get_path(status, "state", "running"), Mapping):
            return BackendStatus(state=BackendState.PENDING, reason="verifying the model cache (init container)")
    waiting = [
        str(get_path(status, "state", "waiting", "reason"))
        for key in ("initContainerStatuses", "containerStatuses")
        for status in items_of(get_path(pod, "status", key))
        if get_path(status, "state", "waiting", "reason")
    ]
    return BackendStatus(
        state=BackendState.PENDING, reason="pod pending" + (f": {', '.join(waiting)}" if waiting else "")
    )


def event_time(event: Mapping[str, Any]) -> datetime:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        parsed = parse_time(event.get(key))
        if parsed is not None:
            return parsed
    return parse_time(get_path(event, "metadata", "creationTimestamp")) or datetime.min.replace(tzinfo=UTC)


def no_pod_status(job: Mapping[str, Any], now: datetime, detail: str) -> BackendStatus:
    created = parse_time(get_path(job, "metadata", "creationTimestamp"))
    waited = max(int((now - created).total_seconds()), 0) if created is not None else 0
    reason = f"no pod yet: {detail}" if detail else "no pod yet"
    return BackendStatus(state=BackendState.PENDING, reason=f"{reason} [pending_for_s={waited}]")


def owned_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Is ``pod`` one of ``job``'s? (its controller reference, checked by uid where both have one)."""
    name, uid = get_path(job, "metadata", "name"), get_path(job, "metadata", "uid")
    for ref in items_of(get_path(pod, "metadata", "ownerReferences")):
        if ref.get("kind") == "Job" and ref.get("name") == name:
            return not uid or not ref.get("uid") or ref.get("uid") == uid
    return False


def newest(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ordered = sorted(
        pods,
        key=lambda p: (
            parse_time(get_path(p, "metadata", "creationTimestamp")) or datetime.min.replace(tzinfo=UTC),
            str(get_path(p, "metadata", "name") or ""),
        ),
    )
    return ordered[-1] if ordered else None
