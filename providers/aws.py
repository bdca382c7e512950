"""The AWS EC2 Spot provider: one one-time Spot instance per attempt, started from cloud-init user data.

**Launch.** ``launch`` finds the target the candidate names, then calls
``RunInstances`` once per *offer* (instance type x subnet or zone) until EC2
accepts one::

    RunInstances(MinCount=1, MaxCount=1, InstanceType=..., ClientToken="<attempt>-<n>",
                 InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {
                     "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate",
                     "MaxPrice": "<candidate.max_price_usd_h>"}},          # omitted when None
                 InstanceInitiatedShutdownBehavior="terminate",
                 LaunchTemplate={...} | ImageId=..., IamInstanceProfile=..., SubnetId=... | Placement=...,
                 SecurityGroupIds=[...], UserData=cloud_init(spec, image, attempt_id=...),
                 MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 2, ...},
                 TagSpecifications=[instance and volume: task, attempt, owner ids + Name])

The offers are tried in order: the plan's instance type first, then the
target's other types; for each type the region's subnets (or zones) in the
order the settings list them. Only a per-offer refusal moves on
(``InsufficientInstanceCapacity``, ``InsufficientCapacity``,
``UnfulfillableCapacity``, ``Unsupported``, ``SpotMaxPriceTooLow``); every
other error (quota, throttling, a bad request, an endpoint that does not
answer) is the same for every offer and stops at once. Each try is recorded
in the error's message and ``history``.

**Idempotency.** Everything is keyed by the attempt id:

- the instance carries the tag ``fusionplane.io/attempt-id``; ``launch``
  first describes instances with that tag (and our owner tag) in the
  candidate's region and adopts what it finds, in any state (a finished or
  interrupted instance is that attempt's result: an attempt never runs twice);
- each try sends ``ClientToken = "<attempt id>-<n>"``, ``n`` the offer's
  place in the (deterministic) offer list. EC2 answers a repeated token with
  the instance it already started, which covers a crash right after
  ``RunInstances`` while ``DescribeInstances`` (eventually consistent) does
  not list the instance yet. One token per try because EC2 refuses a token
  reused with other parameters (``IdempotentParameterMismatch``); that error
  itself means "an instance for this try exists": the provider looks it up by
  tag and adopts it.

**Status** (of the newest live instance tagged with the attempt, in any region):

- ``pending`` -> PENDING; ``running`` -> RUNNING.
- ended (``shutting-down``, ``terminated``, ``stopping``, ``stopped``), by
  ``StateReason.Code``, first match wins:

  - ``Server.SpotInstanceTermination`` (or ``...Shutdown``) -> PREEMPTED: the
    spot interruption;
  - our ``fusionplane.io/cancelled`` tag -> FAILED "cancelled by FusionPlane";
  - ``Client.InstanceInitiatedShutdown`` -> RUNNING for
    ``self_shutdown_grace_s`` (default ``SELF_SHUTDOWN_GRACE_S``, 60 s),
    then LOST (see below; the same rule as Azure's);
  - ``Client.UserInitiatedShutdown`` -> FAILED "cancelled outside
    FusionPlane" (someone terminated it through the EC2 API or console);
  - ``Server.InsufficientInstanceCapacity`` -> PREEMPTED (capacity vanished
    at launch: worth a retry elsewhere);
  - any other ``Client.*`` -> FAILED (a launch-time fault of the request:
    volume limit, KMS key); any other ``Server.*`` or none -> LOST.

- no instance, every region answered -> LOST "unknown attempt" (an instance
  this process launched less than ``listing_grace_s`` ago is PENDING
  instead: ``DescribeInstances`` is eventually consistent).

*Why a self-shutdown is never SUCCEEDED or FAILED.* The VM powers off after
the container exits, and the container exits only after the worker's
``complete``/``fail`` callback is done (delivered, or given up after its
retries). So in every normal case the callback has already made the attempt
final, and the executor's ``follow`` never asks (or ``advance`` ignores what
it is told). EC2 cannot tell how the worker exited, so the provider applies
the rule every VM backend shares, :class:`providers.bootstrap.SelfShutdownGrace`:
RUNNING for the grace after it first sees the self-shutdown (a callback that
timed out on the worker's side may still be committing on the API's), then
LOST with ``SELF_SHUTDOWN_REASON``: the resource is gone and nobody reported
an outcome, which is exactly what happened, and the state meant to be
retried with the same checkpoint.

**Cancel** tags the instance ``fusionplane.io/cancelled=true`` (so that the
status says "cancelled" and not "terminated by someone"), then terminates
it. An instance already shutting down or terminated is left alone (its
``StateReason`` stays what it was: an interruption is not rewritten as a
cancel), and ``InvalidInstanceID.NotFound`` counts as done.

**Errors** are translated into :mod:`controlplane.domain.errors` by
:func:`translate_error` (table in docs/providers.md). ``UnauthorizedOperation``
is ``InvalidSpec`` worded by :func:`providers.bootstrap.access_denied`, as
Azure's 401/403 and Kubernetes' RBAC 403 are: the target's configuration or
the role's permissions, which no retry fixes. A status or cancel
that could not read every region raises instead of answering "unknown":
an attempt is never reported LOST because a region did not answer.

**Clients** are one per region, cached, with short timeouts and
``retries={"total_max_attempts": 2, "mode": "standard"}`` so that a dead
endpoint fails the launch within seconds and the executor moves on to the
next candidate (see :func:`client_config`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from botocore.parsers import ResponseParserError
from pydantic import ValidationError

from controlplane.domain import (
    Candidate,
    InsufficientCapacity,
    InvalidSpec,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Target,
    Throttled,
    Unavailable,
)
from controlplane.domain.worker_spec import WorkerSpec
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
    SELF_SHUTDOWN_GRACE_S,
    WORKER_IMAGE_KEY,
    SelfShutdownGrace,
    WorkerImage,
    access_denied,
    cloud_init,
    resource_name,
    resource_tags,
    worker_image,
)

__all__ = [
    "ACCESS_CHECK",
    "CAPACITY_CODES",
    "PRICE_CODES",
    "TAG_CANCELLED",
    "AwsSpotProvider",
    "backend_ref",
    "client_config",
    "client_token",
    "translate_error",
]

#: set by ``cancel`` before it terminates, so that status can tell our cancel from anyone else's
TAG_CANCELLED = "fusionplane.io/cancelled"

#: per-offer refusals: another instance type or zone may still work, so the launch moves on
CAPACITY_CODES = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientCapacity", "UnfulfillableCapacity", "Unsupported"}
)
PRICE_CODES = frozenset({"SpotMaxPriceTooLow"})
_QUOTA_CODES = frozenset({"MaxSpotInstanceCountExceeded", "VcpuLimitExceeded", "InstanceLimitExceeded"})
_THROTTLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "EC2ThrottledException", "TooManyRequestsException"}
)
# a request that is wrong and will be wrong on every retry (a bad AMI, subnet, template, permission)
_INVALID_PREFIXES = (
    "InvalidParameter",
    "InvalidAMIID.",
    "InvalidSubnet",
    "InvalidLaunchTemplate",
    "InvalidGroup.",
    "InvalidSecurityGroupID.",
    "MissingParameter",
)
#: the role may not do this with these resources: the target's configuration or IAM, never the task
_DENIED_CODES = frozenset({"UnauthorizedOperation"})
#: where an operator looks when EC2 says UnauthorizedOperation
ACCESS_CHECK = (
    "the IAM policy of the control plane's role for this target's resources "
    "(ec2:RunInstances on its subnets, security groups and launch template, iam:PassRole on its instance profile)"
)
_NOT_FOUND = "InvalidInstanceID.NotFound"
_MISMATCH = "IdempotentParameterMismatch"

_SPOT_REASONS = frozenset({"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"})
_SELF_SHUTDOWN = "Client.InstanceInitiatedShutdown"
_USER_SHUTDOWN = "Client.UserInitiatedShutdown"
_LAUNCH_CAPACITY = "Server.InsufficientInstanceCapacity"
_LIVE_STATES = ("pending", "running")
#: instances list_owned reports: everything EC2 still holds (a terminated one costs nothing)
_OWNED_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")

_ATTEMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: EC2's ClientToken is at most 64 ASCII characters
_TOKEN_MAX = 64
#: EC2's user data limit, before base64
_USER_DATA_MAX = 16 * 1024
#: how much of EC2's own error message goes into ours
_MESSAGE_CHARS = 300
#: attempts whose region and instance id this process keeps in memory
_KNOWN_MAX = 10_000
#: DescribeInstances pages followed at most (a NextToken that never ends must not spin forever)
_MAX_PAGES = 100


def client_config(*, connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0) -> botocore.config.Config:
    """The fail-fast EC2 client settings.

    botocore's defaults (60 s connect and read, legacy retries: 5 attempts)
    would hold one launch for minutes on a dead endpoint, while the executor
    could already be trying the next candidate. Two attempts in standard
    mode: one retry for a dropped connection or a single throttle, safe for
    ``RunInstances`` because the retry carries the same ``ClientToken``.
    (EC2 answers ``InsufficientInstanceCapacity`` with HTTP 500, which
    standard mode also retries once, after at most 50 ms, while the client's
    retry allowance lasts: accepted rather than a custom retry handler.)
    """
    if not (connect_timeout_s > 0 and read_timeout_s > 0):
        raise ValueError("timeouts must be positive")
    return botocore.config.Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": 2, "mode": "standard"},
        user_agent_extra="fusionplane-aws-provider",
    )


def client_token(attempt_id: str, n: int) -> str:
    """The ClientToken of the attempt's ``n``-th try: the same try always sends the same token."""
    token = f"{attempt_id}-{n}"
    if len(token) <= _TOKEN_MAX:
        return token
    # too long for EC2: a digest of the attempt id keeps it deterministic and unique
    return f"fp-{hashlib.sha256(attempt_id.encode()).hexdigest()[:48]}-{n}"


def backend_ref(region: str, instance_id: str) -> str:
    return f"aws:{region}:{instance_id}"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
    return str(error.get("Code") or "Unknown"), _short(str(error.get("Message") or ""))


def translate_error(exc: Exception, *, target: str, where: str, history: tuple[str, ...] = ()) -> ProviderError:
    """The taxonomy error for an SDK exception (``where`` says which call, for the message)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = _error_code(exc)
        text = f"{where}: {code}: {message}" if message else f"{where}: {code}"
        kind: type[ProviderError]
        if code in CAPACITY_CODES:
            kind = InsufficientCapacity
        elif code in PRICE_CODES:
            kind = PriceTooHigh
        elif code in _QUOTA_CODES:
            kind = QuotaExceeded
        elif code in _THROTTLE_CODES:
            kind = Throttled
        elif code in _DENIED_CODES:
            detail = f"{code}: {message}" if message else code
            return access_denied(where, detail, target=target, check=ACCESS_CHECK, history=history)
        elif code.startswith(_INVALID_PREFIXES):
            kind = InvalidSpec
        else:
            # credentials refused, an internal error, a code added after this was written: the API
            # did not do it, and it may well work later or elsewhere
            kind = Unavailable
        return kind(text, target=target, history=history)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return Unavailable(f"{where}: no usable AWS credentials: {exc}", target=target, history=history)
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    ):
        return Unavailable(f"{where}: EC2 endpoint did not answer: {_short(str(exc))}", target=target, history=history)
    return Unavailable(f"{where}: {type(exc).__name__}: {_short(str(exc))}", target=target, history=history)


#: what the SDK raises for one call; everything else is a bug and propagates
_SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ResponseParserError)


@dataclass(frozen=True)
class _Offer:
    instance_type: str
    subnet_id: str | None
    zone: str | None

    def label(self, region: str) -> str:
        return f"aws/{self.zone or self.subnet_id or region}/{self.instance_type}"


@dataclass(frozen=True)
class _Found:
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


def _regional(value: Any, region: str) -> Any:
    """A setting given once for all regions, or as ``{region: value}``."""
    if isinstance(value, Mapping):
        return value.get(region)
    return value


def _strings(value: Any, what: str, target: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise InvalidSpec(f"target settings.{what}: must be a string or a list of strings", target=target)


class AwsSpotProvider:
    """Launches one EC2 Spot instance per attempt (see the module docstring).

    The constructor has the shape of every provider's: ``targets`` are the
    policy's targets (or a function returning the current ones, so that a
    policy reload is seen); only ``provider == "aws"`` ones are used, and
    their settings are checked at launch (``InvalidSpec`` naming the key).
    ``image`` is the default worker image; a target's
    ``settings.worker_image`` overrides its image reference, and one of the
    two is required. ``owner`` is this control plane's identity, the
    ``fusionplane.io/owner`` tag every query filters on. ``regions``: extra
    regions to search for existing instances (a region dropped from the
    policy still holds attempts). ``price`` answers :meth:`quote`.
    ``endpoint_url`` is for tests and private endpoints; ``session`` for a
    non-default credential chain.
    """

    name = "aws"

    def __init__(
        self,
        targets: Iterable[Target] | Callable[[], Iterable[Target]],
        *,
        image: WorkerImage | None = None,
        owner: str,
        regions: Iterable[str] = (),
        price: Callable[[Candidate], Quote] | None = None,
        endpoint_url: str | None = None,
        session: Any = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        self_shutdown_grace_s: float = SELF_SHUTDOWN_GRACE_S,
        listing_grace_s: float = 120.0,
        page_size: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not owner:
            raise ValueError("owner must not be empty")
        if not 5 <= page_size <= 1000:
            raise ValueError("page_size must be within 5..1000 (DescribeInstances' MaxResults)")
        self._targets = targets if callable(targets) else tuple(targets)
        self.image = image
        self.owner = owner
        self._extra_regions = tuple(regions)
        self._price = price
        self._endpoint_url = endpoint_url
        self._session = session if session is not None else boto3.session.Session()
        self._config = client_config(connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
        self._self_shutdown = SelfShutdownGrace(self_shutdown_grace_s, monotonic=monotonic)
        self.listing_grace_s = listing_grace_s
        self._page_size = page_size
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        #: attempt -> (region, instance id, monotonic launch time) for what this process launched or adopted
        self._known: dict[str, tuple[str, str, float]] = {}

    # -- clients and settings -----------------------------------------------------------------

    def client(self, region: str) -> Any:
        """The region's EC2 client, made once (boto3 clients are thread-safe; sessions are not)."""
        with self._lock:
            existing = self._clients.get(region)
            if existing is None:
                existing = self._session.client(
                    "ec2", region_name=region, endpoint_url=self._endpoint_url, config=self._config
                )
                self._clients[region] = existing
            return existing

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()

    def _aws_targets(self) -> list[Target]:
        targets = self._targets() if callable(self._targets) else self._targets
        return [t for t in targets if t.provider == self.name]

    def _regions(self, first: str | None = None) -> list[str]:
        with self._lock:
            known = [region for region, _, _ in self._known.values()]
        ordered = [first] if first else []
        ordered += [r for t in self._aws_targets() for r in t.regions]
        ordered += [*self._extra_regions, *known]
        return list(dict.fromkeys(ordered))

    def _owner_filter(self) -> dict[str, Any]:
        return {"Name": f"tag:{LABEL_OWNER}", "Values": [self.owner]}

    # -- the contract -------------------------------------------------------------------------

    def capacity(self, target: Target) -> Capacity:
        """A cloud has no fixed slots: capacity shows itself only as a launch that succeeds or not."""
        return Capacity(free=None, total=None)

    def quote(self, candidate: Candidate) -> Quote:
        """The injected price function's answer; no price without one (prices are the signal hub's job)."""
        if self._price is None:
            return Quote(usd_per_hour=None)
        quote = self._price(candidate)
        value = quote.usd_per_hour
        if value is not None and not (math.isfinite(value) and value >= 0):
            return Quote(usd_per_hour=None)
        return quote

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Adopt the attempt's instance, or start one on the first offer EC2 accepts."""
        target, region = self._check(request)
        where = request.candidate.target
        found = self._find_in(region, request.attempt_id, target=where)
        if found:
            chosen = _pick(found)
            self._remember(request.attempt_id, chosen.region, chosen.instance_id)
            return LaunchResult(backend_ref=chosen.ref, adopted=True)

        base = self._base_params(request, target, region)
        offers = self._offers(request.candidate, target, region)
        client = self.client(region)
        history: list[str] = []
        refusals: list[str] = []
        for n, offer in enumerate(offers):
            params = dict(base, InstanceType=offer.instance_type, ClientToken=client_token(request.attempt_id, n))
            if offer.subnet_id is not None:
                params["SubnetId"] = offer.subnet_id
            elif offer.zone is not None:
                params["Placement"] = {"AvailabilityZone": offer.zone}
            try:
                answer = client.run_instances(**params)
            except _SDK_ERRORS as exc:
                if isinstance(exc, botocore.exceptions.ClientError):
                    code, message = _error_code(exc)
                    if code in CAPACITY_CODES or code in PRICE_CODES:
                        history.append(f"{offer.label(region)}: {code}" + (f" ({message})" if message else ""))
                        refusals.append(code)
                        continue
                    if code == _MISMATCH:
                        return self._adopt_after_mismatch(request.attempt_id, region, where, tuple(history))
                raise translate_error(
                    exc, target=where, where=f"RunInstances {offer.label(region)}", history=tuple(history)
                ) from exc
            instance_id = str(answer["Instances"][0]["InstanceId"])
            self._remember(request.attempt_id, region, instance_id)
            return LaunchResult(backend_ref=backend_ref(region, instance_id), adopted=False)

        tried = "; ".join(history)
        message = f"no spot offer of target {where} in {region} accepted attempt {request.attempt_id}: {tried}"
        # only price refusals: the plan's max price is the problem, not the cloud's capacity
        kind: type[ProviderError] = PriceTooHigh if set(refusals) <= PRICE_CODES else InsufficientCapacity
        raise kind(message, target=where, history=tuple(history))

    def status(self, attempt_id: str) -> BackendStatus:
        """Where the attempt's instance is (table in the module docstring)."""
        found = self._find(attempt_id)
        if not found:
            with self._lock:
                known = self._known.get(attempt_id)
            if known is not None:
                region, instance_id, launched = known
                if self._monotonic() - launched < self.listing_grace_s:
                    # DescribeInstances is eventually consistent: a fresh instance may not be listed yet
                    return BackendStatus(
                        state=BackendState.PENDING, reason=f"{instance_id} launched; EC2 does not list it yet"
                    )
                return BackendStatus(
                    state=BackendState.LOST, reason=f"instance {instance_id} in {region} is no longer listed by EC2"
                )
            return BackendStatus(
                state=BackendState.LOST,
                reason=f"unknown attempt: no instance tagged with it in {', '.join(self._regions()) or 'no region'}",
            )
        return self._status_of(_pick(found))

    def cancel(self, attempt_id: str) -> None:
        """Tag and terminate the attempt's instances; gone or already ending is success."""
        found = self._find(attempt_id)
        ids: dict[str, str] = {f.instance_id: f.region for f in found if f.state not in ("shutting-down", "terminated")}
        with self._lock:
            known = self._known.get(attempt_id)
        if known is not None and known[1] not in {f.instance_id for f in found}:
            ids[known[1]] = known[0]  # launched here but not listed yet: terminate it by id
        for instance_id, region in ids.items():
            client = self.client(region)
            try:
                client.create_tags(Resources=[instance_id], Tags=[{"Key": TAG_CANCELLED, "Value": "true"}])
                client.terminate_instances(InstanceIds=[instance_id])
            except _SDK_ERRORS as exc:
                if isinstance(exc, botocore.exceptions.ClientError) and _error_code(exc)[0] == _NOT_FOUND:
                    continue
                raise translate_error(exc, target=self.name, where=f"cancel {instance_id} in {region}") from exc

    def list_owned(self) -> list[OwnedResource]:
        """Every instance tagged with our owner, not yet terminated, in every region this provider knows."""
        owned: list[OwnedResource] = []
        filters = [self._owner_filter(), {"Name": "instance-state-name", "Values": list(_OWNED_STATES)}]
        for region in self._regions():
            for found in self._describe(region, filters, target=self.name):
                tags = found.tags
                attempt_id = tags.get(LABEL_ATTEMPT)
                if not attempt_id:
                    continue  # our owner tag without an attempt: not something launch made
                owned.append(
                    OwnedResource(
                        attempt_id=attempt_id,
                        task_id=tags.get(LABEL_TASK, ""),
                        backend_ref=found.ref,
                        state=self._status_of(found).state,
                    )
                )
        return owned

    # -- launch parts -------------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> tuple[Target, str]:
        where = request.candidate.target
        if not _ATTEMPT_ID.match(request.attempt_id):
            raise InvalidSpec(f"attempt id {request.attempt_id!r} is not a valid name", target=where)
        try:
            spec = WorkerSpec.model_validate(dict(request.worker_spec))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "worker_spec"
            raise InvalidSpec(f"worker_spec.{field}: {first['msg']}", target=where) from exc
        if spec.attempt_id != request.attempt_id:
            raise InvalidSpec("worker_spec.attempt_id: differs from the launch's attempt id", target=where)
        target = next((t for t in self._aws_targets() if t.name == where), None)
        if target is None:
            raise InvalidSpec(f"no aws target named {where!r} is configured", target=where)
        region = request.candidate.region or (target.regions[0] if target.regions else None)
        if not region:
            raise InvalidSpec(f"target {where}: no region to launch in", target=where)
        return target, region

    def _offers(self, candidate: Candidate, target: Target, region: str) -> list[_Offer]:
        where = target.name
        types = list(dict.fromkeys([t for t in (candidate.instance_type, *target.instance_types) if t]))
        if not types:
            raise InvalidSpec(f"target {where}: no instance type", target=where)
        settings = target.settings
        raw = settings.get("subnet_ids", settings.get("subnets"))
        if raw is not None and not isinstance(raw, Mapping) and len(target.regions) > 1:
            # a subnet belongs to one region: a plain list cannot serve several
            raise InvalidSpec(
                f"target {where}: settings.subnet_ids must map region -> subnets for a multi-region target",
                target=where,
            )
        subnets = _strings(_regional(raw, region), "subnet_ids", where)
        zones = [z for z in target.zones if z.startswith(region)]
        places: list[tuple[str | None, str | None]]
        if subnets:
            places = [(subnet, None) for subnet in subnets]
        elif zones:
            places = [(None, zone) for zone in zones]
        else:
            places = [(None, None)]  # EC2 picks a zone of the default VPC
        return [_Offer(instance_type, subnet, zone) for instance_type in types for subnet, zone in places]

    def _base_params(self, request: LaunchRequest, target: Target, region: str) -> dict[str, Any]:
        where, settings = target.name, target.settings
        image = worker_image(self.image, _regional(settings.get(WORKER_IMAGE_KEY), region), target=where)
        user_data = cloud_init(
            request.worker_spec, image, attempt_id=request.attempt_id, deadline_seconds=request.deadline_seconds
        )
        if len(user_data.encode()) > _USER_DATA_MAX:
            raise InvalidSpec(f"user data of {len(user_data.encode())} bytes is over EC2's 16 KiB", target=where)

        spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if request.candidate.max_price_usd_h is not None:
            spot["MaxPrice"] = str(request.candidate.max_price_usd_h)
        # ids only, never the spec or its token (anyone allowed DescribeInstances reads tags);
        # "aws:" keys are reserved by AWS and would fail the whole launch
        tags = {
            **{k: v for k, v in request.labels.items() if not k.startswith("aws:")},
            **resource_tags(task_id=request.task_id, attempt_id=request.attempt_id, owner=self.owner),
            "Name": resource_name("fusionplane", request.attempt_id, max_length=128),
        }
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        params: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": spot},
            # cloud-init powers off when the worker is done: that must end the bill, not park a stopped VM
            "InstanceInitiatedShutdownBehavior": "terminate",
            "UserData": user_data,
            # IMDSv2 only (no SSRF-style GET of the user data, which holds the token); hop limit 2 so
            # the container (one bridge hop away) still gets the instance profile's credentials
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        template = _regional(settings.get("launch_template"), region)
        image_id = _regional(settings.get("image_id"), region)
        if template is not None:
            if not isinstance(template, str) or not template:
                raise InvalidSpec(f"target {where}: settings.launch_template must be a name or an lt- id", target=where)
            version = str(settings.get("launch_template_version", "$Default"))
            key = "LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"
            params["LaunchTemplate"] = {key: template, "Version": version}
        elif image_id is None:
            raise InvalidSpec(f"target {where}: settings need launch_template or image_id", target=where)
        if image_id is not None:
            if not isinstance(image_id, str) or not image_id.startswith("ami-"):
                raise InvalidSpec(f"target {where}: settings.image_id must be an ami- id", target=where)
            params["ImageId"] = image_id
        profile = _regional(settings.get("iam_instance_profile"), region)
        if profile is not None:
            if not isinstance(profile, str) or not profile:
                raise InvalidSpec(f"target {where}: settings.iam_instance_profile must be a name or ARN", target=where)
            params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        groups = _strings(_regional(settings.get("security_group_ids"), region), "security_group_ids", where)
        if groups:
            params["SecurityGroupIds"] = groups
        return params

    def _adopt_after_mismatch(self, attempt_id: str, region: str, where: str, history: tuple[str, ...]) -> LaunchResult:
        # EC2 has an instance for this try's token, started with other parameters (another spec render
        # after a restart): it is this attempt's instance, so adopt it rather than start a second one
        found = self._find_in(region, attempt_id, target=where)
        if not found:
            raise Unavailable(
                f"attempt {attempt_id}: EC2 holds an instance for its ClientToken that it does not list yet",
                target=where,
                history=history,
            )
        chosen = _pick(found)
        self._remember(attempt_id, chosen.region, chosen.instance_id)
        return LaunchResult(backend_ref=chosen.ref, adopted=True)

    def _remember(self, attempt_id: str, region: str, instance_id: str) -> None:
        with self._lock:
            self._known.pop(attempt_id, None)
            self._known[attempt_id] = (region, instance_id, self._monotonic())
            if len(self._known) > _KNOWN_MAX:
                # only a hint (which region to ask first, an id to cancel while EC2 does not list it
                # yet): the oldest half goes, status then searches every region for those
                for old in list(self._known)[: _KNOWN_MAX // 2]:
                    del self._known[old]

    # -- finding instances --------------------------------------------------------------------

    def _describe(self, region: str, filters: list[dict[str, Any]], *, target: str) -> list[_Found]:
        client = self.client(region)
        found: list[_Found] = []
        kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": self._page_size}
        for _ in range(_MAX_PAGES):
            try:
                page = client.describe_instances(**kwargs)
            except _SDK_ERRORS as exc:
                raise translate_error(exc, target=target, where=f"DescribeInstances in {region}") from exc
            for reservation in page.get("Reservations") or []:
                found += [_Found(region, instance) for instance in reservation.get("Instances") or []]
            token = page.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token
        raise Unavailable(f"DescribeInstances in {region}: more than {_MAX_PAGES} pages", target=target)

    def _find_in(self, region: str, attempt_id: str, *, target: str) -> list[_Found]:
        filters = [self._owner_filter(), {"Name": f"tag:{LABEL_ATTEMPT}", "Values": [attempt_id]}]
        return self._describe(region, filters, target=target)

    def _find(self, attempt_id: str) -> list[_Found]:
        """The attempt's instances; raises when a region did not answer and no other one had them."""
        with self._lock:
            known = self._known.get(attempt_id)
        failure: ProviderError | None = None
        for region in self._regions(known[0] if known else None):
            try:
                found = self._find_in(region, attempt_id, target=self.name)
            except ProviderError as exc:
                failure = failure or exc
                continue
            if found:
                return found  # an attempt lives in one region
        if failure is not None:
            # "not found" is only true when every region said so
            raise failure
        return []

    # -- status -------------------------------------------------------------------------------

    def _status_of(self, found: _Found) -> BackendStatus:
        state = found.state
        if state == "pending":
            return BackendStatus(state=BackendState.PENDING)
        if state == "running":
            return BackendStatus(state=BackendState.RUNNING)
        reason = found.instance.get("StateReason") or {}
        code = str(reason.get("Code") or "")
        message = _short(str(reason.get("Message") or "")) or code
        where = f"instance {found.instance_id} {state}"
        if code in _SPOT_REASONS:
            return BackendStatus(state=BackendState.PREEMPTED, reason=f"spot interruption: {where} ({code})")
        if found.tags.get(TAG_CANCELLED) == "true":
            return BackendStatus(state=BackendState.FAILED, reason=f"cancelled by FusionPlane: {where}")
        if code == _SELF_SHUTDOWN:
            # keyed by instance id: the grace runs from this process' first sighting of that instance
            return self._self_shutdown.status(found.instance_id, where)
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

    @property
    def self_shutdown_grace_s(self) -> float:
        return self._self_shutdown.grace_s


def _pick(found: Sequence[_Found]) -> _Found:
    """One instance per attempt is the rule; should there be more, the live and newest one speaks."""

    def rank(item: _Found) -> tuple[int, float]:
        live = 2 if item.state in _LIVE_STATES else 1 if item.state in ("shutting-down", "stopping") else 0
        launched = item.instance.get("LaunchTime")
        return live, launched.timestamp() if isinstance(launched, datetime) else 0.0

    return max(found, key=rank)
