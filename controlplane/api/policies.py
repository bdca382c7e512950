"""Operator routes for the policy in force and its history (``fusionctl policy show|history|rollback``).

Consul holds the newest document; the store holds every version that took
effect and when, which Consul does not keep. These routes read the store
and the running control plane's :class:`ActivePolicy`; writing a policy
goes to Consul (or the file), never through here, so there is one place of
truth for "what should run".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import authenticate, require_operator
from controlplane.api.errors import ApiError
from controlplane.policy_sources import ActivePolicy
from controlplane.store import NotFound, PolicyApplication, Store

__all__ = ["policy_router", "application_json"]

Caller = Annotated[Principal, Depends(authenticate)]

_OPERATORS = "Operators and admins only"
#: what ``_resolve`` accepts: a whole sha256 or a prefix of 8+ (documented; ``_resolve`` says what is wrong)
_VERSION = r"^[0-9a-f]{8,64}$"


def application_json(row: PolicyApplication) -> dict[str, Any]:
    return {
        "id": row.id,
        "applied_at": row.applied_at.isoformat(),
        "applied_by": row.applied_by,
        "source": row.source,
        "modify_index": row.modify_index,
        "version": row.version,
        "tenants": dict(row.overlays),
    }


def policy_router(*, store: Store, active: ActivePolicy | None) -> APIRouter:
    """``GET /v1/policy`` (the policy in force) and the policy history."""
    router = APIRouter()

    @router.get(
        "/v1/policy",
        tags=["policy"],
        responses=errors(*CALLER, 404, why={403: _OPERATORS, 404: "This API is not attached to a running scheduler"}),
    )
    def policy_in_force(principal: Caller) -> dict[str, Any]:
        """The policy in force: version, source, Consul ModifyIndex, overlays, and whether it is up to date."""
        require_operator(principal)
        if active is None:
            raise ApiError(404, "not_found", "this API is not attached to a running scheduler", field="policy")
        status = active.status()
        status["document"] = dict(store.get_policy_version(status["version"]).document)
        return status

    @router.get("/v1/policy/history", tags=["policy"], responses=errors(*CALLER, 422, why={403: _OPERATORS}))
    def policy_history(principal: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        """Every policy that took effect, newest first."""
        require_operator(principal)
        return {"items": [application_json(row) for row in store.list_policy_applications(limit=limit)]}

    @router.get(
        "/v1/policy/versions/{version}",
        tags=["policy"],
        responses=errors(
            *CALLER,
            404,
            409,
            422,
            why={
                403: _OPERATORS,
                404: "No stored policy version is (or starts with) this",
                409: "More than one stored version starts with this prefix",
            },
        ),
    )
    def policy_version_document(
        version: Annotated[str, Path(json_schema_extra={"pattern": _VERSION})], principal: Caller
    ) -> dict[str, Any]:
        """A stored policy document by its sha256 (a receipt's ``policy_version``); a unique prefix of 8+ works."""
        require_operator(principal)
        try:
            found = store.get_policy_version(_resolve(store, version))
        except NotFound as exc:
            raise ApiError(404, "not_found", f"no policy version {version}", field="version") from exc
        return {
            "version": found.version,
            "created_at": found.created_at.isoformat(),
            "created_by": found.created_by,
            "source": found.source,
            "document": dict(found.document),
        }

    return router


def _resolve(store: Store, version: str) -> str:
    if len(version) < 8 or len(version) > 64 or any(c not in "0123456789abcdef" for c in version):
        raise ApiError(
            422, "invalid", "a version is 64 hex characters, or a unique prefix of at least 8", field="version"
        )
    if len(version) == 64:
        return version
    matches = store.find_policy_versions(prefix=version, limit=2)
    if len(matches) != 1:
        detail = "no policy version starts with" if not matches else "more than one policy version starts with"
        raise ApiError(
            404 if not matches else 409,
            "not_found" if not matches else "ambiguous",
            f"{detail} {version}",
            field="version",
        )
    return matches[0]
