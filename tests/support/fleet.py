"""The worker fleet of the fault storm: what runs on the three cloud backends, played on their emulators.

Nothing runs a container in the tests' EC2 (moto), Kubernetes (kmock) and
Azure (tests/fakes/azure_arm.py). :class:`Fleet` is a bounded loop thread that
plays everything the real world would do with what ``fusionctl serve``
launches there:

- it **finds** each new resource this control plane owns (EC2 instances with
  its owner tag, Jobs with its owner label, VMs with its owner tag) and
  **reads its worker spec** the way the worker gets it (the instance's user
  data and the VM's custom data: the cloud-init document, whose spec file is
  base64 inside; the Job's Secret);
- after a short boot it **runs the worker**: Azure provisioning finishes
  (``PowerState/running``), the Job controller creates the pod (``Running``),
  and the worker posts one ``heartbeat`` to the spec's callback URL;
- after the attempt's work time it ends in one of two ways, chosen from the
  attempt id so reruns pick the same attempts:

  * **preempted** (``preempt_rate``): the backend takes the capacity back its
    own way, so the provider's ``status`` says PREEMPTED: EC2 terminates the
    instance with ``StateReason`` ``Server.SpotInstanceTermination``, Azure
    evicts the Spot VM (``evictionPolicy: Delete``: VM, NIC and disk vanish),
    Kubernetes fails the pod with a ``DisruptionTarget`` condition and the Job
    with ``Failed``. Half of these workers also send the ``fail`` callback
    (kind ``preempted``, exit 75) that the real worker sends on SIGTERM, so
    both reports race as they do in production;
  * **succeeded**: the worker posts ``complete`` and the machine powers
    itself off as cloud-init does: the EC2 instance terminates with
    ``Client.InstanceInitiatedShutdown`` (``InstanceInitiatedShutdownBehavior=
    terminate``), the Azure VM goes ``PowerState/stopped`` (still allocated:
    the control plane must delete it), the pod ends ``Succeeded`` (exit 0) and
    the Job ``Complete`` (it stays until the control plane deletes it).

- it plays the **garbage collector** of Kubernetes (pods and Secrets of a
  deleted Job go away with it; deleted objects are compacted away, as etcd
  does) and EC2's forgetting of terminated instances (gone from
  ``DescribeInstances`` a while after they terminated; EC2 takes about an
  hour, the storm ``purge_after_s``).

Resources that the control plane cancels stop being played (their worker is
gone). Every resource ever seen is kept as a :class:`Resource` with the time
it was first seen and the time its worker stopped, which is what the storm's
duplicate checks read.

Callback delivery: the ``heartbeat`` is sent once. The outcome callback of
a VM or pod worker is retried (every 0.5 s) for up to ``outcome_retry_s``
before the machine powers off anyway. The real worker gives up after three
tries (1.5 s); a VM whose outcome never arrived is then LOST only after the
providers' 60 s self-shutdown grace, which a restarted control plane starts
again, so with a control plane killed every few seconds that path would make
the storm last minutes. It has its own tests (tests/contract); here the
longer retry budget stands for a worker that outlives a control-plane
restart. The local provider's stub worker (tests/support/stub_worker.py)
keeps the real worker's three tries: its exit code is the final word.

Faults at launch, where the real SDKs see them (no SDK is patched):
:func:`ec2_capacity_faults` (for :class:`tests.support.faultproxy.FaultProxy`
in front of moto), :class:`CapacityFaultArm` (ARM answers ``AllocationFailed``
or ``SkuNotAvailable`` to a share of VM creations) and
:class:`QuotaFaultCluster` (the API server refuses a share of Job creations
with a ResourceQuota's 403, which the Kubernetes provider maps to
``QuotaExceeded``: it has no capacity error at launch, an unschedulable pod
is PENDING).

Also here: :class:`ManagedIdentityEndpoint`, the App Service managed-identity
token endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``), so the
``DefaultAzureCredential`` inside ``fusionctl serve`` gets the fake ARM's
token through azure-identity's own code, and :func:`moto_tag_index`, a
speed-up of moto's tag lookups for the duration of a storm.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import itertools
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kmock

from providers.aws import TAG_CANCELLED
from providers.bootstrap import (
    AZURE_TAG_ATTEMPT,
    AZURE_TAG_OWNER,
    AZURE_TAG_TASK,
    LABEL_ATTEMPT,
    LABEL_OWNER,
    LABEL_TASK,
    SPEC_PATH,
)
from providers.kubernetes import SECRET_KEY
from tests.fakes.azure_arm import FakeAzureArm, _Reply, _route
from tests.support.faultproxy import ProxiedRequest, Reply
from tests.support.kmock_cluster import JOBS, PODS, SECRETS, KmockCluster
from tests.support.stub_worker import fraction

__all__ = [
    "CapacityFaultArm",
    "Fleet",
    "FleetConfig",
    "ManagedIdentityEndpoint",
    "QuotaFaultCluster",
    "Resource",
    "ec2_capacity_faults",
    "moto_tag_index",
    "read_ledger",
    "spec_from_cloud_init",
]

log = logging.getLogger("fusionplane.tests.fleet")

EXIT_PREEMPTED = 75


# --------------------------------------------------------------------------- faults at launch


def _ec2_error(code: str, message: str) -> bytes:
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def ec2_capacity_faults(rate: float, seed: str = "") -> Callable[[ProxiedRequest], Reply | None]:
    """``decide`` for a FaultProxy in front of moto: ``InsufficientInstanceCapacity`` for a share of RunInstances.

    Chosen by the request's ``ClientToken`` (``<attempt id>-<offer>``), so
    botocore's retry of the same request (it resends the token) gets the same
    answer, as it would from EC2 while the capacity is not there. EC2 answers
    this code with HTTP 500.
    """

    def decide(request: ProxiedRequest) -> Reply | None:
        if request.method != "POST" or b"Action=RunInstances" not in request.body:
            return None
        params = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        if params.get("Action") != "RunInstances":
            return None
        token = params.get("ClientToken", "")
        if fraction(seed, token, "capacity") >= rate:
            return None
        body = _ec2_error(
            "InsufficientInstanceCapacity",
            f"We currently do not have sufficient {params.get('InstanceType', '?')} capacity in the Availability "
            "Zone you requested. Our system will be working on provisioning additional capacity.",
        )
        return Reply(500, body, {"Content-Type": "text/xml;charset=UTF-8"}, label="aws:InsufficientInstanceCapacity")

    return decide


class CapacityFaultArm(FakeAzureArm):
    """The fake ARM, refusing a share of VM creations (chosen by VM name) with an allocation error.

    The refusal is ARM's synchronous one (409, ``AllocationFailed`` or
    ``SkuNotAvailable``, chosen by the name too), answered before anything is
    created, after the bearer token was checked.
    """

    def __init__(self, *, capacity_error_rate: float = 0.0, seed: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity_error_rate = capacity_error_rate
        self.seed = seed
        self.refused: Counter[str] = Counter()

    def _reply(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        if method == "PUT" and self.capacity_error_rate > 0:
            kind, match = _route(path)
            authorised = self.token is None or headers.get("authorization") == f"Bearer {self.token}"
            if kind == "vm" and match is not None and authorised:
                name = match["name"]
                with self._lock:
                    exists = (match["rg"].lower(), name.lower()) in self._arm.vms
                if not exists and fraction(self.seed, name, "capacity") < self.capacity_error_rate:
                    if fraction(self.seed, name, "capacity-code") < 0.5:
                        code = "AllocationFailed"
                        message = (
                            "Allocation failed. We do not have sufficient capacity for the requested VM size in "
                            "this region. Read more about improving likelihood of allocation success at "
                            "http://aka.ms/allocation-guidance"
                        )
                    else:
                        code = "SkuNotAvailable"
                        message = (
                            "The requested VM size for resource 'Following SKUs have failed for Capacity "
                            "Restrictions' is currently not available in location. Please try another size or "
                            "deploy to a different location or different zone."
                        )
                    with self._lock:
                        self.refused[code] += 1
                    return _Reply.error(409, code, message)
        return super()._reply(method, path, query, headers, body)


class QuotaFaultCluster(KmockCluster):
    """kmock's API server, refusing a share of Job creations (chosen by Job name) the way a ResourceQuota does.

    403 ``Forbidden`` with the quota admission plugin's message: the
    Kubernetes provider's ``QuotaExceeded`` (retryable elsewhere). The Secret
    the provider created just before stays, as on a real cluster.

    kmock keeps every request it received and matches each new one against
    that whole log (``request in view`` walks it), so a request costs O(all
    requests so far): after a few thousand, kmock alone fills a CPU. This
    cluster forgets requests once they are old: it keeps the newest
    ``request_log`` ones, and every request that reached this point less than
    ``request_keep_s`` ago (it may still be waiting for kmock's lock before it
    is matched; one dropped before that would be answered 500, which the
    provider treats as a retryable ``Unavailable``). The storm reads none of
    them; the emulated objects are untouched.
    """

    def __init__(
        self,
        *,
        quota_error_rate: float = 0.0,
        seed: str = "",
        request_log: int = 4,
        request_keep_s: float = 0.03,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.quota_error_rate = quota_error_rate
        self.seed = seed
        self.request_log = request_log
        self.request_keep_s = request_keep_s
        self.refused = 0
        self._arrived: dict[int, float] = {}

    def _forget_old_requests(self, request: Any) -> None:
        """Runs on kmock's loop, before ``request`` is matched (see the class docstring)."""
        log_ = getattr(self.handler, "_requests", None)
        if not isinstance(log_, list):
            return
        now = time.monotonic()
        self._arrived[id(request)] = now
        if len(log_) <= self.request_log * 2:
            return
        horizon = now - self.request_keep_s
        newest = log_[-self.request_log :]
        kept = [r for r in log_[: -self.request_log] if self._arrived.get(id(r), now) > horizon] + newest
        log_[:] = kept
        alive = {id(r) for r in kept}
        self._arrived = {key: at for key, at in self._arrived.items() if key in alive}

    def _take_fault(self, request: Any) -> kmock.KubernetesError | None:
        self._forget_old_requests(request)
        if (
            self.quota_error_rate > 0
            and request.action == kmock.action.CREATE
            and request.resource == JOBS
            and isinstance(request.data, dict)
        ):
            name = str(request.data.get("metadata", {}).get("name", ""))
            if fraction(self.seed, name, "capacity") < self.quota_error_rate:
                self.refused += 1
                return kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=(
                        f'jobs.batch "{name}" is forbidden: exceeded quota: gpu-jobs, requested: '
                        "count/jobs.batch=1, used: count/jobs.batch=64, limited: count/jobs.batch=64"
                    ),
                    details={"name": name, "group": "batch", "kind": "jobs"},
                )
        return super()._take_fault(request)


# --------------------------------------------------------------------------- Azure credential


class ManagedIdentityEndpoint(ThreadingHTTPServer):
    """App Service's managed-identity endpoint on 127.0.0.1: ``GET ?resource=...`` with ``X-IDENTITY-HEADER``.

    Give ``fusionctl serve`` ``IDENTITY_ENDPOINT=<url>`` and
    ``IDENTITY_HEADER=<header>``: azure-identity's ``DefaultAzureCredential``
    then asks here for its ARM token and gets ``token``.
    """

    daemon_threads = True

    def __init__(self, token: str, header: str = "storm-identity-header") -> None:
        super().__init__(("127.0.0.1", 0), _IdentityHandler)
        self.token, self.header = token, header
        self.issued = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/msi/token"

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header}

    def __enter__(self) -> ManagedIdentityEndpoint:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


class _IdentityHandler(BaseHTTPRequestHandler):
    server: ManagedIdentityEndpoint
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if self.headers.get("X-IDENTITY-HEADER") != self.server.header:
            self._answer(401, {"error": "invalid_request", "error_description": "X-IDENTITY-HEADER is wrong"})
            return
        resource = (query.get("resource") or [""])[0]
        self.server.issued += 1
        self._answer(
            200,
            {
                "access_token": self.server.token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# --------------------------------------------------------------------------- moto


@contextlib.contextmanager
def moto_tag_index() -> Iterator[None]:
    """Make moto's per-resource tag lookup a dictionary read instead of a scan of every tag, for a while.

    moto 5.2.5 answers ``TaggedEC2Resource.get_tags()`` with
    ``describe_tags(filters={"resource-id": [id]})``, which walks every tag of
    the region; ``DescribeInstances`` with tag filters calls it per instance,
    so one call costs O(instances x tags): about a second at 1,000 instances.
    This returns the same list (resource id, key, value, resource type) from
    ``ec2_backend.tags[id]``. It changes moto (the emulated server), never
    boto3 or botocore, and is undone on exit.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    original = TaggedEC2Resource.get_tags

    def get_tags(self: Any) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        tags = dict(self.ec2_backend.tags.get(resource_id) or {})
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [{"resource_id": resource_id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    try:
        yield
    finally:
        TaggedEC2Resource.get_tags = original  # type: ignore[method-assign]


def spec_from_cloud_init(document: str) -> dict[str, Any] | None:
    """The worker spec inside ``providers.bootstrap.cloud_init`` user data (its ``write_files`` entry of SPEC_PATH)."""
    lines = document.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == f"- path: {SPEC_PATH}":
            for following in lines[index + 1 : index + 6]:
                stripped = following.strip()
                if stripped.startswith("content:"):
                    raw = base64.b64decode(stripped.split(":", 1)[1].strip())
                    value = json.loads(raw)
                    return value if isinstance(value, dict) else None
    return None


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class FleetConfig:
    owner: str
    seed: str = ""
    preempt_rate: float = 0.1
    #: share of preempted workers that also send the ``fail`` callback (kind preempted, exit 75)
    notify_preempted_rate: float = 0.5
    boot_s: tuple[float, float] = (0.1, 0.4)
    work_s: tuple[float, float] = (0.5, 2.0)
    #: how long a VM or pod worker keeps retrying its outcome callback (see the module docstring)
    outcome_retry_s: float = 30.0
    callback_timeout_s: float = 3.0
    scan_interval_s: float = 0.25
    #: EC2 forgets a terminated instance this long after it ended (the storm's stand-in for "about an hour")
    purge_after_s: float = 10.0
    aws_region: str = "us-east-1"
    k8s_namespace: str = "fusionplane"
    callback_threads: int = 16


@dataclass
class Resource:
    """One backend resource the fleet saw, from its first sighting to the end of its worker."""

    backend: str  # aws | azure | kubernetes
    key: str  # instance id | VM name + vm id | job name + uid
    name: str
    attempt_id: str
    task_id: str
    first_seen: float
    spec: dict[str, Any] | None = None
    fate: str = ""  # preempt | succeed
    booted: float | None = None
    #: when its worker stopped: it finished, was preempted, or the resource was cancelled or vanished
    ended: float | None = None
    how: str = ""
    heartbeat: bool = False
    delivered: bool | None = None
    notified: bool | None = None
    purged: bool = False
    #: for Kubernetes: the pod the fleet created for the Job
    pod: str | None = None
    volumes: tuple[str, ...] = ()
    uid: str = ""
    #: Kubernetes: the Job's pod template (the pod the fleet creates), and whether its pod and Secret were collected
    template: dict[str, Any] = field(default_factory=dict)
    collected: bool = False

    def end(self, when: float, how: str) -> None:
        if self.ended is None:
            self.ended, self.how = when, how


class Fleet:
    """Plays the workers of every resource ``config.owner`` starts on moto, kmock and the fake ARM.

    Use as a context manager; ``stop()`` ends the loop and waits for the
    callback threads (both bounded).
    """

    def __init__(
        self,
        config: FleetConfig,
        *,
        moto_backend: Callable[[], Any] | None = None,
        cluster: KmockCluster | None = None,
        arm: FakeAzureArm | None = None,
    ) -> None:
        self.config = config
        self._moto_backend = moto_backend
        self.cluster = cluster
        self.arm = arm
        self.resources: dict[tuple[str, str], Resource] = {}
        self.errors: Counter[str] = Counter()
        self.last_errors: list[str] = []
        self.counts: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=config.callback_threads, thread_name_prefix="fleet-callback")
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self._k8s_known: set[str] = set()
        self._k8s_compacted = 0.0
        self._aws_known: set[str] = set()
        self._azure_known: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        interval = self.config.scan_interval_s
        while not self._stop.wait(interval):
            now = time.time()
            for name, scan in (("aws", self._scan_aws), ("azure", self._scan_azure), ("kubernetes", self._scan_k8s)):
                try:
                    scan(now)
                except Exception as exc:  # a scan that failed is tried again next round; counted
                    self._error(f"scan {name}", exc)
            self._run_due(time.time())

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _error(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.errors[where] += 1
            if len(self.last_errors) < 50:
                self.last_errors.append(f"{where}: {type(exc).__name__}: {exc}")

    # -- scheduling ------------------------------------------------------------------------------

    def _at(self, when: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._heap, (when, next(self._seq), action))

    def _run_due(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > now:
                    return
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception as exc:
                self._error("action", exc)

    def _background(self, action: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                action()
            except Exception as exc:
                self._error("callback", exc)

        if not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # the pool is shutting down
                self._pool.submit(guarded)

    # -- fates -----------------------------------------------------------------------------------

    def _span(self, bounds: tuple[float, float], attempt_id: str, purpose: str) -> float:
        low, high = bounds
        return low + (high - low) * fraction(self.config.seed, attempt_id, purpose)

    def _track(self, resource: Resource) -> None:
        config = self.config
        resource.fate = (
            "preempt" if fraction(config.seed, resource.attempt_id, "preempt") < config.preempt_rate else "succeed"
        )
        with self._lock:
            self.resources[(resource.backend, resource.key)] = resource
            self._count(f"{resource.backend}:seen", 1)
        if resource.spec is None:
            self._count(f"{resource.backend}:no_spec", 1)
        boot = self._span(config.boot_s, resource.attempt_id, "boot")
        self._at(resource.first_seen + boot, lambda: self._boot(resource))

    def _boot(self, resource: Resource) -> None:
        now = time.time()
        if not self._alive(resource, now):
            return
        self._start_backend(resource)
        resource.booted = now
        spec = resource.spec
        if spec is not None:
            self._background(lambda: self._heartbeat(resource, spec))
        work = self._span(self.config.work_s, resource.attempt_id, "work")
        if resource.fate == "preempt":
            self._at(now + work / 2, lambda: self._preempt(resource))
        else:
            self._at(now + work, lambda: self._finish(resource))

    def _heartbeat(self, resource: Resource, spec: Mapping[str, Any]) -> None:
        status = self._post(spec, "heartbeat", {"progress": {}})
        resource.heartbeat = status is not None and status < 300

    def _preempt(self, resource: Resource) -> None:
        now = time.time()
        if not self._alive(resource, now):
            return
        self._preempt_backend(resource)
        resource.end(now, "preempted")
        self._count(f"{resource.backend}:preempted", 1)
        spec = resource.spec
        if (
            spec is not None
            and fraction(self.config.seed, resource.attempt_id, "notify") < self.config.notify_preempted_rate
        ):
            body = {"kind": "preempted", "message": "fleet: spot capacity reclaimed", "exit_code": EXIT_PREEMPTED}

            def notify() -> None:
                resource.notified = self._deliver(spec, "fail", body, tries=3)

            self._background(notify)

    def _finish(self, resource: Resource) -> None:
        if not self._alive(resource, time.time()):
            return
        spec = resource.spec
        if spec is None:
            self._power_off(resource)
            return

        def complete() -> None:
            body = {"output": spec.get("output"), "kind": "image", "wall_s": 1.0}
            deadline = time.monotonic() + self.config.outcome_retry_s
            resource.delivered = self._deliver(spec, "complete", body, deadline=deadline)
            self._at(time.time(), lambda: self._power_off(resource))

        self._background(complete)

    def _power_off(self, resource: Resource) -> None:
        now = time.time()
        if not self._alive(resource, now):
            return
        self._power_off_backend(resource)
        resource.end(now, "succeeded" if resource.delivered else "succeeded-undelivered")
        self._count(f"{resource.backend}:succeeded", 1)

    # -- callbacks ---------------------------------------------------------------------------------

    def _post(self, spec: Mapping[str, Any], event: str, body: Mapping[str, Any]) -> int | None:
        callback = spec.get("callback") or {}
        url, token = callback.get("url"), callback.get("token")
        if not url or not token:
            return None
        parts = urlsplit(f"{url}/{event}")
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.config.callback_timeout_s
        )
        try:
            connection.request(
                "POST",
                parts.path,
                body=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            answer = connection.getresponse()
            answer.read()
            self._count(f"callback:{event}:{answer.status}", 1)
            return int(answer.status)
        except (OSError, http.client.HTTPException):
            self._count(f"callback:{event}:unreachable", 1)
            return None
        finally:
            connection.close()

    def _deliver(
        self,
        spec: Mapping[str, Any],
        event: str,
        body: Mapping[str, Any],
        *,
        tries: int | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Post until a 2xx, a refusal (4xx but 429), ``tries`` or ``deadline``; True when delivered."""
        for attempt in itertools.count():
            status = self._post(spec, event, body)
            if status is not None and status < 300:
                return True
            if status is not None and status < 500 and status != 429:
                return False
            if tries is not None and attempt + 1 >= tries:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            # the worker's backoff (0.5 s, 1 s, ...) for counted tries; every 0.5 s until a deadline
            pause = 0.5 if tries is None else min(0.5 * 2**attempt, 5.0)
            if self._stop.wait(pause):
                return False
        return False  # pragma: no cover - the loop returns

    # -- backends: what "alive" means, and how each one starts, preempts and powers off ----------

    def _alive(self, resource: Resource, now: float) -> bool:
        """Is the resource still there for its worker? If not, mark its end (cancelled or vanished)."""
        if resource.ended is not None:
            return False
        try:
            state = {"aws": self._aws_state, "azure": self._azure_state, "kubernetes": self._k8s_state}[
                resource.backend
            ](resource)
        except Exception as exc:
            self._error(f"state {resource.backend}", exc)
            return False
        if state == "alive":
            return True
        resource.end(now, state)
        self._count(f"{resource.backend}:{state}", 1)
        return False

    def _start_backend(self, resource: Resource) -> None:
        if resource.backend == "azure" and self.arm is not None:
            arm = self.arm
            with arm._lock:
                vm = arm._arm.vms.get(_azure_key(resource))
                if vm is not None and vm.provisioning_state.lower() == "creating":
                    arm._arm._finish_provisioning(vm)  # what enough polls of ARM would do: allocated, running
        elif resource.backend == "kubernetes":
            self._k8s_start_pod(resource)

    def _preempt_backend(self, resource: Resource) -> None:
        if resource.backend == "aws":
            instance = self._aws_instance(resource.key)
            if instance is not None:
                from moto.ec2.models.instances import StateReason

                instance.terminate()
                instance.state_reason = StateReason(
                    "Server.SpotInstanceTermination: Spot instance termination", "Server.SpotInstanceTermination"
                )
        elif resource.backend == "azure" and self.arm is not None:
            with contextlib.suppress(KeyError):
                self.arm.evict(resource.name)
        elif resource.backend == "kubernetes":
            self._k8s_end(resource, succeeded=False)

    def _power_off_backend(self, resource: Resource) -> None:
        if resource.backend == "aws":
            instance = self._aws_instance(resource.key)
            if instance is not None:
                from moto.ec2.models.instances import StateReason

                instance.terminate()
                instance.state_reason = StateReason(
                    "Client.InstanceInitiatedShutdown: Instance initiated shutdown", "Client.InstanceInitiatedShutdown"
                )
        elif resource.backend == "azure" and self.arm is not None:
            with contextlib.suppress(KeyError):
                self.arm.power_off(resource.name)
        elif resource.backend == "kubernetes":
            self._k8s_end(resource, succeeded=True)

    # -- AWS (moto's objects, in this process) -------------------------------------------------

    def _aws(self) -> Any:
        return self._moto_backend() if self._moto_backend is not None else None

    def _aws_instances(self) -> list[Any]:
        backend = self._aws()
        if backend is None:
            return []
        for _ in range(3):  # moto's threads may add a reservation while we copy
            try:
                return [i for r in list(backend.reservations.values()) for i in list(r.instances)]
            except RuntimeError:
                continue
        return []

    def _aws_instance(self, instance_id: str) -> Any:
        backend = self._aws()
        if backend is None:
            return None
        for reservation in list(backend.reservations.values()):
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        return None

    def _aws_state(self, resource: Resource) -> str:
        instance = self._aws_instance(resource.key)
        if instance is None:
            return "vanished"
        if instance._state.name in ("pending", "running"):
            return "alive"
        tags = self._aws().tags.get(instance.id) or {}
        return "cancelled" if tags.get(TAG_CANCELLED) == "true" else "vanished"

    def _scan_aws(self, now: float) -> None:
        backend = self._aws()
        if backend is None:
            return
        instances = self._aws_instances()
        for instance in instances:
            if instance.id in self._aws_known:
                continue
            tags = dict(backend.tags.get(instance.id) or {})
            if tags.get(LABEL_OWNER) != self.config.owner:
                continue
            self._aws_known.add(instance.id)
            spec = None
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                raw = instance.user_data.decode() if instance.user_data is not None else ""
                text = raw if isinstance(raw, str) else raw.decode()
                if not text.startswith("#cloud-config"):
                    text = base64.b64decode(text).decode()
                spec = spec_from_cloud_init(text)
            volumes = tuple(
                str(device.volume_id) for device in (instance.block_device_mapping or {}).values() if device.volume_id
            )
            self._track(
                Resource(
                    backend="aws",
                    key=instance.id,
                    name=instance.id,
                    attempt_id=tags.get(LABEL_ATTEMPT, ""),
                    task_id=tags.get(LABEL_TASK, ""),
                    first_seen=now,
                    spec=spec,
                    volumes=volumes,
                    uid=instance.id,
                )
            )
        self._aws_ended_and_purge(backend, now)

    def _aws_ended_and_purge(self, backend: Any, now: float) -> None:
        purge: list[Resource] = []
        with self._lock:
            tracked = [r for r in self.resources.values() if r.backend == "aws" and not r.purged]
        for resource in tracked:
            if resource.ended is None:
                self._alive(resource, now)
            elif now - resource.ended >= self.config.purge_after_s:
                instance = self._aws_instance(resource.key)
                if instance is None or instance._state.name == "terminated":
                    purge.append(resource)
        if not purge:
            return
        ids = {r.key for r in purge}
        # a new dictionary, swapped in whole: moto's threads iterating the old one are not disturbed
        backend.reservations = type(backend.reservations)(
            (rid, reservation)
            for rid, reservation in list(backend.reservations.items())
            if not all(instance.id in ids for instance in reservation.instances)
        )
        for resource_id in ids | {v for r in purge for v in r.volumes}:
            backend.tags.pop(resource_id, None)
        for resource in purge:
            resource.purged = True
        self._count("aws:purged", len(purge))

    # -- Azure (the fake's state, in this process) ---------------------------------------------

    def _azure_state(self, resource: Resource) -> str:
        assert self.arm is not None
        with self.arm._lock:
            vm = self.arm._arm.vms.get(_azure_key(resource))
            if vm is None or vm.vm_id != resource.uid:
                return "vanished"
            state = vm.provisioning_state.lower()
            if state == "deleting":
                return "cancelled"
            if state == "failed" or vm.power_state in ("stopped", "deallocated"):
                return "vanished"
        return "alive"

    def _scan_azure(self, now: float) -> None:
        arm = self.arm
        if arm is None:
            return
        for vm in arm.vms():
            if vm.vm_id in self._azure_known or vm.tags.get(AZURE_TAG_OWNER) != self.config.owner:
                continue
            self._azure_known.add(vm.vm_id)
            spec = None
            with contextlib.suppress(ValueError, TypeError):
                if vm.custom_data:
                    spec = spec_from_cloud_init(base64.b64decode(vm.custom_data).decode())
            self._track(
                Resource(
                    backend="azure",
                    key=f"{vm.resource_group.lower()}/{vm.name.lower()}/{vm.vm_id}",
                    name=vm.name,
                    attempt_id=vm.tags.get(AZURE_TAG_ATTEMPT, ""),
                    task_id=vm.tags.get(AZURE_TAG_TASK, ""),
                    first_seen=now,
                    spec=spec,
                    uid=vm.vm_id,
                )
            )
        with self._lock:
            live = [r for r in self.resources.values() if r.backend == "azure" and r.ended is None]
        for resource in live:
            self._alive(resource, now)
        arm.clear_requests()  # the fake records every request; a storm sends tens of thousands

    # -- Kubernetes (kmock's objects, on its loop) ---------------------------------------------

    def _k8s_jobs(self) -> list[dict[str, Any]]:
        """New Jobs of this owner (with their Secret's spec), and the names of every Job still there."""
        assert self.cluster is not None
        handler = self.cluster.handler
        namespace = self.config.k8s_namespace
        known = self._k8s_known
        owner = self.config.owner

        def collect() -> list[dict[str, Any]]:
            found = []
            for (resource, ns, name), obj in list(handler.objects.items()):
                if resource != JOBS or ns != namespace or obj.deleted:
                    continue
                raw = obj.raw
                meta = raw.get("metadata", {})
                labels = meta.get("labels") or {}
                if labels.get(LABEL_OWNER) != owner:
                    continue
                uid = str(meta.get("uid", ""))
                entry: dict[str, Any] = {"name": name, "uid": uid, "deleting": bool(meta.get("deletionTimestamp"))}
                if f"{name}/{uid}" not in known:
                    entry["labels"] = dict(labels)
                    entry["template"] = json.loads(json.dumps(raw.get("spec", {}).get("template", {})))
                    key = (SECRETS, ns, name)
                    secret = handler.objects[key] if key in handler.objects else None  # noqa: SIM401 (no .get)
                    if secret is not None and not secret.deleted:
                        entry["secret"] = (secret.raw.get("data") or {}).get(SECRET_KEY)
                found.append(entry)
            return found

        result: list[dict[str, Any]] = self.cluster.on_loop(collect)
        return result

    def _k8s_state(self, resource: Resource) -> str:
        assert self.cluster is not None
        handler = self.cluster.handler
        key = (JOBS, self.config.k8s_namespace, resource.name)

        def read() -> str:
            if key not in handler.objects:
                return "vanished"
            obj = handler.objects[key]
            if obj.deleted or str(obj.raw.get("metadata", {}).get("uid", "")) != resource.uid:
                return "cancelled"
            if obj.raw.get("metadata", {}).get("deletionTimestamp"):
                return "cancelled"
            return "alive"

        state: str = self.cluster.on_loop(read)
        return state

    def _scan_k8s(self, now: float) -> None:
        if self.cluster is None:
            return
        jobs = self._k8s_jobs()
        present = {f"{job['name']}/{job['uid']}" for job in jobs if not job["deleting"]}
        for job in jobs:
            ident = f"{job['name']}/{job['uid']}"
            if ident in self._k8s_known or "labels" not in job:
                continue
            self._k8s_known.add(ident)
            spec = None
            with contextlib.suppress(ValueError, TypeError):
                if job.get("secret"):
                    spec = json.loads(base64.b64decode(job["secret"]))
            resource = Resource(
                backend="kubernetes",
                key=ident,
                name=job["name"],
                attempt_id=str(job["labels"].get(LABEL_ATTEMPT, "")),
                task_id=str(job["labels"].get(LABEL_TASK, "")),
                first_seen=now,
                spec=spec,
                uid=job["uid"],
            )
            resource.template = job["template"]
            self._track(resource)
        with self._lock:
            tracked = [r for r in self.resources.values() if r.backend == "kubernetes"]
        gone = []
        for resource in tracked:
            if resource.key in present:
                continue
            if resource.ended is None:
                resource.end(now, "cancelled")
                self._count("kubernetes:cancelled", 1)
            if not resource.collected:
                gone.append(resource)
        if gone:
            self._k8s_collect(gone)
        if now - self._k8s_compacted >= 5.0:
            self._k8s_compacted = now
            self._k8s_compact()

    def _k8s_compact(self) -> None:
        """Forget deleted objects for good (as etcd compaction does): kmock's lists walk every object it kept."""
        assert self.cluster is not None
        handler = self.cluster.handler

        def compact() -> int:
            dead = [
                key
                for key, obj in list(handler.objects.items())
                if key[0] in (JOBS, PODS, SECRETS) and key[1] == self.config.k8s_namespace and obj.deleted
            ]
            for key in dead:
                del handler.objects[key]
            return len(dead)

        compacted: int = self.cluster.on_loop(compact)
        self._count("kubernetes:compacted", compacted)

    def _k8s_start_pod(self, resource: Resource) -> None:
        """The Job controller's pod for the Job, then the kubelet's ``Running``."""
        assert self.cluster is not None
        cluster = self.cluster
        handler = cluster.handler
        namespace = self.config.k8s_namespace
        name = f"{resource.name}-{uuid.uuid4().hex[:5]}"
        template = resource.template
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels |= {
            "batch.kubernetes.io/job-name": resource.name,
            "job-name": resource.name,
            "batch.kubernetes.io/controller-uid": resource.uid,
        }
        started = _stamp(datetime.now(UTC))

        def create() -> None:
            job_key = (JOBS, namespace, resource.name)
            if job_key not in handler.objects or handler.objects[job_key].deleted:
                return
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": started,
                    "resourceVersion": str(cluster._next_version()),
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": resource.name,
                            "uid": resource.uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": template.get("spec") or {},
                "status": {
                    "phase": "Running",
                    "startTime": started,
                    "containerStatuses": [
                        {
                            "name": "worker",
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": started}},
                        }
                    ],
                },
            }
            key = (PODS, namespace, name)
            if key in handler.objects:
                handler.objects[key].create(body)
            else:
                handler.objects[key] = body
            handler.objects[job_key].patch({"status": {"active": 1, "startTime": started}})

        cluster.on_loop(create)
        resource.pod = name

    def _k8s_end(self, resource: Resource, *, succeeded: bool) -> None:
        """The pod ends (exit 0, or pushed off its node) and the Job controller marks the Job."""
        assert self.cluster is not None
        cluster = self.cluster
        handler = cluster.handler
        namespace = self.config.k8s_namespace
        now = _stamp(datetime.now(UTC))
        if succeeded:
            pod_status = {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "worker",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}},
                    }
                ],
            }
            job_status = {
                "active": 0,
                "succeeded": 1,
                "completionTime": now,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        else:
            pod_status = {
                "phase": "Failed",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "fp-storm: preempted by a higher-priority pod",
                        "lastTransitionTime": now,
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now}},
                    }
                ],
            }
            job_status = {
                "active": 0,
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": "Pod was disrupted",
                        "lastTransitionTime": now,
                    }
                ],
            }
        pod = resource.pod

        def end() -> None:
            job_key = (JOBS, namespace, resource.name)
            if job_key not in handler.objects or handler.objects[job_key].deleted:
                return
            if pod is not None and (PODS, namespace, pod) in handler.objects:
                obj = handler.objects[(PODS, namespace, pod)]
                if not obj.deleted:
                    obj.patch({"status": pod_status})
            handler.objects[job_key].patch({"status": job_status})

        cluster.on_loop(end)

    def _k8s_collect(self, gone: list[Resource]) -> None:
        """The garbage collector: a deleted Job's pod, and its Secret when the Job owned it."""
        assert self.cluster is not None
        handler = self.cluster.handler
        namespace = self.config.k8s_namespace

        def collect() -> int:
            removed = 0
            for resource in gone:
                if resource.pod is not None:
                    key = (PODS, namespace, resource.pod)
                    if key in handler.objects and not handler.objects[key].deleted:
                        handler.objects[key].delete()
                        removed += 1
                key = (SECRETS, namespace, resource.name)
                if key in handler.objects and not handler.objects[key].deleted:
                    owners = handler.objects[key].raw.get("metadata", {}).get("ownerReferences") or []
                    if any(o.get("kind") == "Job" and o.get("uid") == resource.uid for o in owners):
                        handler.objects[key].delete()
                        removed += 1
                resource.collected = True
            return removed

        removed: int = self.cluster.on_loop(collect)
        self._count("kubernetes:collected", removed)

    # -- what is there now, for the storm's final checks ----------------------------------------

    def inventory(self) -> list[dict[str, Any]]:
        """Every resource of this owner on the three backends now: backend, kind, name, attempt, task, state.

        ``live`` says whether it still runs or bills: an EC2 instance not
        terminated, any Azure VM (a stopped one is billed), NIC or disk, a
        Kubernetes Job (deleted by the control plane once its attempt ends),
        a Secret still holding a spec, or a pod still running.
        """
        found: list[dict[str, Any]] = []
        backend = self._aws()
        if backend is not None:
            for instance in self._aws_instances():
                tags = dict(backend.tags.get(instance.id) or {})
                if tags.get(LABEL_OWNER) != self.config.owner:
                    continue
                state = instance._state.name
                found.append(
                    {
                        "backend": "aws",
                        "kind": "instance",
                        "name": instance.id,
                        "attempt_id": tags.get(LABEL_ATTEMPT, ""),
                        "task_id": tags.get(LABEL_TASK, ""),
                        "state": state,
                        "live": state not in ("terminated", "shutting-down"),
                    }
                )
        if self.arm is not None:
            for vm in self.arm.vms():
                if vm.tags.get(AZURE_TAG_OWNER) != self.config.owner:
                    continue
                found.append(
                    {
                        "backend": "azure",
                        "kind": "vm",
                        "name": vm.name,
                        "attempt_id": vm.tags.get(AZURE_TAG_ATTEMPT, ""),
                        "task_id": vm.tags.get(AZURE_TAG_TASK, ""),
                        "state": f"{vm.provisioning_state}/{vm.power_state}",
                        "live": True,
                    }
                )
            vm_ids = {vm.id for vm in self.arm.vms()}
            for nic in self.arm.nics():
                if not nic.virtual_machine or nic.virtual_machine not in vm_ids:
                    found.append(_loose("nic", nic.name))
            for disk in self.arm.disks():
                if not disk.managed_by or disk.managed_by not in vm_ids:
                    found.append(_loose("disk", disk.name))
        if self.cluster is not None:
            handler = self.cluster.handler
            owner = self.config.owner

            def collect() -> list[dict[str, Any]]:
                rows = []
                for (resource, _ns, name), obj in list(handler.objects.items()):
                    if obj.deleted or resource not in (JOBS, SECRETS, PODS):
                        continue
                    raw = obj.raw
                    labels = raw.get("metadata", {}).get("labels") or {}
                    if labels.get(LABEL_OWNER) != owner:
                        continue
                    kind = {JOBS: "job", SECRETS: "secret", PODS: "pod"}[resource]
                    phase = (raw.get("status") or {}).get("phase", "")
                    rows.append(
                        {
                            "backend": "kubernetes",
                            "kind": kind,
                            "name": name,
                            "attempt_id": str(labels.get(LABEL_ATTEMPT, "")),
                            "task_id": str(labels.get(LABEL_TASK, "")),
                            "state": phase or ("deleting" if raw.get("metadata", {}).get("deletionTimestamp") else ""),
                            "live": kind != "pod" or phase in ("Running", "Pending"),
                        }
                    )
                return rows

            found.extend(self.cluster.on_loop(collect))
        return found

    def snapshot(self) -> list[Resource]:
        with self._lock:
            return list(self.resources.values())


def _azure_key(resource: Resource) -> tuple[str, str]:
    group, name, _ = resource.key.split("/", 2)
    return group, name


def _loose(kind: str, name: str) -> dict[str, Any]:
    return {
        "backend": "azure",
        "kind": kind,
        "name": name,
        "attempt_id": "",
        "task_id": "",
        "state": "detached",
        "live": True,
    }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The stub workers' ledger lines (tests/support/stub_worker.py), skipping a torn last line."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows
