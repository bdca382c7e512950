"""The attempt's Secret beside its Job: reuse or replace a leftover, hand it to the Job, drop it on refusal.

The Secret is created before the Job (the pod never starts without its
spec) and owned by the Job once the Job exists, so the garbage collector
deletes it with the Job. These steps keep that true across launches that
die half-way, retries and races.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from controlplane.domain import InvalidSpec
from providers.bootstrap import LABEL_ATTEMPT
from providers.kubernetes.api import Calls
from providers.kubernetes.errors import translate
from providers.kubernetes.manifests import SECRET_KEY
from providers.kubernetes.places import Place
from providers.kubernetes.status import get_path, items_of, labels_of

__all__ = ["drop_secret", "own_secret", "reuse_secret"]

log = logging.getLogger("fusionplane.providers.kubernetes")

_MERGE_PATCH = "application/merge-patch+json"


def drop_secret(calls: Calls, core: Any, place: Place, name: str, attempt_id: str) -> None:
    """Best effort: a failure here leaves the Secret to ``cancel`` and reconciliation (``list_owned``)."""
    try:
        calls.call(core.delete_namespaced_secret, name, place.namespace)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        log.warning(
            "",
            extra={
                "event": "kubernetes_secret_left",
                "attempt_id": attempt_id,
                "ref": place.ref(name),
                "error": str(exc),
            },
        )


def reuse_secret(calls: Calls, core: Any, place: Place, name: str, wanted: Mapping[str, Any]) -> bool:
    """A Secret of that name exists and no Job does: reuse it, replace it, or say the Job is gone.

    Returns False when the Secret is owned by a (deleted) Job. A Secret
    left by a launch that died before creating its Job is reused when it
    holds the same spec, and replaced when it does not (a new launch of
    the attempt carries the token the control plane now expects).
    """
    current = calls.read(core.read_namespaced_secret, name, place.namespace)
    if current is None:  # deleted in between: create it once more
        calls.call(core.create_namespaced_secret, place.namespace, wanted)
        return True
    if labels_of(current).get(LABEL_ATTEMPT) != labels_of(wanted).get(LABEL_ATTEMPT):
        raise InvalidSpec(
            f"secret {place.ref(name)} belongs to another attempt ({labels_of(current).get(LABEL_ATTEMPT)!r})",
            target=place.target.name,
        )
    if any(ref.get("kind") == "Job" for ref in items_of(get_path(current, "metadata", "ownerReferences"))):
        return False
    if get_path(current, "data", SECRET_KEY) == get_path(wanted, "data", SECRET_KEY):
        return True
    # immutable: replaced by delete and create, guarded by the uid so a newer one is never deleted
    uid = get_path(current, "metadata", "uid")
    options = {"preconditions": {"uid": uid}} if uid else None
    calls.call(core.delete_namespaced_secret, name, place.namespace, body=options)
    calls.call(core.create_namespaced_secret, place.namespace, wanted)
    return True


def own_secret(calls: Calls, core: Any, place: Place, name: str, job: Mapping[str, Any]) -> None:
    """Make the Job the Secret's owner, so the garbage collector deletes the Secret with the Job."""
    uid = get_path(job, "metadata", "uid")
    if not uid:
        log.warning("", extra={"event": "kubernetes_job_without_uid", "ref": place.ref(name)})
        return
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name,
        "uid": uid,
        # a foreground delete of the Job waits for the Secret too
        "blockOwnerDeletion": True,
        "controller": False,
    }
    try:
        calls.call(
            core.patch_namespaced_secret,
            name,
            place.namespace,
            {"metadata": {"ownerReferences": [owner]}},
            _content_type=_MERGE_PATCH,
        )
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        # the Job runs anyway; cancel deletes the Secret itself, and a later launch call repairs it
        log.warning(
            "",
            extra={
                "event": "kubernetes_secret_owner_failed",
                "ref": place.ref(name),
                "error": translate(exc, "own secret", target=place.target.name).message,
            },
        )
