"""The Kubernetes provider: places, clients and the provider contract over the pure modules."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controlplane.domain import (
    Candidate,
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
from providers.common import BoundedMemory, ClientCache, own_targets
from providers.kubeconfig import cluster_client
from providers.kubernetes import api
from providers.kubernetes.errors import conflict, not_found, translate
from providers.kubernetes.manifests import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGER,
    NAME_PREFIX,
    SECRET_KEY,
    job_body,
    job_labels,
    secret_body,
)
from providers.kubernetes.settings import DEFAULT_NAMESPACE, LABEL_VALUE, JobSettings, cluster_key
from providers.kubernetes.status import (
    event_time,
    finished_pod_status,
    get_path,
    items_of,
    labels_of,
    newest,
    no_pod_status,
    owned_by,
    pending_pod_status,
    true_condition,
)

log = logging.getLogger("fusionplane.providers.kubernetes")

#: kubectl's and client-go's page size
PAGE_SIZE = 500
#: how many attempt ids the provider remembers (where each Job lives, which it cancelled)
_MEMORY = 10_000
_MERGE_PATCH = "application/merge-patch+json"
ApiClientFactory = Callable[[Target], Any]


@dataclass(frozen=True)
class _Place:
    """One namespace of one cluster where this provider's Jobs live."""

    cluster: tuple[str | None, str | None]
    namespace: str
    #: a target on that cluster (the client factory is asked with it)
    target: Target = field(compare=False, hash=False)

    def ref(self, name: str) -> str:
        context = self.cluster[1]
        return f"{context}/{self.namespace}/{name}" if context else f"{self.namespace}/{name}"


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
        self._targets = targets if callable(targets) else list(targets)
        self.image = image
        self.owner = owner
        self.request_timeout_s = request_timeout_s
        self.page_size = page_size
        self.clock = clock
        self._factory = api_client_for
        self._clients: ClientCache[tuple[str | None, str | None], Any] = ClientCache()
        #: the clients built here, not injected: only these are ours to close
        self._built: list[Any] = []
        self._lock = threading.Lock()
        #: attempt id -> the place its Job was seen (looked at first)
        self._where: BoundedMemory[_Place] = BoundedMemory(_MEMORY)
        #: attempt ids this provider cancelled
        self._cancelled: BoundedMemory[bool] = BoundedMemory(_MEMORY)

    # -- targets, places and clients -------------------------------------------------------------

    def targets(self) -> list[Target]:
        return own_targets(self._targets, self.name)

    def _target(self, name: str) -> Target:
        for target in self.targets():
            if target.name == name:
                return target
        raise InvalidSpec(f"no kubernetes target named {name!r} is configured", target=name)

    def _place_of(self, target: Target) -> _Place:
        namespace = target.settings.get("namespace") or DEFAULT_NAMESPACE
        return _Place(cluster_key(target), str(namespace), target)

    def places(self) -> list[_Place]:
        """Every (cluster, namespace) of the configured targets, each once."""
        seen: dict[_Place, None] = {}
        for target in self.targets():
            try:
                seen.setdefault(self._place_of(target), None)
            except InvalidSpec:
                log.warning("", extra={"event": "kubernetes_target_skipped", "target": target.name})
        return list(seen)

    def _client(self, place: _Place) -> Any:
        return self._clients.get(place.cluster, lambda _: self._make_client(place))

    def _make_client(self, place: _Place) -> Any:
        if self._factory is not None:
            return self._factory(place.target)
        kubeconfig, context = place.cluster
        client = cluster_client(kubeconfig, context)
        with self._lock:
            self._built.append(client)
        return client

    def close(self) -> None:
        """Close the clients this provider built (injected ones belong to their owner)."""
        self._clients.close_all()
        with self._lock:
            built, self._built = self._built, []
        for client in built:
            client.close()

    def _places_for(self, attempt_id: str) -> list[_Place]:
        places = self.places()
        remembered = self._where.get(attempt_id)
        if remembered in places:
            places.remove(remembered)
            places.insert(0, remembered)
        return places

    # -- calls -----------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return api.call(fn, *args, timeout_s=self.request_timeout_s, **kwargs)

    def _read(self, fn: Callable[..., Any], name: str, namespace: str) -> dict[str, Any] | None:
        return api.read(fn, name, namespace, timeout_s=self.request_timeout_s)

    def _list(self, fn: Callable[..., Any], namespace: str, **kwargs: Any) -> list[Mapping[str, Any]]:
        return api.list_all(fn, namespace, timeout_s=self.request_timeout_s, page_size=self.page_size, **kwargs)

    # -- the objects -----------------------------------------------------------------------------

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
        target = self._target(request.candidate.target)
        settings = JobSettings.of(target, self.image)
        try:
            name = resource_name(NAME_PREFIX, request.attempt_id)
        except ValueError as exc:
            raise InvalidSpec(str(exc), target=target.name) from exc
        labels = job_labels(request, name, owner=self.owner)
        job = job_body(request, target, settings, name, labels)
        place = _Place(cluster_key(target), settings.namespace, target)
        token = request.worker_spec.callback_token()
        scrub = (token,) if token else ()
        try:
            client = self._client(place)
            return self._launch(
                request,
                place,
                client,
                name,
                job,
                secret_body(name, settings, labels, spec_json(request.worker_spec)),
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
            raise translate(exc, f"launch {place.ref(name)}", target=target.name, scrub=scrub) from exc

    def _launch(
        self,
        request: LaunchRequest,
        place: _Place,
        client: Any,
        name: str,
        job: Mapping[str, Any],
        secret: Mapping[str, Any],
    ) -> LaunchResult:
        batch, core = kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
        namespace = place.namespace
        existing = self._read(batch.read_namespaced_job, name, namespace)
        if existing is not None:
            return self._adopt(request, place, core, existing)
        try:
            self._call(core.create_namespaced_secret, namespace, secret)
        except ApiException as exc:
            if not conflict(exc):
                raise
            if not self._reuse_secret(core, place, name, secret):
                # its Job existed and was deleted: the attempt ran once; never start it twice
                self._remember(request.attempt_id, place)
                log.warning(
                    "",
                    extra={"event": "kubernetes_job_gone", "attempt_id": request.attempt_id, "ref": place.ref(name)},
                )
                return LaunchResult(backend_ref=place.ref(name), adopted=True)
        try:
            created = self._call(batch.create_namespaced_job, namespace, job)
        except ApiException as exc:
            if not conflict(exc):
                # refused (quota, RBAC, invalid): the Secret just made would outlive the attempt unowned
                self._drop_secret(core, place, name, request.attempt_id)
                raise
            raced = self._read(batch.read_namespaced_job, name, namespace)
            if raced is None:  # created and deleted in between: let the executor try again
                raise
            return self._adopt(request, place, core, raced)
        self._remember(request.attempt_id, place)
        self._own_secret(core, place, name, created)
        return LaunchResult(backend_ref=place.ref(name), adopted=False)

    def _drop_secret(self, core: Any, place: _Place, name: str, attempt_id: str) -> None:
        """Best effort: a failure here leaves the Secret to ``cancel`` and reconciliation (``list_owned``)."""
        try:
            self._call(core.delete_namespaced_secret, name, place.namespace)
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

    def _adopt(self, request: LaunchRequest, place: _Place, core: Any, job: Mapping[str, Any]) -> LaunchResult:
        name = str(get_path(job, "metadata", "name"))
        found = labels_of(job).get(LABEL_ATTEMPT)
        if found != request.attempt_id:
            # two attempt ids that differ only in case or punctuation make the same name
            raise InvalidSpec(
                f"job {place.ref(name)} belongs to attempt {found!r}, not {request.attempt_id!r}",
                target=place.target.name,
            )
        self._remember(request.attempt_id, place)
        # a launch that died between creating the Job and owning the Secret left it unowned
        self._own_secret(core, place, name, job)
        return LaunchResult(backend_ref=place.ref(name), adopted=True)

    def _reuse_secret(self, core: Any, place: _Place, name: str, wanted: Mapping[str, Any]) -> bool:
        """A Secret of that name exists and no Job does: reuse it, replace it, or say the Job is gone.

        Returns False when the Secret is owned by a (deleted) Job. A Secret
        left by a launch that died before creating its Job is reused when it
        holds the same spec, and replaced when it does not (a new launch of
        the attempt carries the token the control plane now expects).
        """
        current = self._read(core.read_namespaced_secret, name, place.namespace)
        if current is None:  # deleted in between: create it once more
            self._call(core.create_namespaced_secret, place.namespace, wanted)
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
        self._call(core.delete_namespaced_secret, name, place.namespace, body=options)
        self._call(core.create_namespaced_secret, place.namespace, wanted)
        return True

    def _own_secret(self, core: Any, place: _Place, name: str, job: Mapping[str, Any]) -> None:
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
            self._call(
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

    def _remember(self, attempt_id: str, place: _Place) -> None:
        with self._lock:
            self._where.put(attempt_id, place)

    def _find_job(self, attempt_id: str, name: str) -> tuple[_Place, dict[str, Any]] | None:
        """The attempt's Job and where it is; None when no place has it (Unavailable if one did not answer)."""
        failures: list[ProviderError] = []
        for place in self._places_for(attempt_id):
            try:
                client = self._client(place)
                job = self._read(kubernetes.client.BatchV1Api(client).read_namespaced_job, name, place.namespace)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
                failures.append(translate(exc, f"read job {place.ref(name)}", target=place.target.name))
                continue
            if job is None or labels_of(job).get(LABEL_ATTEMPT) != attempt_id:
                continue
            self._remember(attempt_id, place)
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
            return self._job_status(place, job, pods=None, now=self.clock())
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
            raise translate(exc, f"status of {place.ref(name)}", target=place.target.name) from exc

    def _gone(self, attempt_id: str, name: str) -> BackendStatus:
        if attempt_id in self._cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the job was deleted")
        if attempt_id in self._where:
            return BackendStatus(
                state=BackendState.LOST, reason=f"job deleted: {name} is gone without a recorded outcome"
            )
        where = ", ".join(place.ref(name) for place in self.places()) or "no kubernetes target"
        return BackendStatus(state=BackendState.LOST, reason=f"unknown attempt: no job {where}")

    def _job_pods(self, place: _Place, job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        core = kubernetes.client.CoreV1Api(self._client(place))
        name = str(get_path(job, "metadata", "name"))
        # the selector narrows the answer on a real API server; the owner check is what decides
        pods = self._list(core.list_namespaced_pod, place.namespace, label_selector=f"{LABEL_INSTANCE}={name}")
        return [pod for pod in pods if owned_by(pod, job)]

    def _job_status(
        self,
        place: _Place,
        job: Mapping[str, Any],
        *,
        pods: list[Mapping[str, Any]] | None,
        now: datetime,
        lookup_events: bool = True,
    ) -> BackendStatus:
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
            pods = self._job_pods(place, job)
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
            return BackendStatus(
                state=BackendState.FAILED,
                reason=f"job failed ({failed.get('reason')}): {failed.get('message') or ''}; no pod left to say why",
            )
        if get_path(job, "metadata", "deletionTimestamp"):
            if attempt_id in self._cancelled:
                return BackendStatus(state=BackendState.FAILED, reason="cancelled; the job is being deleted")
            return BackendStatus(state=BackendState.LOST, reason="job deleted: being deleted without an outcome")
        if pod is None:
            return self._no_pod_status(place, job, now) if lookup_events else no_pod_status(job, now, "")
        phase = get_path(pod, "status", "phase")
        if phase in ("Succeeded", "Failed"):  # the Job's condition lags its pod by a moment
            return finished_pod_status(pod)
        if phase == "Running":
            return BackendStatus(state=BackendState.RUNNING)
        if phase == "Unknown":
            return BackendStatus(state=BackendState.RUNNING, reason="pod phase Unknown: its node stopped reporting")
        return pending_pod_status(pod, now)

    def _no_pod_status(self, place: _Place, job: Mapping[str, Any], now: datetime) -> BackendStatus:
        """An active Job without a pod: why the Job controller could not create one, if an event says.

        A ResourceQuota on GPUs or pods refuses the *pod*, not the Job: the
        only trace is a FailedCreate event on the Job. Best effort (it needs
        ``list`` on events): without it the reason is just "no pod yet".
        """
        name, uid = get_path(job, "metadata", "name"), get_path(job, "metadata", "uid")
        try:
            core = kubernetes.client.CoreV1Api(self._client(place))
            events = self._list(
                core.list_namespaced_event,
                place.namespace,
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

    def cancel(self, attempt_id: str) -> None:
        """Delete the attempt's Job (foreground: its pod and Secret go first); already gone is success."""
        try:
            name = resource_name(NAME_PREFIX, attempt_id)
        except ValueError:
            return
        failures: list[ProviderError] = []
        deleted = False
        for place in self._places_for(attempt_id):
            try:
                deleted = self._cancel_in(place, attempt_id, name) or deleted
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
                failures.append(translate(exc, f"cancel {place.ref(name)}", target=place.target.name))
        if deleted or attempt_id in self._where:
            # status then says "cancelled" (FAILED, not retried) rather than "job deleted" (LOST)
            with self._lock:
                self._cancelled.put(attempt_id, True)
        if failures:
            raise failures[0]

    def _cancel_in(self, place: _Place, attempt_id: str, name: str) -> bool:
        batch, core = (
            kubernetes.client.BatchV1Api(self._client(place)),
            kubernetes.client.CoreV1Api(self._client(place)),
        )
        deleted = False
        job = self._read(batch.read_namespaced_job, name, place.namespace)
        if job is not None and labels_of(job).get(LABEL_ATTEMPT) == attempt_id:
            uid = get_path(job, "metadata", "uid")
            # foreground: the Job stays (with a deletionTimestamp) until its pod and Secret are gone
            body: dict[str, Any] = {"propagationPolicy": "Foreground"}
            if uid:
                body["preconditions"] = {"uid": uid}  # never the Job of a later launch with the same name
            try:
                self._call(batch.delete_namespaced_job, name, place.namespace, body=body)
                deleted = True
            except ApiException as exc:
                if not not_found(exc):
                    raise
        # the garbage collector deletes an owned Secret; this covers one never owned (a launch that died)
        secret = self._read(core.read_namespaced_secret, name, place.namespace)
        if secret is not None and labels_of(secret).get(LABEL_ATTEMPT) == attempt_id:
            try:
                self._call(core.delete_namespaced_secret, name, place.namespace)
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
        selector = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_OWNER}={self.owner}"
        owned: list[OwnedResource] = []
        now = self.clock()
        for place in self.places():
            try:
                client = self._client(place)
                batch, core = kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
                jobs = [
                    job
                    for job in self._list(batch.list_namespaced_job, place.namespace, label_selector=selector)
                    if labels_of(job).get(LABEL_MANAGED_BY) == MANAGER
                    and labels_of(job).get(LABEL_OWNER) == self.owner
                    and labels_of(job).get(LABEL_ATTEMPT)
                ]
                # one pod list per namespace, not one per Job
                pods = self._list(core.list_namespaced_pod, place.namespace, label_selector=selector) if jobs else []
                with_job = {str(labels_of(job)[LABEL_ATTEMPT]) for job in jobs}
                # a Secret whose Job never came (a launch refused or cut off) is a leftover to release
                for secret in self._list(core.list_namespaced_secret, place.namespace, label_selector=selector):
                    labels = labels_of(secret)
                    attempt_id = str(labels.get(LABEL_ATTEMPT) or "")
                    if (
                        attempt_id
                        and attempt_id not in with_job
                        and labels.get(LABEL_MANAGED_BY) == MANAGER
                        and labels.get(LABEL_OWNER) == self.owner
                    ):
                        self._remember(attempt_id, place)
                        owned.append(
                            OwnedResource(
                                attempt_id=attempt_id,
                                task_id=str(labels.get(LABEL_TASK, "")),
                                backend_ref=place.ref(str(get_path(secret, "metadata", "name"))),
                                state=BackendState.LOST,
                            )
                        )
                for job in jobs:
                    labels = labels_of(job)
                    attempt_id = str(labels[LABEL_ATTEMPT])
                    self._remember(attempt_id, place)
                    mine = [p for p in pods if owned_by(p, job)]
                    state = self._job_status(place, job, pods=mine, now=now, lookup_events=False).state
                    owned.append(
                        OwnedResource(
                            attempt_id=attempt_id,
                            task_id=str(labels.get(LABEL_TASK, "")),
                            backend_ref=place.ref(str(get_path(job, "metadata", "name"))),
                            state=state,
                        )
                    )
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
                raise translate(exc, f"list jobs in {place.ref('')}", target=place.target.name) from exc
        return owned
