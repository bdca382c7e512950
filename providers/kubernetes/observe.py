"""An attempt's Job as it is on the cluster: its pods and events, read into a ``BackendStatus``.

The mapping itself is pure (:mod:`providers.kubernetes.status`); this module
does the reads it needs: the Job's pods when they were not listed already,
and the Job's ``FailedCreate`` events when it has no pod.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Container, Mapping
from datetime import datetime
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controlplane.domain import CloudPool
from providers.base import BackendState, BackendStatus
from providers.bootstrap import LABEL_ATTEMPT
from providers.kubernetes.api import Calls
from providers.kubernetes.manifests import LABEL_INSTANCE
from providers.kubernetes.pools import capacity_refusal
from providers.kubernetes.status import (
    event_time,
    finished_pod_status,
    get_path,
    labels_of,
    newest,
    no_pod_status,
    owned_by,
    pending_pod_status,
    true_condition,
)

__all__ = ["job_status"]

log = logging.getLogger("fusionplane.providers.kubernetes")


def job_status(
    calls: Calls,
    core: Any,
    namespace: str,
    job: Mapping[str, Any],
    *,
    pods: list[Mapping[str, Any]] | None,
    now: datetime,
    cancelled: Container[str],
    lookup_events: bool = True,
    pool: CloudPool | None = None,
) -> BackendStatus:
    """The attempt's state from its Job, then its newest pod (``pods`` None: listed here).

    ``core`` is the cluster's ``CoreV1Api``; ``cancelled`` the attempt ids this
    provider cancelled (a Job being deleted is then "cancelled", not lost).
    Without ``lookup_events`` a Job with no pod is not asked why, nor a pending
    pod on a cloud node pool (``pool``) whether its cloud refused it capacity.
    """
    attempt_id = str(labels_of(job).get(LABEL_ATTEMPT))
    if true_condition(job, "Complete") or true_condition(job, "SuccessCriteriaMet"):
        return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
    failed = true_condition(job, "Failed") or true_condition(job, "FailureTarget")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        deadline = get_path(job, "spec", "activeDeadlineSeconds")
        message = failed.get("message") or "no message"
        return BackendStatus(
            state=BackendState.FAILED,
            reason=f"deadline: the job ran past activeDeadlineSeconds={deadline}: {message}",
        )
    if pods is None:
        pods = _job_pods(calls, core, namespace, job)
    pod = newest(pods)
    if failed is not None:
        if pod is not None and get_path(pod, "status", "phase") not in ("Succeeded", "Failed"):
            # FailureTarget comes before the pod has ended: its exit code (75 after SIGTERM?) decides
            return BackendStatus(
                state=BackendState.RUNNING,
                reason=f"job failing ({failed.get('reason')}); waiting for its pod to end",
            )
        if pod is not None:
            return finished_pod_status(pod)
        if pool is not None and pool.spot:
            # the pod went with its node: a spot reclaim drains it and the node's deletion collects it
            return BackendStatus(
                state=BackendState.PREEMPTED,
                reason=f"pod gone with its {pool.provider} spot node (reclaimed); job {failed.get('reason')}: "
                f"{failed.get('message') or ''}".rstrip(": "),
            )
        return BackendStatus(
            state=BackendState.FAILED,
            reason=f"job failed ({failed.get('reason')}): {failed.get('message') or ''}; no pod left to say why",
        )
    if get_path(job, "metadata", "deletionTimestamp"):
        if attempt_id in cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the job is being deleted")
        return BackendStatus(state=BackendState.LOST, reason="job deleted: being deleted without an outcome")
    if pod is None:
        return _no_pod_status(calls, core, namespace, job, now) if lookup_events else no_pod_status(job, now, "")
    phase = get_path(pod, "status", "phase")
    if phase in ("Succeeded", "Failed"):  # the Job's condition lags its pod by a moment
        return finished_pod_status(pod)
    if phase == "Running":
        return BackendStatus(state=BackendState.RUNNING)
    if phase == "Unknown":
        return BackendStatus(state=BackendState.RUNNING, reason="pod phase Unknown: its node stopped reporting")
    pending = pending_pod_status(pod, now)
    if pool is None or pending.unschedulable_for_s is None or not lookup_events:
        return pending
    refusal = capacity_refusal(
        pool, unschedulable_for_s=pending.unschedulable_for_s, events=_pod_events(calls, core, namespace, pod)
    )
    return pending if refusal is None else dataclasses.replace(pending, capacity_refusal=refusal)


def _pod_events(calls: Calls, core: Any, namespace: str, pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod's events, oldest first; best effort (it needs ``list`` on events), like the Job's."""
    name, uid = get_path(pod, "metadata", "name"), get_path(pod, "metadata", "uid")
    try:
        events = calls.list_all(
            core.list_namespaced_event, namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}"
        )
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
        log.debug("", extra={"event": "kubernetes_events_unreadable", "error": type(exc).__name__})
        return []
    # a server may ignore the field selector: the involved object is checked here
    mine = [
        e
        for e in events
        if get_path(e, "involvedObject", "kind") == "Pod"
        and get_path(e, "involvedObject", "name") == name
        and (not uid or not get_path(e, "involvedObject", "uid") or get_path(e, "involvedObject", "uid") == uid)
    ]
    return sorted(mine, key=event_time)


def _job_pods(calls: Calls, core: Any, namespace: str, job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    name = str(get_path(job, "metadata", "name"))
    # the selector narrows the answer on a real API server; the owner check is what decides
    pods = calls.list_all(core.list_namespaced_pod, namespace, label_selector=f"{LABEL_INSTANCE}={name}")
    return [pod for pod in pods if owned_by(pod, job)]


def _no_pod_status(calls: Calls, core: Any, namespace: str, job: Mapping[str, Any], now: datetime) -> BackendStatus:
    """An active Job without a pod: why the Job controller could not create one, if an event says.

    A ResourceQuota on GPUs or pods refuses the *pod*, not the Job: the
    only trace is a FailedCreate event on the Job. Best effort (it needs
    ``list`` on events): without it the reason is just "no pod yet".
    """
    name, uid = get_path(job, "metadata", "name"), get_path(job, "metadata", "uid")
    try:
        events = calls.list_all(
            core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={name}",
        )
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
        log.debug("", extra={"event": "kubernetes_events_unreadable", "error": type(exc).__name__})
        events = []
    # a server may ignore the field selector: the involved object is checked here
    failed = [
        e
        for e in events
        if get_path(e, "involvedObject", "kind") == "Job"
        and get_path(e, "involvedObject", "name") == name
        and (not uid or not get_path(e, "involvedObject", "uid") or get_path(e, "involvedObject", "uid") == uid)
        and e.get("reason") == "FailedCreate"
    ]
    latest = max(failed, key=event_time, default=None)
    detail = f"FailedCreate: {latest.get('message') or ''}" if latest is not None else ""
    return no_pod_status(job, now, detail)
