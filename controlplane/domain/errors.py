"""Errors of the control plane's domain, and the provider failure taxonomy.

::

    DomainError
    ├── InvalidTransition          a task or attempt state change that is not allowed
    └── ProviderError              a backend said no; carries ``retryable`` and its failover history
        ├── InsufficientCapacity   no capacity of that shape there now      (retry elsewhere)
        ├── QuotaExceeded          an account limit (vCPU, spot count)      (retry elsewhere)
        ├── PriceTooHigh           the spot price is above the plan's max   (retry elsewhere)
        ├── Throttled              the API asked us to slow down            (retry later)
        ├── Unavailable            the API or cluster did not answer        (retry later)
        ├── Preempted              the capacity was taken back mid-run      (retry elsewhere)
        └── InvalidSpec            the request itself is wrong              (terminal)

Providers translate their SDK's errors into these at the boundary
(``raise InsufficientCapacity(...) from exc``); nothing above the providers
ever sees a botocore, Azure or Kubernetes exception.
"""

from __future__ import annotations

__all__ = [
    "DomainError",
    "InsufficientCapacity",
    "InvalidSpec",
    "InvalidTransition",
    "Preempted",
    "PriceTooHigh",
    "ProviderError",
    "QuotaExceeded",
    "Throttled",
    "Unavailable",
]


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidTransition(DomainError):
    """A state change the state machine does not allow (e.g. succeeded -> running)."""

    def __init__(self, kind: str, current: str, wanted: str) -> None:
        super().__init__(f"a {kind} in state {current!r} cannot become {wanted!r}")
        self.kind, self.current, self.wanted = kind, current, wanted


class ProviderError(DomainError):
    """A backend refused or lost work. ``retryable`` says whether another try may succeed."""

    retryable = True
    #: no room there for it now (capacity, the market price): time fixes this, not another try of the same work,
    #: so a launch refused only for this waits for room (bounded by the queue limit and the task's deadline)
    #: instead of spending one of the task's ``max_attempts`` (docs/reliability.md, "Refused launches")
    shortage = False
    #: short code stored in receipts and events
    code = "provider_error"

    def __init__(self, message: str, *, target: str = "", history: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        #: what was tried before this error, oldest first ("aws/us-east-1a/g4dn.xlarge: capacity")
        self.history = history


class InsufficientCapacity(ProviderError):
    """No capacity of the requested shape at that place right now."""

    shortage = True
    code = "insufficient_capacity"


class QuotaExceeded(ProviderError):
    """An account or subscription limit was hit."""

    code = "quota_exceeded"


class PriceTooHigh(ProviderError):
    """The market price is above the maximum the plan allows."""

    shortage = True
    code = "price_too_high"


class Throttled(ProviderError):
    """The provider's API is rate-limiting us."""

    code = "throttled"


class Unavailable(ProviderError):
    """The provider's API, cluster or host did not answer."""

    code = "unavailable"


class Preempted(ProviderError):
    """Running work was taken back (spot interruption, eviction, node loss)."""

    code = "preempted"


class InvalidSpec(ProviderError):
    """The launch request is wrong and will be wrong everywhere: never retried."""

    retryable = False
    code = "invalid_spec"
