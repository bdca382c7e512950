"""The Kubernetes provider: one ``batch/v1`` Job, and one Secret holding its spec, per attempt.

Names come from the attempt id (``resource_name("fp", attempt_id)``), so a
second ``launch`` of the same attempt, or a restarted control plane, finds
the first Job; ``status`` and ``cancel`` need nothing but the attempt id.

What one attempt is on the cluster (docs/providers.md, "Kubernetes")::

    Secret fp-<attempt>   spec.json = the worker spec (with the callback token); immutable;
                          ownerReferences -> the Job once it exists, so deleting the Job deletes it
    Job    fp-<attempt>   backoffLimit 0, activeDeadlineSeconds = the task's deadline,
                          ttlSecondsAfterFinished (default 1 h); one pod:
        init  models-verify   fusionctl models verify --model-dir /models  (with ``models_pvc``)
        main  worker          fusionctl worker run --spec /run/fusionplane/spec.json
              /run/fusionplane  the Secret, read-only     /models      the models PVC, read-only
              /cache/trt        PVC or emptyDir           /tmp         emptyDir (the worker's scratch)

The token is only ever in the Secret's data: never in a label, an
annotation, an environment variable, a command line or a log line (labels
carry ids only: ``resource_tags``). The Secret is created before the Job so
the pod never starts without its spec.

Status (``status``): the Job's conditions first, then its pod:

- ``Complete`` -> SUCCEEDED. ``Failed`` with reason ``DeadlineExceeded`` ->
  FAILED "deadline" (the pod was SIGTERMed, so its exit 75 is not a
  preemption). Any other ``Failed``: the pod says why (below).
- A finished pod: exit 0 -> SUCCEEDED; 75 -> PREEMPTED; another code below
  128 -> FAILED with the code's meaning (the init container's 69 means the
  model cache failed verification); no exit code or 128+N but the pod was
  evicted, preempted or shut down with its node (reason ``Evicted``,
  ``DisruptionTarget`` condition, node shutdown) -> PREEMPTED; 128+N
  otherwise (SIGKILL, OOM) -> LOST, as docs/worker.md says to treat a
  killed worker.
- A live pod: ``Running`` -> RUNNING; ``Pending`` and unschedulable ->
  PENDING, reason ``unschedulable: <scheduler message>
  [unschedulable_for_s=N]`` (:func:`unschedulable_for_s` reads N back, for
  the executor's failover limit); an image that cannot be pulled -> FAILED
  ``image pull: ...`` (terminal on this target).
- No Job: LOST, "unknown attempt" when this provider never saw the attempt,
  "job deleted" when it did; FAILED "cancelled" after its own ``cancel``.

Errors are translated at the boundary (``_translate``): 403 naming an
exceeded ResourceQuota -> QuotaExceeded, other 403 -> InvalidSpec "access
denied" (RBAC; worded by :func:`providers.bootstrap.access_denied`, as the
clouds' permission refusals are);
400/422 -> InvalidSpec; 429 -> Throttled; 5xx, refused connections and
timeouts -> Unavailable. Every API call carries ``_request_timeout``, and
clients built here never retry, so a dead API server costs one timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections import OrderedDict
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
    QuotaExceeded,
    Target,
    Throttled,
    Unavailable,
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
    SPEC_DIR,
    SPEC_PATH,
    WORKER_IMAGE_KEY,
    WorkerImage,
    access_denied,
    resource_name,
    resource_tags,
    spec_json,
    worker_image,
)
from providers.kubeconfig import cluster_client
from providers.local import EXIT_MEANINGS

__all__ = [
    "ACCESS_CHECK",
    "CONTAINER",
    "DEFAULT_NAMESPACE",
    "INIT_CONTAINER",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "MODELS_DIR",
    "SECRET_KEY",
    "TRT_CACHE_DIR",
    "ApiClientFactory",
    "KubernetesProvider",
    "unschedulable_for_s",
]

log = logging.getLogger("fusionplane.providers.kubernetes")

NAME_PREFIX = "fp"
DEFAULT_NAMESPACE = "fusionplane"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TTL_AFTER_FINISHED_S = 3600
CONTAINER = "worker"
INIT_CONTAINER = "models-verify"
MODELS_DIR = "/models"
TRT_CACHE_DIR = "/cache/trt"
#: a pod-private emptyDir, not the node's /tmp
SCRATCH_DIR = "/tmp"
SECRET_KEY = "spec.json"
WORKER_UID = 1000
WORKER_COMMAND = ("fusionctl", "worker", "run", "--spec", SPEC_PATH)
VERIFY_COMMAND = ("fusionctl", "models", "verify", "--model-dir", MODELS_DIR)
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
WORKER_APP = "fusionplane-worker"
MANAGER = "fusionplane"
#: not a secret: which policy target launched the Job, for people running kubectl
ANNOTATION_TARGET = "fusionplane.io/target"
EXIT_PREEMPTED = 75
#: waiting reasons of a container whose image will not come: terminal on this target
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
#: pod status reasons set when a pod was pushed off its node rather than failing on its own
DISRUPTION_REASONS = frozenset({"Evicted", "Preempting", "Terminated", "Shutdown", "NodeShutdown", "NodeLost"})
#: kubectl's and client-go's page size
PAGE_SIZE = 500
#: bounds the pager even against a server that keeps handing out new continue tokens
_MAX_PAGES = 10_000
#: how many attempt ids the provider remembers (where each Job lives, which it cancelled)
_MEMORY = 10_000
_UNSCHEDULABLE_FOR = re.compile(r"\[unschedulable_for_s=(\d+)\]")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_MERGE_PATCH = "application/merge-patch+json"
#: where an operator looks when the API server answers 403 (not a quota)
ACCESS_CHECK = (
    "the RBAC Role and RoleBinding of the control plane's service account (or kubeconfig user) "
    "in this target's namespace (docs/providers.md, RBAC)"
)

ApiClientFactory = Callable[[Target], Any]


def unschedulable_for_s(status: BackendStatus) -> int | None:
    """Seconds the attempt's pod has been unschedulable, from a PENDING status' reason; None otherwise.

    ``BackendStatus`` has no field for it (yet), so ``status`` writes it into
    the reason as ``[unschedulable_for_s=N]`` and this reads it back.
    """
    if status.state is not BackendState.PENDING or not status.reason:
        return None
    found = _UNSCHEDULABLE_FOR.search(status.reason)
    return int(found.group(1)) if found else None


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Settings:
    """A kubernetes target's settings, validated (docs/providers.md lists the keys)."""

    namespace: str
    #: the resolved worker image (the provider's default, with settings.worker_image applied)
    worker: WorkerImage
    gpus: int
    gpu_resource: str
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    priority_class: str | None
    service_account: str | None
    image_pull_secrets: tuple[str, ...]
    models_pvc: str | None
    trt_cache_pvc: str | None
    scratch_size_limit: str | None
    ttl_after_finished_s: int
    resources: Mapping[str, Mapping[str, str]]
    kubeconfig: str | None
    context: str | None

    @classmethod
    def of(cls, target: Target, default: WorkerImage | None) -> _Settings:
        s = target.settings

        def fail(key: str, why: str) -> InvalidSpec:
            return InvalidSpec(f"target {target.name}: settings.{key} {why}", target=target.name)

        def text(key: str, *, dns: bool = False) -> str | None:
            value = s.get(key)
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                raise fail(key, "must be a non-empty string")
            if dns and not _DNS_LABEL.match(value) and not _is_dns_subdomain(value):
                raise fail(key, f"must be a Kubernetes object name, not {value!r}")
            return value

        def count(key: str, default_value: int) -> int:
            value = s.get(key, default_value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise fail(key, "must be a whole number >= 0")
            return value

        namespace = text("namespace") or DEFAULT_NAMESPACE
        if not _DNS_LABEL.match(namespace):
            raise fail("namespace", f"must be a DNS label, not {namespace!r}")
        # settings.worker_image is the key every provider reads; settings.image is this provider's older
        # name for it, still accepted (on Azure "image" is the VM image, hence the common name)
        override, legacy = s.get(WORKER_IMAGE_KEY), s.get("image")
        if legacy is not None:
            legacy = text("image")
            if override is not None and override != legacy:
                raise fail("image", f"and settings.{WORKER_IMAGE_KEY} differ: give only {WORKER_IMAGE_KEY}")
        worker = worker_image(default, override if override is not None else legacy, target=target.name)
        selector = s.get("node_selector") or {}
        if not isinstance(selector, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
        ):
            # nodeSelector is map[string]string: a YAML true is not the label value "true"
            raise fail("node_selector", "must map label names to string values")
        tolerations = s.get("tolerations") or []
        if not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations):
            raise fail("tolerations", "must be a list of Kubernetes toleration objects")
        pull_secrets = s.get("image_pull_secrets") or []
        if not isinstance(pull_secrets, list) or not all(isinstance(p, str) and p for p in pull_secrets):
            raise fail("image_pull_secrets", "must be a list of Secret names")
        resources = s.get("resources") or {}
        if not isinstance(resources, Mapping) or not all(
            part in ("requests", "limits")
            and isinstance(values, Mapping)
            and all(isinstance(k, str) and isinstance(v, str | int) for k, v in values.items())
            for part, values in resources.items()
        ):
            raise fail("resources", "must be {requests: {name: quantity}, limits: {name: quantity}}")
        gpu_resource = text("gpu_resource") or DEFAULT_GPU_RESOURCE
        return cls(
            namespace=namespace,
            worker=worker,
            gpus=count("gpus", 1 if worker.gpus else 0),
            gpu_resource=gpu_resource,
            node_selector=dict(selector),
            tolerations=tuple(dict(t) for t in tolerations),
            priority_class=text("priority_class", dns=True),
            service_account=text("service_account", dns=True),
            image_pull_secrets=tuple(pull_secrets),
            models_pvc=text("models_pvc", dns=True),
            trt_cache_pvc=text("trt_cache_pvc", dns=True),
            scratch_size_limit=text("scratch_size_limit"),
            ttl_after_finished_s=count("ttl_seconds_after_finished", DEFAULT_TTL_AFTER_FINISHED_S),
            resources={part: {k: str(v) for k, v in values.items()} for part, values in resources.items()},
            kubeconfig=text("kubeconfig"),
            context=text("context"),
        )


def _is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and all(_DNS_LABEL.match(part) for part in value.split("."))


def _cluster_key(target: Target) -> tuple[str | None, str | None]:
    """Which cluster a target is on: (kubeconfig path, context); None where its settings name none."""
    kubeconfig, context = target.settings.get("kubeconfig"), target.settings.get("context")
    for key, value in (("kubeconfig", kubeconfig), ("context", context)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidSpec(f"target {target.name}: settings.{key} must be a non-empty string", target=target.name)
    return (os.path.expanduser(kubeconfig) if kubeconfig else None, context)


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


# -- reading API objects (plain dicts, as the API server sends them) ---------------------------


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = _get(obj, "metadata", "labels")
    return labels if isinstance(labels, Mapping) else {}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _true_condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in _items(_get(obj, "status", "conditions")):
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _exit_reason(code: int, *, container: str = CONTAINER, detail: str = "") -> str:
    who = "worker" if container == CONTAINER else f"{container} (init container)"
    extra = f", {detail}" if detail else ""
    if code in EXIT_MEANINGS:
        return f"{who} exited {code} ({EXIT_MEANINGS[code]}{extra})"
    if code > 128:
        return f"{who} killed by signal {code - 128} (exit {code}{extra})"
    return f"{who} exited {code} (not a documented exit code: an unhandled crash{extra})"


def _terminated(pod: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """The container that decided the pod's fate: (name, exit code, reason such as OOMKilled), or None.

    A failed init container (the model check) stops the pod before the
    worker starts, so it is looked at first.
    """
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in _items(_get(pod, "status", key)):
            done = _get(status, "state", "terminated") or _get(status, "lastState", "terminated")
            if not isinstance(done, Mapping) or not isinstance(done.get("exitCode"), int):
                continue
            code = int(done["exitCode"])
            if key == "initContainerStatuses" and code == 0:
                continue  # the check passed; the worker's own status decides
            return str(status.get("name") or "?"), code, str(done.get("reason") or "")
    return None


def _disruption(pod: Mapping[str, Any]) -> str | None:
    """Why the pod was pushed off its node (eviction, preemption, node shutdown), or None."""
    condition = _true_condition(pod, "DisruptionTarget")
    if condition is not None:
        return f"disrupted ({condition.get('reason') or 'DisruptionTarget'}): {condition.get('message') or ''}".rstrip(
            ": "
        )
    reason = _get(pod, "status", "reason")
    if reason in DISRUPTION_REASONS:
        return f"{reason}: {_get(pod, 'status', 'message') or ''}".rstrip(": ")
    return None


def _finished_pod_status(pod: Mapping[str, Any]) -> BackendStatus:
    """The outcome of a pod that ran to its end (phase Succeeded or Failed)."""
    decided = _terminated(pod)
    disrupted = _disruption(pod)
    if decided is not None:
        container, code, detail = decided
        if code == 0:
            return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
        reason = _exit_reason(code, container=container, detail=detail)
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
    if _get(pod, "status", "phase") == "Succeeded":
        return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
    why = _get(pod, "status", "reason") or "no container exit code"
    return BackendStatus(state=BackendState.LOST, reason=f"pod failed: {why}: {_get(pod, 'status', 'message') or ''}")


def _pending_pod_status(pod: Mapping[str, Any], now: datetime) -> BackendStatus:
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in _items(_get(pod, "status", key)):
            waiting = _get(status, "state", "waiting")
            if isinstance(waiting, Mapping) and waiting.get("reason") in IMAGE_PULL_REASONS:
                message = waiting.get("message") or ""
                return BackendStatus(
                    state=BackendState.FAILED,
                    reason=f"image pull: {waiting['reason']}: {message}".rstrip(": "),
                )
    for condition in _items(_get(pod, "status", "conditions")):
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            since = _parse_time(condition.get("lastTransitionTime")) or _parse_time(
                _get(pod, "metadata", "creationTimestamp")
            )
            seconds = max(int((now - since).total_seconds()), 0) if since is not None else 0
            message = condition.get("message") or "no node fits"
            return BackendStatus(
                state=BackendState.PENDING, reason=f"unschedulable: {message} [unschedulable_for_s={seconds}]"
            )
    for status in _items(_get(pod, "status", "initContainerStatuses")):
        if isinstance(_get(status, "state", "running"), Mapping):
            return BackendStatus(state=BackendState.PENDING, reason="verifying the model cache (init container)")
    waiting = [
        str(_get(status, "state", "waiting", "reason"))
        for key in ("initContainerStatuses", "containerStatuses")
        for status in _items(_get(pod, "status", key))
        if _get(status, "state", "waiting", "reason")
    ]
    return BackendStatus(
        state=BackendState.PENDING, reason="pod pending" + (f": {', '.join(waiting)}" if waiting else "")
    )


def _event_time(event: Mapping[str, Any]) -> datetime:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        parsed = _parse_time(event.get(key))
        if parsed is not None:
            return parsed
    return _parse_time(_get(event, "metadata", "creationTimestamp")) or datetime.min.replace(tzinfo=UTC)


def _no_pod(job: Mapping[str, Any], now: datetime, detail: str) -> BackendStatus:
    created = _parse_time(_get(job, "metadata", "creationTimestamp"))
    waited = max(int((now - created).total_seconds()), 0) if created is not None else 0
    reason = f"no pod yet: {detail}" if detail else "no pod yet"
    return BackendStatus(state=BackendState.PENDING, reason=f"{reason} [pending_for_s={waited}]")


def _owned_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Is ``pod`` one of ``job``'s? (its controller reference, checked by uid where both have one)."""
    name, uid = _get(job, "metadata", "name"), _get(job, "metadata", "uid")
    for ref in _items(_get(pod, "metadata", "ownerReferences")):
        if ref.get("kind") == "Job" and ref.get("name") == name:
            return not uid or not ref.get("uid") or ref.get("uid") == uid
    return False


def _newest(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ordered = sorted(
        pods,
        key=lambda p: (
            _parse_time(_get(p, "metadata", "creationTimestamp")) or datetime.min.replace(tzinfo=UTC),
            str(_get(p, "metadata", "name") or ""),
        ),
    )
    return ordered[-1] if ordered else None


# -- errors ---------------------------------------------------------------------------------------


def _api_message(exc: ApiException) -> str:
    """The Status ``message`` of an API error (short, no tracebacks), else its HTTP reason."""
    message = ""
    try:
        body = json.loads(exc.body) if exc.body else None
    except (ValueError, TypeError):
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        message = body["message"]
    return (message or str(exc.reason or ""))[:500]


def _translate(exc: BaseException, what: str, *, target: str, scrub: Iterable[str] = ()) -> ProviderError:
    """The taxonomy error for an exception of the client (see the module docstring)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ApiException):
        message = _api_message(exc)
        for secret in scrub:  # an API server echoing a value must not put a token into a receipt
            if secret:
                message = message.replace(secret, "***")
        status = int(exc.status or 0)
        detail = f"{what}: HTTP {status}: {message}"
        if status == 403:
            if "exceeded quota" in message.lower():
                return QuotaExceeded(f"{what}: ResourceQuota exceeded: {message}", target=target)
            return access_denied(what, f"HTTP 403 forbidden (RBAC): {message}", target=target, check=ACCESS_CHECK)
        if status in (400, 422):
            return InvalidSpec(detail, target=target)
        if status == 429:
            return Throttled(detail, target=target)
        if status == 401:
            # expired or wrong credentials: this cluster's problem, not the task's
            return Unavailable(f"{what}: unauthorized (credentials): {message}", target=target)
        if status == 409 or status >= 500 or status == 0:
            return Unavailable(detail, target=target)
        return InvalidSpec(detail, target=target)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # before the timeouts: urllib3 makes NewConnectionError (refused, no route) a ConnectTimeoutError
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return Unavailable(f"{what}: cannot reach the API server: {exc}", target=target)
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return Unavailable(f"{what}: the API server timed out: {exc}", target=target)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return Unavailable(f"{what}: cannot reach the API server: {type(exc).__name__}: {exc}", target=target)
    if isinstance(exc, ConfigException):
        return Unavailable(f"{what}: no usable kubeconfig: {exc}", target=target)
    if isinstance(exc, ValueError):  # a 2xx answer that is not the JSON object it should be
        return Unavailable(f"{what}: malformed answer from the API server: {exc}", target=target)
    raise exc


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


class _Memory:
    """A bounded insertion-ordered map of attempt ids (the oldest are forgotten first)."""

    def __init__(self, size: int = _MEMORY) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def put(self, key: str, value: Any = True) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, key: str) -> Any:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items


# -- the provider ---------------------------------------------------------------------------------


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
        if not _LABEL_VALUE.match(owner) or not owner or len(owner) > 63:
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
        self._clients: dict[tuple[str | None, str | None], Any] = {}
        self._built: list[Any] = []
        self._lock = threading.Lock()
        #: attempt id -> the place its Job was seen (looked at first)
        self._where = _Memory()
        #: attempt ids this provider cancelled
        self._cancelled = _Memory()

    # -- targets, places and clients -------------------------------------------------------------

    def targets(self) -> list[Target]:
        current = self._targets() if callable(self._targets) else self._targets
        return [t for t in current if t.provider == self.name]

    def _target(self, name: str) -> Target:
        for target in self.targets():
            if target.name == name:
                return target
        raise InvalidSpec(f"no kubernetes target named {name!r} is configured", target=name)

    def _place_of(self, target: Target) -> _Place:
        namespace = target.settings.get("namespace") or DEFAULT_NAMESPACE
        return _Place(_cluster_key(target), str(namespace), target)

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
        with self._lock:
            client = self._clients.get(place.cluster)
        if client is not None:
            return client
        if self._factory is not None:
            client = self._factory(place.target)
            built = False
        else:
            client = self._build(place.cluster)
            built = True
        with self._lock:
            cached = self._clients.setdefault(place.cluster, client)
            if built and cached is client:
                self._built.append(client)
        if built and cached is not client:  # another thread built the same one meanwhile
            client.close()
        return cached

    @staticmethod
    def _build(cluster: tuple[str | None, str | None]) -> Any:
        kubeconfig, context = cluster
        return cluster_client(kubeconfig, context)

    def close(self) -> None:
        """Close the clients this provider built (injected ones belong to their owner)."""
        with self._lock:
            built, self._built, self._clients = self._built, [], {}
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

    def _timeout(self) -> tuple[float, float]:
        return (self.request_timeout_s, self.request_timeout_s)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, bounded by the request timeout, its answer as a JSON object."""
        response = fn(*args, _request_timeout=self._timeout(), _preload_content=False, **kwargs)
        try:
            data = response.data
        finally:
            response.release_conn()
        body = json.loads(data) if data else {}
        if not isinstance(body, dict):
            raise ValueError("the answer is not a JSON object")
        return body

    def _read(self, fn: Callable[..., Any], name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when the API server says 404."""
        try:
            return self._call(fn, name, namespace)
        except ApiException as exc:
            if _not_found(exc):
                return None
            raise

    def _list(self, fn: Callable[..., Any], namespace: str, **kwargs: Any) -> list[Mapping[str, Any]]:
        """Every item of a namespaced list, page by page (``limit``/``continue``).

        Like client-go's pager, an expired continue token (410) falls back to
        one full list rather than failing.
        """
        items: list[Mapping[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            try:
                body = self._call(fn, namespace, limit=self.page_size, _continue=token, **kwargs)
            except ApiException as exc:
                if exc.status != 410 or token is None:
                    raise
                return _items(self._call(fn, namespace, **kwargs).get("items"))
            items.extend(_items(body.get("items")))
            next_token = _get(body, "metadata", "continue") or None
            if next_token is None:
                return items
            if not isinstance(next_token, str) or next_token in seen:
                raise ValueError("the list's continue token repeats")
            seen.add(next_token)
            token = next_token
        raise ValueError(f"the list has more than {_MAX_PAGES} pages")

    # -- the objects -----------------------------------------------------------------------------

    def _labels(self, request: LaunchRequest, name: str) -> dict[str, str]:
        labels = {
            LABEL_NAME: WORKER_APP,
            LABEL_MANAGED_BY: MANAGER,
            LABEL_INSTANCE: name,
            **resource_tags(task_id=request.task_id, attempt_id=request.attempt_id, owner=self.owner),
        }
        for key, value in labels.items():
            # ids longer than 63 characters cannot be label values; say so instead of a bare 422
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                raise InvalidSpec(
                    f"label {key}={value!r} is not a valid Kubernetes label value (at most 63 of [A-Za-z0-9._-])",
                    target=request.candidate.target,
                )
        return labels

    def _secret_body(self, name: str, settings: _Settings, labels: Mapping[str, str], spec: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": settings.namespace, "labels": dict(labels)},
            "type": "Opaque",
            # immutable: the kubelet stops watching it, and nobody can swap a running attempt's token
            "immutable": True,
            "data": {SECRET_KEY: base64.b64encode(spec.encode()).decode()},
        }

    def _job_body(
        self, request: LaunchRequest, target: Target, settings: _Settings, name: str, labels: Mapping[str, str]
    ) -> dict[str, Any]:
        """The Job for ``request`` (no API call)."""
        image = settings.worker
        env = dict(image.env)
        # paths only, never the spec itself; HOME on the scratch volume because the root filesystem is read-only
        env.update(
            {
                "FUSIONPLANE_WORKER_SPEC": SPEC_PATH,
                "FUSIONPLANE_MODEL_DIR": MODELS_DIR,
                "FUSIONPLANE_TRT_CACHE": TRT_CACHE_DIR,
                "HOME": SCRATCH_DIR,
            }
        )
        container_security = {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        resources: dict[str, dict[str, str]] = {part: dict(values) for part, values in settings.resources.items()}
        if settings.gpus:
            # an extended resource is requested through its limit (the API server copies it to requests)
            resources.setdefault("limits", {})[settings.gpu_resource] = str(settings.gpus)
        mounts = [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "trt-cache", "mountPath": TRT_CACHE_DIR},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ]
        scratch: dict[str, Any] = {}
        if settings.scratch_size_limit:
            scratch["sizeLimit"] = settings.scratch_size_limit
        volumes: list[dict[str, Any]] = [
            {
                "name": "spec",
                "secret": {
                    "secretName": name,
                    # 0440 and group 1000 (fsGroup): the worker can read it, nobody can write it
                    "defaultMode": 0o440,
                    "items": [{"key": SECRET_KEY, "path": os.path.basename(SPEC_PATH)}],
                },
            },
            {"name": "trt-cache"}
            | (
                {"persistentVolumeClaim": {"claimName": settings.trt_cache_pvc}}
                if settings.trt_cache_pvc
                else {"emptyDir": {}}
            ),
            {"name": "scratch", "emptyDir": scratch},
        ]
        init_containers: list[dict[str, Any]] = []
        if settings.models_pvc:
            mounts.insert(1, {"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
            volumes.insert(
                1, {"name": "models", "persistentVolumeClaim": {"claimName": settings.models_pvc, "readOnly": True}}
            )
            # reads every model file once (sha256 and signature): a broken cache fails the pod with 69
            # before it holds a GPU for minutes, and the worker starts from a warm page cache
            init_containers.append(
                {
                    "name": INIT_CONTAINER,
                    "image": image.image,
                    "command": list(VERIFY_COMMAND),
                    "env": [
                        {"name": "FUSIONPLANE_MODEL_DIR", "value": MODELS_DIR},
                        {"name": "HOME", "value": SCRATCH_DIR},
                    ],
                    "securityContext": container_security,
                    "volumeMounts": [
                        {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                        {"name": "scratch", "mountPath": SCRATCH_DIR},
                    ],
                }
            )
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            # the worker checkpoints on SIGTERM and exits 75; its final callback needs the time
            "terminationGracePeriodSeconds": image.stop_timeout_s,
            # the worker never talks to the Kubernetes API: no token of the pod's service account in it
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": WORKER_UID,
                "runAsGroup": WORKER_UID,
                "fsGroup": WORKER_UID,
                # a large model or TensorRT cache is not chowned file by file at every pod start
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image.image,
                    "command": list(WORKER_COMMAND),
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                    "resources": resources,
                    "securityContext": container_security,
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        }
        if init_containers:
            pod_spec["initContainers"] = init_containers
        if settings.node_selector:
            pod_spec["nodeSelector"] = dict(settings.node_selector)
        if settings.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
        if settings.priority_class:
            pod_spec["priorityClassName"] = settings.priority_class
        if settings.service_account:
            # for the S3 role (IRSA, workload identity); the webhook mounts its own token
            pod_spec["serviceAccountName"] = settings.service_account
        if settings.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
        job_spec: dict[str, Any] = {
            # a retry is a new attempt, decided by the control plane from the exit code
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        }
        if request.deadline_seconds is not None:
            if request.deadline_seconds <= 0:
                raise InvalidSpec("deadline_seconds must be > 0", target=target.name)
            job_spec["activeDeadlineSeconds"] = int(request.deadline_seconds)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": settings.namespace,
                "labels": dict(labels),
                "annotations": {ANNOTATION_TARGET: target.name},
            },
            "spec": job_spec,
        }

    # -- the contract ----------------------------------------------------------------------------

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
        settings = _Settings.of(target, self.image)
        try:
            name = resource_name(NAME_PREFIX, request.attempt_id)
        except ValueError as exc:
            raise InvalidSpec(str(exc), target=target.name) from exc
        labels = self._labels(request, name)
        job = self._job_body(request, target, settings, name, labels)
        place = _Place(_cluster_key(target), settings.namespace, target)
        token = _get(request.worker_spec, "callback", "token")
        scrub = (str(token),) if token else ()
        try:
            client = self._client(place)
            return self._launch(
                request,
                place,
                client,
                name,
                job,
                self._secret_body(name, settings, labels, spec_json(request.worker_spec)),
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
            raise _translate(exc, f"launch {place.ref(name)}", target=target.name, scrub=scrub) from exc

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
            if not _conflict(exc):
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
            if not _conflict(exc):
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
        name = str(_get(job, "metadata", "name"))
        found = _labels(job).get(LABEL_ATTEMPT)
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
        if _labels(current).get(LABEL_ATTEMPT) != _labels(wanted).get(LABEL_ATTEMPT):
            raise InvalidSpec(
                f"secret {place.ref(name)} belongs to another attempt ({_labels(current).get(LABEL_ATTEMPT)!r})",
                target=place.target.name,
            )
        if any(ref.get("kind") == "Job" for ref in _items(_get(current, "metadata", "ownerReferences"))):
            return False
        if _get(current, "data", SECRET_KEY) == _get(wanted, "data", SECRET_KEY):
            return True
        # immutable: replaced by delete and create, guarded by the uid so a newer one is never deleted
        uid = _get(current, "metadata", "uid")
        options = {"preconditions": {"uid": uid}} if uid else None
        self._call(core.delete_namespaced_secret, name, place.namespace, body=options)
        self._call(core.create_namespaced_secret, place.namespace, wanted)
        return True

    def _own_secret(self, core: Any, place: _Place, name: str, job: Mapping[str, Any]) -> None:
        """Make the Job the Secret's owner, so the garbage collector deletes the Secret with the Job."""
        uid = _get(job, "metadata", "uid")
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
                    "error": _translate(exc, "own secret", target=place.target.name).message,
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
                failures.append(_translate(exc, f"read job {place.ref(name)}", target=place.target.name))
                continue
            if job is None or _labels(job).get(LABEL_ATTEMPT) != attempt_id:
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
            raise _translate(exc, f"status of {place.ref(name)}", target=place.target.name) from exc

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
        name = str(_get(job, "metadata", "name"))
        # the selector narrows the answer on a real API server; the owner check is what decides
        pods = self._list(core.list_namespaced_pod, place.namespace, label_selector=f"{LABEL_INSTANCE}={name}")
        return [pod for pod in pods if _owned_by(pod, job)]

    def _job_status(
        self,
        place: _Place,
        job: Mapping[str, Any],
        *,
        pods: list[Mapping[str, Any]] | None,
        now: datetime,
        lookup_events: bool = True,
    ) -> BackendStatus:
        attempt_id = str(_labels(job).get(LABEL_ATTEMPT))
        if _true_condition(job, "Complete") or _true_condition(job, "SuccessCriteriaMet"):
            return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
        failed = _true_condition(job, "Failed") or _true_condition(job, "FailureTarget")
        if failed is not None and failed.get("reason") == "DeadlineExceeded":
            deadline = _get(job, "spec", "activeDeadlineSeconds")
            message = failed.get("message") or "no message"
            return BackendStatus(
                state=BackendState.FAILED,
                reason=f"deadline: the job ran past activeDeadlineSeconds={deadline}: {message}",
            )
        if pods is None:
            pods = self._job_pods(place, job)
        pod = _newest(pods)
        if failed is not None:
            if pod is not None and _get(pod, "status", "phase") not in ("Succeeded", "Failed"):
                # FailureTarget comes before the pod has ended: its exit code (75 after SIGTERM?) decides
                return BackendStatus(
                    state=BackendState.RUNNING,
                    reason=f"job failing ({failed.get('reason')}); waiting for its pod to end",
                )
            if pod is not None:
                return _finished_pod_status(pod)
            return BackendStatus(
                state=BackendState.FAILED,
                reason=f"job failed ({failed.get('reason')}): {failed.get('message') or ''}; no pod left to say why",
            )
        if _get(job, "metadata", "deletionTimestamp"):
            if attempt_id in self._cancelled:
                return BackendStatus(state=BackendState.FAILED, reason="cancelled; the job is being deleted")
            return BackendStatus(state=BackendState.LOST, reason="job deleted: being deleted without an outcome")
        if pod is None:
            return self._no_pod_status(place, job, now) if lookup_events else _no_pod(job, now, "")
        phase = _get(pod, "status", "phase")
        if phase in ("Succeeded", "Failed"):  # the Job's condition lags its pod by a moment
            return _finished_pod_status(pod)
        if phase == "Running":
            return BackendStatus(state=BackendState.RUNNING)
        if phase == "Unknown":
            return BackendStatus(state=BackendState.RUNNING, reason="pod phase Unknown: its node stopped reporting")
        return _pending_pod_status(pod, now)

    def _no_pod_status(self, place: _Place, job: Mapping[str, Any], now: datetime) -> BackendStatus:
        """An active Job without a pod: why the Job controller could not create one, if an event says.

        A ResourceQuota on GPUs or pods refuses the *pod*, not the Job: the
        only trace is a FailedCreate event on the Job. Best effort (it needs
        ``list`` on events): without it the reason is just "no pod yet".
        """
        name, uid = _get(job, "metadata", "name"), _get(job, "metadata", "uid")
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
            if _get(e, "involvedObject", "kind") == "Job"
            and _get(e, "involvedObject", "name") == name
            and (not uid or not _get(e, "involvedObject", "uid") or _get(e, "involvedObject", "uid") == uid)
            and e.get("reason") == "FailedCreate"
        ]
        latest = max(failed, key=_event_time, default=None)
        detail = f"FailedCreate: {latest.get('message') or ''}" if latest is not None else ""
        return _no_pod(job, now, detail)

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
                failures.append(_translate(exc, f"cancel {place.ref(name)}", target=place.target.name))
        if deleted or attempt_id in self._where:
            # status then says "cancelled" (FAILED, not retried) rather than "job deleted" (LOST)
            with self._lock:
                self._cancelled.put(attempt_id)
        if failures:
            raise failures[0]

    def _cancel_in(self, place: _Place, attempt_id: str, name: str) -> bool:
        batch, core = (
            kubernetes.client.BatchV1Api(self._client(place)),
            kubernetes.client.CoreV1Api(self._client(place)),
        )
        deleted = False
        job = self._read(batch.read_namespaced_job, name, place.namespace)
        if job is not None and _labels(job).get(LABEL_ATTEMPT) == attempt_id:
            uid = _get(job, "metadata", "uid")
            # foreground: the Job stays (with a deletionTimestamp) until its pod and Secret are gone
            body: dict[str, Any] = {"propagationPolicy": "Foreground"}
            if uid:
                body["preconditions"] = {"uid": uid}  # never the Job of a later launch with the same name
            try:
                self._call(batch.delete_namespaced_job, name, place.namespace, body=body)
                deleted = True
            except ApiException as exc:
                if not _not_found(exc):
                    raise
        # the garbage collector deletes an owned Secret; this covers one never owned (a launch that died)
        secret = self._read(core.read_namespaced_secret, name, place.namespace)
        if secret is not None and _labels(secret).get(LABEL_ATTEMPT) == attempt_id:
            try:
                self._call(core.delete_namespaced_secret, name, place.namespace)
            except ApiException as exc:
                if not _not_found(exc):
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
                    if _labels(job).get(LABEL_MANAGED_BY) == MANAGER
                    and _labels(job).get(LABEL_OWNER) == self.owner
                    and _labels(job).get(LABEL_ATTEMPT)
                ]
                # one pod list per namespace, not one per Job
                pods = self._list(core.list_namespaced_pod, place.namespace, label_selector=selector) if jobs else []
                with_job = {str(_labels(job)[LABEL_ATTEMPT]) for job in jobs}
                # a Secret whose Job never came (a launch refused or cut off) is a leftover to release
                for secret in self._list(core.list_namespaced_secret, place.namespace, label_selector=selector):
                    labels = _labels(secret)
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
                                backend_ref=place.ref(str(_get(secret, "metadata", "name"))),
                                state=BackendState.LOST,
                            )
                        )
                for job in jobs:
                    labels = _labels(job)
                    attempt_id = str(labels[LABEL_ATTEMPT])
                    self._remember(attempt_id, place)
                    mine = [p for p in pods if _owned_by(p, job)]
                    state = self._job_status(place, job, pods=mine, now=now, lookup_events=False).state
                    owned.append(
                        OwnedResource(
                            attempt_id=attempt_id,
                            task_id=str(labels.get(LABEL_TASK, "")),
                            backend_ref=place.ref(str(_get(job, "metadata", "name"))),
                            state=state,
                        )
                    )
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException, ValueError) as exc:
                raise _translate(exc, f"list jobs in {place.ref('')}", target=place.target.name) from exc
        return owned
