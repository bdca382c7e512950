"""EC2's answers in the domain's taxonomy, and the fail-fast client configuration that gets them quickly."""

from __future__ import annotations

import botocore.config
import botocore.exceptions
from botocore.parsers import ResponseParserError

from controlplane.domain import (
    InsufficientCapacity,
    InvalidSpec,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Throttled,
    Unavailable,
)
from providers.bootstrap import (
    access_denied,
)

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
NOT_FOUND = "InvalidInstanceID.NotFound"
MISMATCH = "IdempotentParameterMismatch"

#: how much of EC2's own error message goes into ours
MESSAGE_CHARS = 300


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


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def error_code(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
    return str(error.get("Code") or "Unknown"), short(str(error.get("Message") or ""))


def translate_error(exc: Exception, *, target: str, where: str, history: tuple[str, ...] = ()) -> ProviderError:
    """The taxonomy error for an SDK exception (``where`` says which call, for the message)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = error_code(exc)
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
        return Unavailable(f"{where}: EC2 endpoint did not answer: {short(str(exc))}", target=target, history=history)
    return Unavailable(f"{where}: {type(exc).__name__}: {short(str(exc))}", target=target, history=history)


#: what the SDK raises for one call; everything else is a bug and propagates
SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ResponseParserError)
