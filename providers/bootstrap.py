"""How the worker starts on every backend (names, tags, spec file, image, cloud-init) and the rules they share.

Rendered here, once, so Kubernetes, EC2 and Azure start the same container
the same way and the secret handling cannot drift between them:

- **The spec** (with the per-attempt callback token) is a file mounted
  read-only at ``/run/fusionplane/spec.json``: a Kubernetes Secret volume, or
  a file cloud-init writes with mode 0600 on the VM. Never an environment
  variable (visible in ``docker inspect`` and ``kubectl describe``), never a
  tag or label (readable by anyone who can list instances), never a log line.
- **Names** are derived from the attempt id, so a second ``launch`` of the
  same attempt finds the first resource (idempotency), and so does a
  restarted control plane.
- **Labels and tags** carry only ids (task, attempt, owner) and, on a cloud
  VM, its market (``fusionplane.io/market``: spot or on-demand): safe to list.
  The keys are Kubernetes label keys (``fusionplane.io/task-id``); Kubernetes
  and EC2 use them as they are, but Azure refuses ``/`` (and ``< > % & \\ ?``)
  in tag *names* (``InvalidTagNameCharacters``), so Azure resources carry
  :func:`azure_tag_key` of them (``fusionplane.io_task-id``):
  ``resource_tags(..., for_azure=True)``.
- **The image**: each provider takes a default :class:`WorkerImage`, and a
  target's ``settings.worker_image`` overrides its image reference
  (:func:`worker_image`); with neither, the launch is ``InvalidSpec``.
- **A VM that shut itself down** without an outcome callback is RUNNING for
  :data:`SELF_SHUTDOWN_GRACE_S`, then LOST (:class:`SelfShutdownGrace`), on
  EC2 and Azure alike.
- **Access refused** (401/403, ``UnauthorizedOperation``, RBAC) is
  ``InvalidSpec`` with one wording on every backend (:func:`access_denied`).

Why the token may sit in EC2/Azure user data: user data is readable from the
VM itself (instance metadata) and by principals allowed to describe the
instance's attribute (``ec2:DescribeInstanceAttribute``; Azure's
``Microsoft.Compute/virtualMachines/read`` does not return custom data).
The token authorises only the callbacks of one attempt and is refused once
that attempt is final, so what it exposes is bounded by the VM's own
lifetime. The API stores only its sha256.

**Provider contract: finished attempts are cancelled.** The control plane
must call ``cancel`` for every attempt once it is final (by the worker's
callback or by ``status``), and reconciliation over ``list_owned`` must do
the same for leftovers. ``cancel`` is idempotent and is what removes the
backend resource: on Azure a VM that powered itself off stays allocated,
and **billed**, until it is deleted (see :func:`cloud_init`); on EC2 the
instance has usually terminated itself already and ``cancel`` is a no-op;
on Kubernetes it deletes the finished Job (and its Secret) before the TTL
controller would.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import MARKETS, SPOT, Candidate, InvalidSpec
from controlplane.domain.worker_spec import WorkerSpec
from providers.base import BackendState, BackendStatus

__all__ = [
    "AZURE_TAG_ATTEMPT",
    "AZURE_TAG_OWNER",
    "AZURE_TAG_TASK",
    "AZURE_TAG_MARKET",
    "LABEL_ATTEMPT",
    "LABEL_MARKET",
    "LABEL_OWNER",
    "LABEL_TASK",
    "MODELS_MANIFEST_PATH",
    "SELF_SHUTDOWN_GRACE_S",
    "SELF_SHUTDOWN_REASON",
    "SELF_SHUTDOWN_WAITING",
    "SPEC_DIR",
    "SPEC_PATH",
    "WORKER_IMAGE_KEY",
    "SelfShutdownGrace",
    "WorkerImage",
    "access_denied",
    "azure_tag_key",
    "azure_tags",
    "cloud_market",
    "cloud_init",
    "resource_name",
    "resource_tags",
    "shutdown_timer_minutes",
    "spec_json",
    "worker_image",
]

SPEC_DIR = "/run/fusionplane"
SPEC_PATH = f"{SPEC_DIR}/spec.json"
#: where a VM's bootstrap writes the models manifest it fills the model cache from
MODELS_MANIFEST_PATH = f"{SPEC_DIR}/models-manifest.json"
#: label/tag keys, in Kubernetes label syntax: Kubernetes labels and EC2 tags use them as they are;
#: Azure refuses '/' in tag names, so Azure resources carry azure_tag_key() of them (AZURE_TAG_*)
LABEL_TASK = "fusionplane.io/task-id"
LABEL_ATTEMPT = "fusionplane.io/attempt-id"
LABEL_OWNER = "fusionplane.io/owner"
#: a cloud VM's market (spot or on-demand), so an operator and the bill can tell them apart
LABEL_MARKET = "fusionplane.io/market"
_NAME_SAFE = re.compile(r"[^a-z0-9-]+")
#: characters Azure refuses in tag names (InvalidTagNameCharacters)
_AZURE_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")

#: the target setting that overrides the provider's default WorkerImage.image, on every backend
WORKER_IMAGE_KEY = "worker_image"

#: how long a VM that powered itself off is still reported RUNNING, waiting for the worker's callback
#: (EC2 and Azure alike): the worker gives up a callback after its own timeout while the API may still
#: be committing it, and the first outcome wins, so that late callback must get the chance to decide
SELF_SHUTDOWN_GRACE_S = 60.0
#: BackendStatus.reason during the grace, and once it is over (LOST); prefixed with the resource
SELF_SHUTDOWN_WAITING = "shut down by itself (worker finished); waiting for its outcome callback"
SELF_SHUTDOWN_REASON = "shut down by itself (worker finished), but no outcome callback arrived"
#: how many self-shutdown sightings one process keeps (a control plane runs for months)
_SELF_SHUTDOWN_MEMORY = 10_000


@dataclass(frozen=True, kw_only=True)
class WorkerImage:
    """The container every backend runs, and where its models and caches live on a VM."""

    image: str
    #: ``--gpus all`` on VMs (the GPU image); False for the CPU image
    gpus: bool = True
    #: host directories mounted into the container on VMs (models read-only, TensorRT cache writable)
    models_dir: str = "/var/lib/fusionplane/models"
    trt_cache_dir: str = "/var/lib/fusionplane/trt-cache"
    #: extra ``docker run`` environment (never secrets: they would show in ``docker inspect``)
    env: Mapping[str, str] = field(default_factory=dict)
    #: seconds Docker waits after SIGTERM (the worker checkpoints and exits 75)
    stop_timeout_s: int = 60
    #: the models manifest with a ``source`` per model (``fusionctl models fill``): a VM fills
    #: ``models_dir`` from it before the worker starts; None: the image or the disk brings the models
    models_manifest: str | None = None


def resource_name(prefix: str, attempt_id: str, *, max_length: int = 63) -> str:
    """A deterministic, DNS-safe name for the attempt's resource (Job, VM): same attempt, same name."""
    body = _NAME_SAFE.sub("-", attempt_id.lower()).strip("-")
    name = f"{prefix}-{body}"[:max_length].rstrip("-")
    if not name or not name[0].isalpha():
        raise ValueError(f"cannot make a resource name from {attempt_id!r}")
    return name


def azure_tag_key(key: str) -> str:
    """``key`` as an Azure tag name: ``< > % & \\ ? /`` become ``_``: ``fusionplane.io_owner``.

    Only Azure needs this: Kubernetes label keys and EC2 tag keys accept
    ``/``, and changing them there would break existing selectors and IAM
    conditions (``aws:ResourceTag/fusionplane.io/owner``).
    """
    return _AZURE_TAG_FORBIDDEN.sub("_", key)


def azure_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Any tag map with its names made Azure-legal (:func:`azure_tag_key`); values are kept as they are."""
    return {azure_tag_key(key): value for key, value in tags.items()}


#: the shared label keys as Azure tag names
AZURE_TAG_TASK = azure_tag_key(LABEL_TASK)
AZURE_TAG_ATTEMPT = azure_tag_key(LABEL_ATTEMPT)
AZURE_TAG_OWNER = azure_tag_key(LABEL_OWNER)
AZURE_TAG_MARKET = azure_tag_key(LABEL_MARKET)


def resource_tags(
    *, task_id: str, attempt_id: str, owner: str, market: str | None = None, for_azure: bool = False
) -> dict[str, str]:
    """Labels/tags for every backend resource: ids only, nothing secret.

    ``market``: a cloud VM's market (``spot``, ``on-demand``), tagged as
    ``fusionplane.io/market``; None (Kubernetes, local) adds no tag.
    ``for_azure``: the keys as Azure tag names (``fusionplane.io_task-id``);
    Kubernetes and EC2 keep the ``fusionplane.io/...`` form.
    """
    tags = {LABEL_TASK: task_id, LABEL_ATTEMPT: attempt_id, LABEL_OWNER: owner}
    if market is not None:
        tags[LABEL_MARKET] = market
    return azure_tags(tags) if for_azure else tags


def cloud_market(candidate: Candidate) -> str:
    """The market a cloud provider launches ``candidate`` in: its ``market``, spot when the plan set none.

    A value outside :data:`~controlplane.domain.MARKETS` is ``InvalidSpec``
    (before any API call): guessing would launch at a price nobody chose.
    """
    market = candidate.market if candidate.market is not None else SPOT
    if market not in MARKETS:
        raise InvalidSpec(
            f"target {candidate.target}: market {market!r} is not one of {', '.join(MARKETS)}",
            target=candidate.target,
        )
    return market


def worker_image(default: WorkerImage | None, override: Any, *, target: str) -> WorkerImage:
    """The image a target runs: its ``settings.worker_image`` (``override``) over the provider's default.

    The override replaces only the image reference; the default's other
    fields (env, GPUs, stop timeout, host directories) stay. Raises
    ``InvalidSpec`` naming the key when the override is not an image
    reference, or when there is neither (a launch-time error, so a policy
    reload that adds such a target fails its launches, not the provider).
    """
    if override is not None:
        if not isinstance(override, str) or not override.strip():
            raise InvalidSpec(
                f"target {target}: settings.{WORKER_IMAGE_KEY} must be an image reference (a non-empty string)",
                target=target,
            )
        image = override.strip()
        return dataclasses.replace(default, image=image) if default is not None else WorkerImage(image=image)
    if default is None:
        raise InvalidSpec(
            f"target {target}: settings.{WORKER_IMAGE_KEY} is required (or give the provider a default WorkerImage)",
            target=target,
        )
    return default


def access_denied(what: str, detail: str, *, target: str, check: str, history: tuple[str, ...] = ()) -> InvalidSpec:
    """The one wording, on every backend, for a refusal of access (401/403, ``UnauthorizedOperation``, RBAC).

    It is ``InvalidSpec`` (terminal: the executor fails the task rather than
    trying the next candidate) because the refusal is about this target's
    configuration or the control plane's permissions on it, which no retry
    fixes. The message says so, and ``check`` says where to look, so an
    operator reading the task's failure does not hunt for a bug in the task.
    """
    return InvalidSpec(
        f"{what}: access denied: {detail}. This is the target's configuration or permissions, "
        f"not the task: check {check}",
        target=target,
        history=history,
    )


class SelfShutdownGrace:
    """The one rule for a VM that powered itself off with no outcome: RUNNING for a grace, then LOST.

    cloud-init powers the VM off once the container exits, and the container
    exits only after the worker's ``complete``/``fail`` callback is over, so
    in every normal case the callback has already made the attempt final
    and nobody asks ``status`` any more. ``status`` decides only when no
    outcome arrived, and then the cloud cannot tell success from failure
    (the exit code is on the VM's disk): SUCCEEDED would turn a failure
    without a callback (``spec_invalid`` exits 65 and sends none) into a
    success, FAILED would throw away a success whose callback was lost.
    LOST is what happened (gone, nobody reported an outcome), and it is the
    state meant to be retried with the same checkpoint (docs/worker.md).

    The grace starts when this process first sees the shutdown under
    ``key`` (a restarted control plane waits once more, which is harmless).
    Thread-safe; remembers a bounded number of sightings.
    """

    def __init__(
        self,
        grace_s: float = SELF_SHUTDOWN_GRACE_S,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        memory: int = _SELF_SHUTDOWN_MEMORY,
    ) -> None:
        if not grace_s >= 0:
            raise ValueError("self_shutdown_grace_s must be >= 0")
        self.grace_s = grace_s
        self._monotonic = monotonic
        self._memory = memory
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def status(self, key: str, where: str) -> BackendStatus:
        """RUNNING while ``key`` is within its grace, LOST after; ``where`` names the resource in the reason."""
        now = self._monotonic()
        with self._lock:
            first = self._seen.setdefault(key, now)
            # oldest first (insertion order is first-sighting order): forget what is long decided
            horizon = now - max(self.grace_s * 10, 3600.0)
            while self._seen and (len(self._seen) > self._memory or next(iter(self._seen.values())) < horizon):
                self._seen.popitem(last=False)
        if now - first < self.grace_s:
            return BackendStatus(state=BackendState.RUNNING, reason=f"{where}: {SELF_SHUTDOWN_WAITING}")
        return BackendStatus(state=BackendState.LOST, reason=f"{where}: {SELF_SHUTDOWN_REASON}")


def spec_json(worker_spec: WorkerSpec) -> str:
    """The spec file's content (stable key order, so re-rendering the same attempt gives the same bytes)."""
    return json.dumps(worker_spec.wire_document(), sort_keys=True, separators=(",", ":"))


def shutdown_timer_minutes(deadline_seconds: int | None) -> int | None:
    """Minutes after boot at which a VM powers itself off whatever runs: the task's deadline, rounded up."""
    if deadline_seconds is None:
        return None
    return max(1, math.ceil(deadline_seconds / 60))


def cloud_init(
    worker_spec: WorkerSpec, image: WorkerImage, *, attempt_id: str, deadline_seconds: int | None = None
) -> str:
    """``#cloud-config`` user data for EC2 and Azure VMs: write the spec (0600), run the worker once.

    With the task's ``deadline_seconds``, the bootstrap first schedules a
    power-off (``shutdown -P +N``, N the deadline in minutes rounded up):
    the backstop for a VM whose control plane is away when the deadline
    passes (the scheduler itself fails the task and cancels the VM at the
    deadline). Counted from boot, so it is never earlier than the deadline.

    The VM powers itself off (``shutdown -h now``) when the container exits;
    the outcome is the worker's callback, and the exit code is kept in
    ``/run/fusionplane/exit_code`` for debugging. What the power-off does
    differs between the clouds:

    - **EC2**: the instance is launched with
      ``InstanceInitiatedShutdownBehavior=terminate``, so the power-off
      terminates it and ends the bill even if the control plane is away.
    - **Azure**: there is no "delete on OS shutdown" for a single VM. A VM
      stopped from inside is ``PowerState/stopped``: still allocated and
      **still billed** (compute included) until it is deallocated or
      deleted. ``evictionPolicy: Delete`` covers Spot evictions only.

    So the provider contract requires the control plane to ``cancel`` the
    resource of every attempt that is final (after its callback, or after
    ``status`` gave a final state, and in reconciliation over ``list_owned``);
    on Azure that ``cancel`` is what deletes the VM, its NIC and its disk.
    Either way ``status`` reports the self-shutdown the same:
    :class:`SelfShutdownGrace`.
    """
    spec_b64 = base64.b64encode(spec_json(worker_spec).encode()).decode()
    env = " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in sorted(image.env.items()))
    fill = _models_fill(image)
    gpus = "--gpus all " if image.gpus else ""
    container = shlex.quote(f"fusionplane-{attempt_id}"[:128])
    run = (
        f"docker run --rm --name {container} {gpus}--stop-timeout {int(image.stop_timeout_s)} "
        f"-v {shlex.quote(image.models_dir)}:/models:ro -v {shlex.quote(image.trt_cache_dir)}:/cache/trt "
        f"-v {SPEC_PATH}:{SPEC_PATH}:ro {env + ' ' if env else ''}{shlex.quote(image.image)} "
        f"--spec {SPEC_PATH}"
    )
    script = "\n".join(
        [
            "#!/bin/sh",
            "# FusionPlane worker bootstrap: one attempt, then power off",
            f"mkdir -p {shlex.quote(image.models_dir)} {shlex.quote(image.trt_cache_dir)}",
            f"chown 1000:1000 {shlex.quote(image.trt_cache_dir)}",
            *([f"shutdown -P +{minutes}"] if (minutes := shutdown_timer_minutes(deadline_seconds)) else []),
            *fill,
            f"{run}; echo $? > {SPEC_DIR}/exit_code",
            "shutdown -h now",
            "",
        ]
    )
    # write_files with base64 content: the spec never appears in a shell command line (ps) or the runcmd log
    return "\n".join(
        [
            "#cloud-config",
            "write_files:",
            f"  - path: {SPEC_PATH}",
            "    permissions: '0600'",
            "    owner: '1000:1000'",
            "    encoding: b64",
            f"    content: {spec_b64}",
            *_models_manifest_file(image),
            "  - path: /usr/local/sbin/fusionplane-worker",
            "    permissions: '0700'",
            "    encoding: b64",
            f"    content: {base64.b64encode(script.encode()).decode()}",
            "runcmd:",
            "  - [/usr/local/sbin/fusionplane-worker]",
            "",
        ]
    )


def _models_fill(image: WorkerImage) -> list[str]:
    """The bootstrap's lines that fill ``models_dir`` from the models manifest, with the worker's own image.

    ``fusionctl models fill`` keeps a model already there and verified, so a
    VM image (or a reused disk) that carries the models costs a checksum, not a
    download. A failed fill does not stop the worker: its own check of the
    cache then fails the attempt with the model's name and the reason, through
    the callback, which a VM that powered off without a word would not give.
    """
    if image.models_manifest is None:
        return []
    models = shlex.quote(image.models_dir)
    return [
        f"chown 1000:1000 {models}",
        f"docker run --rm --entrypoint fusionctl -v {models}:/models "
        f"-v {MODELS_MANIFEST_PATH}:{MODELS_MANIFEST_PATH}:ro {shlex.quote(image.image)} "
        f"models fill --manifest {MODELS_MANIFEST_PATH} --dest /models "
        f"|| echo 'fusionplane: model cache fill failed; the worker reports which model' >&2",
    ]


def _models_manifest_file(image: WorkerImage) -> list[str]:
    """The cloud-config ``write_files`` entry of the models manifest (no secret in it: names, URLs, sums)."""
    if image.models_manifest is None:
        return []
    return [
        f"  - path: {MODELS_MANIFEST_PATH}",
        "    permissions: '0644'",
        "    encoding: b64",
        f"    content: {base64.b64encode(image.models_manifest.encode()).decode()}",
    ]
