"""Request dependencies: who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from controlplane.api.auth import Principal, TokenRegistry
from controlplane.api.errors import ApiError

__all__ = ["DEV_PRINCIPAL", "Caller", "authenticate", "observer", "require_observer", "require_operator"]

#: who you are in ``--insecure-dev`` mode (loopback only)
DEV_PRINCIPAL = Principal(name="insecure-dev", tenant="dev", role="admin")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _unauthenticated() -> ApiError:
    return ApiError(401, "unauthenticated", "a valid bearer token is required", field="authorization")


def _principal(request: Request, token: str) -> Principal:
    registry: TokenRegistry = request.app.state.tokens
    principal = registry.authenticate(token)
    if principal is None:
        raise _unauthenticated()
    return principal


async def authenticate(request: Request) -> Principal:
    """The caller's principal for the API's routes, or 401; 403 for a ``metrics`` token.

    Async although it never awaits: FastAPI runs a plain ``def`` dependency
    in its thread pool, and a thread hop per request is most of what a
    token check would cost.
    """
    if request.app.state.insecure_dev:
        return DEV_PRINCIPAL
    token = _bearer(request)
    if token is None:
        raise _unauthenticated()
    principal = _principal(request, token)
    if not principal.uses_task_routes:
        # a scrape credential leaking must not read or submit anyone's tasks
        raise ApiError(403, "forbidden", "a metrics token reads /metrics and /readyz only", field="authorization")
    return principal


async def observer(request: Request) -> Principal | None:
    """For the operational endpoints: the caller's principal, None without a token, 401 for a bad one."""
    if request.app.state.insecure_dev:
        return DEV_PRINCIPAL
    token = _bearer(request)
    return None if token is None else _principal(request, token)


def require_observer(principal: Principal | None) -> Principal:
    """401 without a token, 403 unless the role may read metrics (metrics, operator, admin)."""
    if principal is None:
        raise _unauthenticated()
    if not principal.observes:
        raise ApiError(403, "forbidden", "metrics, operator or admin tokens only", field="authorization")
    return principal


def tenant_filter(principal: Principal, tenant: str | None) -> str | None:
    """The ``tenant`` a listing may filter on: anything for an operator; a submitter's own, named or not."""
    if principal.sees_all_tenants:
        return tenant
    if tenant not in (None, principal.tenant):
        raise ApiError(403, "forbidden", "submitters see their own tenant only", field="tenant")
    return principal.tenant


def require_operator(principal: Principal) -> None:
    if not principal.sees_all_tenants:
        raise ApiError(403, "forbidden", "operators only", field="authorization")


#: a route parameter that authenticates the caller (401 without a valid token)
Caller = Annotated[Principal, Depends(authenticate)]
