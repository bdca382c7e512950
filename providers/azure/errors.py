"""ARM's answers in the domain's taxonomy, at the boundary."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

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

if TYPE_CHECKING:
    pass


CAPACITY_CODES = frozenset(
    code.lower()
    for code in (
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    )
)

#: where an operator looks when ARM answers 401/403
ACCESS_CHECK = (
    "the control plane's Azure credential (its tenant) and its role assignments on this target's "
    "subscription and resource group, and join rights on its subnet (and NSG)"
)


def fate_unknown(exc: AzureError) -> bool:
    """Whether a failed PUT may still have created the VM (no answer, or a server error)."""
    if isinstance(exc, HttpResponseError) and not isinstance(exc, ClientAuthenticationError):
        return exc.status_code is not None and exc.status_code >= 500
    return isinstance(exc, ServiceRequestError | ServiceResponseError)


def error_of(exc: HttpResponseError) -> tuple[str, str]:
    """ARM's ``error.code`` and ``error.message`` (from the SDK's parsed model, else the body)."""
    code = getattr(exc.error, "code", None) if exc.error is not None else None
    message = getattr(exc.error, "message", None) if exc.error is not None else None
    if not code and exc.response is not None:
        with contextlib.suppress(Exception):  # an HTML error page or no body at all
            response: Any = exc.response  # typed as the common base, which lacks json()
            error = response.json().get("error") or {}
            code, message = error.get("code"), error.get("message")
    return str(code or ""), str(message or exc.reason or exc.message or "")


def translate(exc: AzureError, what: str, place: str) -> ProviderError:
    """An SDK error as the domain's taxonomy (the module docstring's table)."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code, message = error_of(exc)
        text = f"{what}: {code or status}: {message}"
        lowered = code.lower()
        if status == 429:
            headers: Any = getattr(exc.response, "headers", None) or {}
            retry_after = headers.get("Retry-After")
            return Throttled(f"{text} (Retry-After: {retry_after or 'none'})", target=place)
        if status in (401, 403):
            return access_denied(what, f"{code or status}: {message}", target=place, check=ACCESS_CHECK)
        if lowered in CAPACITY_CODES:
            return InsufficientCapacity(text, target=place)
        if lowered == "spotpricegreaterthanprovidedmaxprice":
            return PriceTooHigh(text, target=place)
        if lowered in ("operationnotallowed", "quotaexceeded") and "quota" in message.lower():
            return QuotaExceeded(text, target=place)
        if status >= 500 or status == 409:
            return Unavailable(text, target=place)
        return InvalidSpec(text, target=place)
    if isinstance(exc, ClientAuthenticationError):
        # no HTTP status: the credential could not get a token (e.g. the managed identity endpoint
        # did not answer); that may pass, unlike a 401/403 from ARM itself
        return Unavailable(f"{what}: cannot get an Azure token: {exc.message}", target=place)
    return Unavailable(f"{what}: {type(exc).__name__}: {exc.message}", target=place)
