"""``/v1/webhooks/deliveries``: what was (or was not) told to submitters, and a retry for a failed delivery.

Tenant-scoped like the tasks: a submitter sees and retries its own tenant's
deliveries only (another tenant's reads as not found), operators and
admins see every tenant's. A retry puts a failed delivery back in the
outbox, due now, with a fresh retry window and the same event id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller, tenant_filter
from controlplane.api.errors import ApiError
from controlplane.store import Delivery, NotFound, StateMismatch, Store, list_deliveries, retry_delivery

__all__ = ["delivery_json", "webhook_router"]

_ID = r"^[A-Za-z0-9_]{1,64}$"
DeliveryState = Literal["pending", "delivering", "delivered", "failed"]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "tenant": delivery.tenant,
        "task_id": delivery.task_id,
        "type": delivery.kind,
        "url": delivery.url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "created_at": _time(delivery.created_at),
        "delivered_at": _time(delivery.delivered_at),
    }


def webhook_router(*, store: Store) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.get(
        "/v1/webhooks/deliveries",
        responses=errors(
            *CALLER, 422, why={403: "A submitter asked for another tenant's deliveries, or a metrics token"}
        ),
    )
    def deliveries(
        principal: Caller,
        state: Annotated[DeliveryState | None, Query()] = None,
        task_id: Annotated[str | None, Query(pattern=_ID)] = None,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
        after: Annotated[str | None, Query(pattern=_ID, description="The next_after of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Webhook deliveries, newest first: pending, delivering, delivered or failed, with the last error."""
        tenant = tenant_filter(principal, tenant)
        found = list_deliveries(store, tenant=tenant, state=state, task_id=task_id, after_id=after, limit=limit)
        return {
            "deliveries": [delivery_json(d) for d in found],
            "next_after": found[-1].id if len(found) == limit else None,
        }

    @router.post(
        "/v1/webhooks/deliveries/{delivery_id}/retry",
        responses=errors(
            *CALLER,
            404,
            409,
            422,
            why={
                404: "No delivery with this id (or another tenant's)",
                409: "The delivery has not failed (it is pending, being delivered or delivered)",
            },
        ),
    )
    def retry(delivery_id: Annotated[str, Path(pattern=_ID)], principal: Caller) -> dict[str, Any]:
        """Send a failed delivery again: due now, a fresh retry window, the same event id."""
        tenant = None if principal.sees_all_tenants else principal.tenant
        try:
            delivery = retry_delivery(store, delivery_id, actor=f"api:{principal.name}", tenant=tenant)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"no webhook delivery {delivery_id}", field="delivery_id") from exc
        except StateMismatch as exc:
            raise ApiError(409, "invalid_state", f"the delivery is {exc.actual}, not failed", field="state") from exc
        return delivery_json(delivery)

    return router
