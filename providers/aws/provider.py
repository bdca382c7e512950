"""The EC2 Spot provider: clients, regions and the provider contract over the pure modules."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from controlplane.domain import (
    Candidate,
    InsufficientCapacity,
    InvalidSpec,
    PriceTooHigh,
    ProviderError,
    Target,
    Unavailable,
)
from providers.aws.errors import (
    CAPACITY_CODES,
    MISMATCH,
    NOT_FOUND,
    PRICE_CODES,
    SDK_ERRORS,
    client_config,
    error_code,
    translate_error,
)
from providers.aws.launch import base_params, client_token, offers
from providers.aws.settings import validate_settings
from providers.aws.status import TAG_CANCELLED, Found, backend_ref, pick, status_of
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
    SelfShutdownGrace,
    WorkerImage,
    cloud_market,
)
from providers.common import ATTEMPT_ID, ClientCache, own_targets

#: instances list_owned reports: everything EC2 still holds (a terminated one costs nothing)
_OWNED_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
#: attempts whose region and instance id this process keeps in memory
_KNOWN_MAX = 10_000
#: DescribeInstances pages followed at most (a NextToken that never ends must not spin forever)
_MAX_PAGES = 100


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
        self._clients: ClientCache[str, Any] = ClientCache()
        #: attempt -> (region, instance id, monotonic launch time) for what this process launched or adopted
        self._known: dict[str, tuple[str, str, float]] = {}

    # -- clients and settings -----------------------------------------------------------------

    def client(self, region: str) -> Any:
        """The region's EC2 client, made once (boto3 clients are thread-safe; sessions are not)."""
        return self._clients.get(region, self._new_client)

    def _new_client(self, region: str) -> Any:
        return self._session.client("ec2", region_name=region, endpoint_url=self._endpoint_url, config=self._config)

    def close(self) -> None:
        for client in self._clients.close_all():
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()

    def _aws_targets(self) -> list[Target]:
        return own_targets(self._targets, self.name)

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
            chosen = pick(found)
            self._remember(request.attempt_id, chosen.region, chosen.instance_id)
            return LaunchResult(backend_ref=chosen.ref, adopted=True)

        base = base_params(request, target, region, image=self.image, owner=self.owner)
        tries = offers(request.candidate, target, region)
        client = self.client(region)
        history: list[str] = []
        refusals: list[str] = []
        for n, offer in enumerate(tries):
            params = dict(base, InstanceType=offer.instance_type, ClientToken=client_token(request.attempt_id, n))
            if offer.subnet_id is not None:
                params["SubnetId"] = offer.subnet_id
            elif offer.zone is not None:
                params["Placement"] = {"AvailabilityZone": offer.zone}
            try:
                answer = client.run_instances(**params)
            except SDK_ERRORS as exc:
                if isinstance(exc, botocore.exceptions.ClientError):
                    code, message = error_code(exc)
                    if code in CAPACITY_CODES or code in PRICE_CODES:
                        history.append(f"{offer.label(region)}: {code}" + (f" ({message})" if message else ""))
                        refusals.append(code)
                        continue
                    if code == MISMATCH:
                        return self._adopt_after_mismatch(request.attempt_id, region, where, tuple(history))
                raise translate_error(
                    exc, target=where, where=f"RunInstances {offer.label(region)}", history=tuple(history)
                ) from exc
            instance_id = str(answer["Instances"][0]["InstanceId"])
            self._remember(request.attempt_id, region, instance_id)
            return LaunchResult(backend_ref=backend_ref(region, instance_id), adopted=False)

        tried = "; ".join(history)
        market = cloud_market(request.candidate)
        message = f"no {market} offer of target {where} in {region} accepted attempt {request.attempt_id}: {tried}"
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
        return status_of(pick(found), self._self_shutdown)

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
            except SDK_ERRORS as exc:
                if isinstance(exc, botocore.exceptions.ClientError) and error_code(exc)[0] == NOT_FOUND:
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
                        state=status_of(found, self._self_shutdown).state,
                    )
                )
        return owned

    # -- launch parts -------------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> tuple[Target, str]:
        where = request.candidate.target
        if not ATTEMPT_ID.match(request.attempt_id):
            raise InvalidSpec(f"attempt id {request.attempt_id!r} is not a valid name", target=where)
        target = next((t for t in self._aws_targets() if t.name == where), None)
        if target is None:
            raise InvalidSpec(f"no aws target named {where!r} is configured", target=where)
        problems = validate_settings(target.settings)
        if problems:
            key, why = problems[0]
            raise InvalidSpec(f"target {where}: settings.{key} {why}", target=where)
        region = request.candidate.region or (target.regions[0] if target.regions else None)
        if not region:
            raise InvalidSpec(f"target {where}: no region to launch in", target=where)
        return target, region

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
        chosen = pick(found)
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

    def _describe(self, region: str, filters: list[dict[str, Any]], *, target: str) -> list[Found]:
        client = self.client(region)
        found: list[Found] = []
        kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": self._page_size}
        for _ in range(_MAX_PAGES):
            try:
                page = client.describe_instances(**kwargs)
            except SDK_ERRORS as exc:
                raise translate_error(exc, target=target, where=f"DescribeInstances in {region}") from exc
            for reservation in page.get("Reservations") or []:
                found += [Found(region, instance) for instance in reservation.get("Instances") or []]
            token = page.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token
        raise Unavailable(f"DescribeInstances in {region}: more than {_MAX_PAGES} pages", target=target)

    def _find_in(self, region: str, attempt_id: str, *, target: str) -> list[Found]:
        filters = [self._owner_filter(), {"Name": f"tag:{LABEL_ATTEMPT}", "Values": [attempt_id]}]
        return self._describe(region, filters, target=target)

    def _find(self, attempt_id: str) -> list[Found]:
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

    @property
    def self_shutdown_grace_s(self) -> float:
        return self._self_shutdown.grace_s
