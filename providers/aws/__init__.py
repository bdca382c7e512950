"""The AWS EC2 provider: one one-time Spot (or on-demand) instance per attempt, started from cloud-init user data.

The package: ``settings`` (the target's settings model, checked when a policy
is loaded and at launch), ``launch`` (the RunInstances request: offers and
shared parameters, pure), ``status`` (an instance's state as a
``BackendStatus``, pure), ``errors`` (EC2's answers in the domain's
taxonomy; the fail-fast client configuration) and ``provider`` (clients,
regions and the contract).

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
                 TagSpecifications=[instance and volume: task, attempt, owner ids, market + Name])

**Markets.** The candidate's ``market`` (the plan sets it from the target's
``market``; None is spot): ``spot`` sends ``InstanceMarketOptions`` as above;
``on-demand`` sends none (and so no ``MaxPrice``): EC2's default is an
on-demand instance. Everything else (offers, tokens, adopt, status, cancel,
the error mapping) is the same for both; the instance and its volumes are
tagged ``fusionplane.io/market`` with the market. An on-demand instance is
never interrupted, so the spot reasons below simply never occur for it.

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

from providers.aws.errors import ACCESS_CHECK, CAPACITY_CODES, PRICE_CODES, client_config, translate_error
from providers.aws.launch import client_token
from providers.aws.provider import AwsSpotProvider
from providers.aws.settings import AwsTargetSettings, validate_settings
from providers.aws.status import TAG_CANCELLED, backend_ref

__all__ = [
    "ACCESS_CHECK",
    "CAPACITY_CODES",
    "PRICE_CODES",
    "TAG_CANCELLED",
    "AwsTargetSettings",
    "AwsSpotProvider",
    "backend_ref",
    "client_config",
    "client_token",
    "translate_error",
    "validate_settings",
]
