"""Request dependencies: who is calling."""

from __future__ import annotations

from fastapi import Request

from controlplane.api.auth import Principal, TokenRegistry
from controlplane.api.errors import ApiError

__all__ = ["DEV_PRINCIPAL", "authenticate"]

#: who you are in ``--insecure-dev`` mode (loopback only)
DEV_PRINCIPAL = Principal(name="insecure-dev", tenant="dev", role="admin")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(request: Request) -> Principal:
    """The caller's principal, or 401 (with a WWW-Authenticate challenge).

    Async although it never awaits: FastAPI runs a plain ``def`` dependency
    in its thread pool, and a thread hop per request is most of what a
    token check would cost.
    """
    if request.app.state.insecure_dev:
        return DEV_PRINCIPAL
    token = _bearer(request)
    registry: TokenRegistry = request.app.state.tokens
    principal = registry.authenticate(token) if token else None
    if principal is None:
        raise ApiError(401, "unauthenticated", "a valid bearer token is required", field="authorization")
    return principal


def require_operator(principal: Principal) -> None:
    if not principal.sees_all_tenants:
        raise ApiError(403, "forbidden", "operators only", field="authorization")
