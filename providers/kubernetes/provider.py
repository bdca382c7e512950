"""The Kubernetes provider: the provider contract over places, calls and the pure modules.

Launch creates the Secret and the Job (:mod:`.secrets` keeps the Secret
right); status reads the Job (:mod:`.observe`); cancel and ``list_owned`` look
in every place (:mod:`.places`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controlplane.domain import (
    Candidate,
    CloudPool,
    InvalidSpec,
    ProviderError,
    Target,
)
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
    LABEL_ATTEMPT,
    LABEL_OWNER,
    LABEL_TASK,
    WorkerImage,
    resource_name,
    spec_json,
)
from providers.common import BoundedMemory
from providers.kubernetes.api import Calls
from providers.kubernetes.errors import conflict, not_found, translate
from providers.kubernetes.manifests import (
    ANNOTATION_TARGET,
    LABEL_MANAGED_BY,
    MANAGER,
    NAME_PREFIX,
    job_body,
    job_labels,
    secret_body,
)
from providers.kubernetes.observe import job_status
from providers.kubernetes.places import ApiClientFactory, Place, Places
from providers.kubernetes.secrets import drop_secret, own_secret, reuse_secret
from providers.kubernetes.settings import LABEL_VALUE, JobSettings, cluster_key
from providers.kubernetes.status import get_path, labels_of, owned_by

__all__ = ["PAGE_SIZE", "ApiClientFactory", "KubernetesProvider"]

log = logging.getLogger("fusionplane.providers.kubernetes")

#: kubectl's and client-go's page size
PAGE_SIZE = 500
#: how many attempt ids the provider remembers (where each Job lives, which it cancelled)
_MEMORY = 10_000
#: what a call to the API server raises: the API's refusals, the transport's failures, a bad kubeconfig
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError)


class KubernetesProvider:
    """Runs each attempt as a Job on the kubernetes targets it is given.

    ``targets``: the kubernetes targets (a list, or a callable returning the
    current ones, so a policy reload is seen); only ``provider ==
    "kubernetes"`` ones are used, and their settings are checked at launch
    (``InvalidSpec`` naming the key). ``launch`` finds its target by the
    candidate's name, ``status``/``cancel``/``list_owned`` look in every
    (cluster, namespace) they name. ``image``: the default worker image; a
    target's ``settings.worker_image`` (older name: ``settings.image``)
    overrides its image reference, and one of the two is required. This is
    the constructor shape of every provider. ``owner``: the value of the owner
    label, so two control planes sharing a cluster each list only their
    own Jobs. ``api_client_for(target)`` returns a ``kubernetes.client.ApiClient``
    for a target's cluster (tests, or a caller with its own credentials);
    without it a client is built per (kubeconfig, context) from the target's
    settings, else from in-cluster config, else from the default kubeconfig,
    and never retries. ``request_timeout_s`` bounds every API call.
    """

    name = "kubernetes"

    def __init__(
        self,
        targets: Iterable[Target] | Callable[[], Iterable[Target]],
        *,
        image: WorkerImage | None = None,
        owner: str,
        api_client_for: ApiClientFactory | None = None,
        request_timeout_s: float = 10.0,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not LABEL_VALUE.match(owner) or not owner or len(owner) > 63:
            raise ValueError(f"owner must be a valid label value, not {owner!r}")
        if request_timeout_s <= 0 or page_size < 1:
            raise ValueError("request_timeout_s must be > 0 and page_size >= 1")
        self.image = image
        self.owner = owner
        self.request_timeout_s = request_timeout_s
        self.page_size = page_size
        self.clock = clock
        self._places = Places(targets, api_client_for=api_client_for, memory=_MEMORY)
        self._calls = Calls(timeout_s=request_timeout_s, page_size=page_size)
        self._lock = threading.Lock()
        #: attempt ids this provider cancelled
        self._cancelled: BoundedMemory[bool] = BoundedMemory(_MEMORY)

    def targets(self) -> list[Target]:
        """The kubernetes targets this provider launches on, now."""
        return self._places.targets()

    def places(self) -> list[Place]:
        """Every (cluster, namespace) of the configured targets, each once."""
        return self._places.all()

    def close(self) -> None:
        """Close the clients this provider built (injected ones belong to their owner)."""
        self._places.close()

    def capacity(self, target: Target) -> Capacity:
        """Unknown here (``None``): the ``kubernetes`` signal source counts free GPUs.

        Counting needs every pod of the cluster; the signal hub does that once
        per poll and caches it (``free_gpus/<target>``), and the scheduler uses
        that sample when a provider answers ``None``. Doing it again for every
        placement batch would list all pods of every cluster per batch, and
        providers may not import the signals package to share its counting.
        """
        return Capacity(free=None, total=None)

    def quote(self, candidate: Candidate) -> Quote:
        """Owned capacity: no hourly price."""
        return Quote(usd_per_hour=None)

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Create the attempt's Secret and Job, or adopt the Job already there.

        Raises ``InvalidSpec`` (unknown target, bad settings or ids, 400/422,
        RBAC), ``QuotaExceeded``, ``Throttled`` or ``Unavailable``.
        """
        target = self._places.target(request.candidate.target)
        settings = JobSettings.of(target, self.image).for_priority(request.priority)
        try:
            name = resource_name(NAME_PREFIX, request.attempt_id)
        except ValueError as exc:
            raise InvalidSpec(str(exc), target=target.name) from exc
        labels = job_labels(request, name, owner=self.owner)
        job = job_body(request, target, settings, name, labels)
        place = Place(cluster_key(target), settings.namespace, target)
        token = request.worker_spec.callback_token()
        scrub = (token,) if token else ()
        try:
            client = self._places.client(place)
            return self._launch(
                request,
                place,
                client,
                name,
                job,
                secret_body(name, settings, labels, spec_json(request.worker_spec)),
            )
        except _API_ERRORS as exc:
            raise translate(exc, f"launch {place.ref(name)}", target=target.name, scrub=scrub) from exc

    def _launch(
        self,
        request: LaunchRequest,
        place: Place,
        client: Any,
        name: str,
        job: Mapping[str, Any],
        secret: Mapping[str, Any],
    ) -> LaunchResult:
        batch, core = kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
        namespace = place.namespace
        existing = self._calls.read(batch.read_namespaced_job, name, namespace)
        if existing is not None:
            return self._adopt(request, place, core, existing)
        try:
            self._calls.call(core.create_namespaced_secret, namespace, secret)
        except ApiException as exc:
            if not conflict(exc):
                raise
            if not reuse_secret(self._calls, core, place, name, secret):
                # its Job existed and was deleted: the attempt ran once; never start it twice
                self._places.remember(request.attempt_id, place)
                log.warning(
                    "",
                    extra={"event": "kubernetes_job_gone", "attempt_id": request.attempt_id, "ref": place.ref(name)},
                )
                return LaunchResult(backend_ref=place.ref(name), adopted=True)
        try:
            created = self._calls.call(batch.create_namespaced_job, namespace, job)
        except ApiException as exc:
            if not conflict(exc):
                # refused (quota, RBAC, invalid): the Secret just made would outlive the attempt unowned
                drop_secret(self._calls, core, place, name, request.attempt_id)
                raise
            raced = self._calls.read(batch.read_namespaced_job, name, namespace)
            if raced is None:  # created and deleted in between: let the executor try again
                raise
            return self._adopt(request, place, core, raced)
        self._places.remember(request.attempt_id, place)
        own_secret(self._calls, core, place, name, created)
        return LaunchResult(backend_ref=place.ref(name), adopted=False)

    def _adopt(self, request: LaunchRequest, place: Place, core: Any, job: Mapping[str, Any]) -> LaunchResult:
        name = str(get_path(job, "metadata", "name"))
        found = labels_of(job).get(LABEL_ATTEMPT)
        if found != request.attempt_id:
            # two attempt ids that differ only in case or punctuation make the same name
            raise InvalidSpec(
                f"job {place.ref(name)} belongs to attempt {found!r}, not {request.attempt_id!r}",
                target=place.target.name,
            )
        self._places.remember(request.attempt_id, place)
        # a launch that died between creating the Job and owning the Secret left it unowned
        own_secret(self._calls, core, place, name, job)
        return LaunchResult(backend_ref=place.ref(name), adopted=True)

    def _find_job(self, attempt_id: str, name: str) -> tuple[Place, dict[str, Any]] | None:
        """The attempt's Job and where it is; None when no place has it (Unavailable if one did not answer)."""
        failures: list[ProviderError] = []
        for place in self._places.for_attempt(attempt_id):
            try:
                client = self._places.client(place)
                job = self._calls.read(kubernetes.client.BatchV1Api(client).read_namespaced_job, name, place.namespace)
            except _API_ERRORS as exc:
                failures.append(translate(exc, f"read job {place.ref(name)}", target=place.target.name))
                continue
            if job is None or labels_of(job).get(LABEL_ATTEMPT) != attempt_id:
                continue
            self._places.remember(attempt_id, place)
            return place, job
        if failures:
            # a cluster that did not answer may hold the Job: "gone" would be a guess
            raise failures[0]
        return None

    def status(self, attempt_id: str) -> BackendStatus:
        """The attempt's state from its Job and pod (see the module docstring)."""
        try:
            name = resource_name(NAME_PREFIX, attempt_id)
        except ValueError:
            return BackendStatus(state=BackendState.LOST, reason="unknown attempt: not a valid attempt id")
        found = self._find_job(attempt_id, name)
        if found is None:
            return self._gone(attempt_id, name)
        place, job = found
        try:
            core = kubernetes.client.CoreV1Api(self._places.client(place))
            return job_status(
                self._calls,
                core,
                place.namespace,
                job,
                pods=None,
                now=self.clock(),
                cancelled=self._cancelled,
                pool=self._pool_of(job),
            )
        except _API_ERRORS as exc:
            raise translate(exc, f"status of {place.ref(name)}", target=place.target.name) from exc

    def _pool_of(self, job: Mapping[str, Any]) -> CloudPool | None:
        """The cloud node pool of the target that launched ``job`` (its annotation), if it still has one."""
        annotations = get_path(job, "metadata", "annotations")
        name = annotations.get(ANNOTATION_TARGET) if isinstance(annotations, Mapping) else None
        for target in self._places.targets():
            if target.name == name:
                return target.cloud
        return None  # a target since removed from the policy: judged as a plain cluster's pod

    def _gone(self, attempt_id: str, name: str) -> BackendStatus:
        if attempt_id in self._cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the job was deleted")
        if self._places.seen(attempt_id):
            return BackendStatus(
                state=BackendState.LOST, reason=f"job deleted: {name} is gone without a recorded outcome"
            )
        where = ", ".join(place.ref(name) for place in self.places()) or "no kubernetes target"
        return BackendStatus(state=BackendState.LOST, reason=f"unknown attempt: no job {where}")

    def cancel(self, attempt_id: str) -> None:
        """Delete the attempt's Job (foreground: its pod and Secret go first); already gone is success."""
        try:
            name = resource_name(NAME_PREFIX, attempt_id)
        except ValueError:
            return
        failures: list[ProviderError] = []
        deleted = False
        for place in self._places.for_attempt(attempt_id):
            try:
                deleted = self._cancel_in(place, attempt_id, name) or deleted
            except _API_ERRORS as exc:
                failures.append(translate(exc, f"cancel {place.ref(name)}", target=place.target.name))
        if deleted or self._places.seen(attempt_id):
            # status then says "cancelled" (FAILED, not retried) rather than "job deleted" (LOST)
            with self._lock:
                self._cancelled.put(attempt_id, True)
        if failures:
            raise failures[0]

    def _cancel_in(self, place: Place, attempt_id: str, name: str) -> bool:
        batch, core = (
            kubernetes.client.BatchV1Api(self._places.client(place)),
            kubernetes.client.CoreV1Api(self._places.client(place)),
        )
        deleted = False
        job = self._calls.read(batch.read_namespaced_job, name, place.namespace)
        if job is not None and labels_of(job).get(LABEL_ATTEMPT) == attempt_id:
            uid = get_path(job, "metadata", "uid")
            # foreground: the Job stays (with a deletionTimestamp) until its pod and Secret are gone
            body: dict[str, Any] = {"propagationPolicy": "Foreground"}
            if uid:
                body["preconditions"] = {"uid": uid}  # never the Job of a later launch with the same name
            try:
                self._calls.call(batch.delete_namespaced_job, name, place.namespace, body=body)
                deleted = True
            except ApiException as exc:
                if not not_found(exc):
                    raise
        # the garbage collector deletes an owned Secret; this covers one never owned (a launch that died)
        secret = self._calls.read(core.read_namespaced_secret, name, place.namespace)
        if secret is not None and labels_of(secret).get(LABEL_ATTEMPT) == attempt_id:
            try:
                self._calls.call(core.delete_namespaced_secret, name, place.namespace)
            except ApiException as exc:
                if not not_found(exc):
                    raise
        return deleted

    def list_owned(self) -> list[OwnedResource]:
        """Every Job labelled managed-by=fusionplane and this owner, in every namespace of the targets,
        and every such Secret whose Job does not exist (state LOST: a leftover of a launch that was
        refused or cut off, for reconciliation to release).

        The label selector narrows the answer; the labels are checked here too,
        since a server (or an emulator) may ignore the selector. A place that
        does not answer makes the whole call ``Unavailable``: a partial list
        would make reconciliation think the missing Jobs are gone.
        """
        owned: list[OwnedResource] = []
        now = self.clock()
        for place in self._places.all():
            try:
                owned += self._owned_in(place, now)
            except _API_ERRORS as exc:
                raise translate(exc, f"list jobs in {place.ref('')}", target=place.target.name) from exc
        return owned

    def _owned_in(self, place: Place, now: datetime) -> list[OwnedResource]:
        """This owner's Secrets without a Job (LOST), then its Jobs with their state, in one place."""
        selector = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_OWNER}={self.owner}"
        client = self._places.client(place)
        batch, core = kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
        jobs = [
            job
            for job in self._calls.list_all(batch.list_namespaced_job, place.namespace, label_selector=selector)
            if self._mine(job) and labels_of(job).get(LABEL_ATTEMPT)
        ]
        # one pod list per namespace, not one per Job
        pods = self._calls.list_all(core.list_namespaced_pod, place.namespace, label_selector=selector) if jobs else []
        with_job = {str(labels_of(job)[LABEL_ATTEMPT]) for job in jobs}
        owned: list[OwnedResource] = []
        # a Secret whose Job never came (a launch refused or cut off) is a leftover to release
        for secret in self._calls.list_all(core.list_namespaced_secret, place.namespace, label_selector=selector):
            attempt_id = str(labels_of(secret).get(LABEL_ATTEMPT) or "")
            if attempt_id and attempt_id not in with_job and self._mine(secret):
                self._places.remember(attempt_id, place)
                owned.append(_owned(place, secret, BackendState.LOST))
        for job in jobs:
            self._places.remember(str(labels_of(job)[LABEL_ATTEMPT]), place)
            mine = [p for p in pods if owned_by(p, job)]
            status = job_status(
                self._calls,
                core,
                place.namespace,
                job,
                pods=mine,
                now=now,
                cancelled=self._cancelled,
                lookup_events=False,
                pool=self._pool_of(job),
            )
            owned.append(_owned(place, job, status.state))
        return owned

    def _mine(self, resource: Mapping[str, Any]) -> bool:
        """Labelled managed-by fusionplane and owned by this control plane (a server may ignore the selector)."""
        labels = labels_of(resource)
        return labels.get(LABEL_MANAGED_BY) == MANAGER and labels.get(LABEL_OWNER) == self.owner


def _owned(place: Place, resource: Mapping[str, Any], state: BackendState) -> OwnedResource:
    """The Job or Secret as ``list_owned`` reports it."""
    labels = labels_of(resource)
    return OwnedResource(
        attempt_id=str(labels[LABEL_ATTEMPT]),
        task_id=str(labels.get(LABEL_TASK, "")),
        backend_ref=place.ref(str(get_path(resource, "metadata", "name"))),
        state=state,
    )
