"""The Kubernetes provider: one ``batch/v1`` Job, and one Secret holding its spec, per attempt.

The package: ``settings`` (the target's settings: the typed model a policy is
checked against when it is loaded, and what a launch resolves them to),
``manifests`` (the Secret and Job bodies, pure), ``status`` (what a Job and
its pod say, as a ``BackendStatus``, pure), ``api`` (bounded calls and the
pager), ``errors`` (API errors into the domain's taxonomy), ``places`` (the
(cluster, namespace) places and their clients), ``secrets`` (the Secret's
lifecycle beside its Job), ``observe`` (reading a Job and its pods into a
status), ``pools`` (a target on an EKS or AKS node pool: its selectors and
tolerations, and when its cloud refused capacity) and ``provider`` (the
contract).

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
  PENDING with ``unschedulable_for_s`` set (the executor's failover limit
  reads it), reason ``unschedulable: <scheduler message>
  [unschedulable_for_s=N]`` for people; an image that cannot be pulled -> FAILED
  ``image pull: ...`` (terminal on this target).
- No Job: LOST, "unknown attempt" when this provider never saw the attempt,
  "job deleted" when it did; FAILED "cancelled" after its own ``cancel``.
- On a cloud node pool (``Target.cloud``, found by the Job's target
  annotation): a spot pool's failed Job with no pod left -> PREEMPTED (the
  pod went with its reclaimed node); an unschedulable pod the cloud will not
  bring a node for -> PENDING with ``capacity_refusal`` (``pools``).

Errors are translated at the boundary (``errors.translate``): 403 naming an
exceeded ResourceQuota -> QuotaExceeded, other 403 -> InvalidSpec "access
denied" (RBAC; worded by :func:`providers.bootstrap.access_denied`, as the
clouds' permission refusals are);
400/422 -> InvalidSpec; 429 -> Throttled; 5xx, refused connections and
timeouts -> Unavailable. Every API call carries ``_request_timeout``, and
clients built here never retry, so a dead API server costs one timeout.
"""

from providers.kubernetes.errors import ACCESS_CHECK
from providers.kubernetes.manifests import (
    CONTAINER,
    INIT_CONTAINER,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MODELS_DIR,
    SECRET_KEY,
    TRT_CACHE_DIR,
)
from providers.kubernetes.provider import ApiClientFactory, KubernetesProvider
from providers.kubernetes.settings import DEFAULT_NAMESPACE, KubernetesTargetSettings, validate_settings

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
    "KubernetesTargetSettings",
    "validate_settings",
]
