"""``GET /v1/events``: task events as Server-Sent Events, for dashboards, the console and ``fusionctl tasks watch``.

The stream reads the task events table (the one ``/v1/tasks/{id}/events``
pages through), so it sees every transition, receipt and webhook outcome
in the order they were written. A submitter gets its own tenant's events,
an operator every tenant's; ``task_id`` narrows to one task. Each frame
carries the event id as the SSE ``id``: a client that reconnects with
``Last-Event-ID`` (EventSource does it on its own) resumes after the last
one it got. With neither that header nor ``after``, the stream starts at
the newest event (only what happens from now on).

Bounded: one read of at most 500 events per pass, a pass every half second
while quiet, a comment line as heartbeat when nothing was sent for a
while, and the stream ends after ``FUSIONPLANE_EVENTS_STREAM_S`` (the
client resumes where it was). On PostgreSQL an event is streamed once it
is a second old: a transaction that drew a smaller id may commit after a
larger one is visible, and the cursor must not pass it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller
from controlplane.api.views import event_json
from controlplane.domain import Task
from controlplane.store import Store, events_after

__all__ = ["event_stream_router"]

MAX_EVENT_ID = 2**63 - 1
#: events_after's page: a pass reads at most this many
_BATCH = 500
_QUIET_POLL_S = 0.5
#: how old an event must be before a PostgreSQL stream sends it (see the module docstring)
_SETTLE = timedelta(seconds=1)
_TASK_ID = r"^[A-Za-z0-9_]{1,64}$"
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: one frame per task event (id, event: its kind, data: its JSON)",
        # one SSE event, as clients (and schemathesis) parse the stream: data is the event's JSON (docs/api.md)
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "event": {"type": "string"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                    "required": ["id", "event", "data"],
                }
            }
        },
    }
}


def frame(event_id: int, kind: str, data: dict[str, Any]) -> str:
    """One SSE frame; the JSON is on one line, so no ``data:`` line ever needs splitting."""
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _event_id(header: str | None) -> int | None:
    """The id a reconnecting client sent; None for anything that is not one of ours (SSE: ignore it)."""
    if header is None or not header.isascii() or not header.isdigit() or len(header) > 18:
        return None
    return int(header)


def event_stream_router(
    *,
    store: Store,
    load: Callable[[str, Principal], Task],
    stream_seconds: float,
    heartbeat_seconds: float,
) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    async def frames(*, after: int, tenant: str | None, task_id: str | None) -> AsyncIterator[str]:
        cursor, ends = after, time.monotonic() + stream_seconds
        quiet_since = time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < ends:
            settled = store.now() - _SETTLE if store.postgres else None
            found = await run_in_threadpool(
                events_after,
                store,
                after_id=cursor,
                tenant=tenant,
                task_id=task_id,
                settled_before=settled,
                limit=_BATCH,
            )
            for event, owner in found:
                cursor = event.id
                yield frame(event.id, event.kind, {**event_json(event), "tenant": owner})
            if found:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat_seconds:
                quiet_since = time.monotonic()
                yield ": heartbeat\n\n"
            if len(found) < _BATCH:
                await asyncio.sleep(_QUIET_POLL_S)

    @router.get(
        "/v1/events",
        response_class=StreamingResponse,
        responses={
            **_STREAM,
            **errors(*CALLER, 404, 422, why={403: "task_id names another tenant's task", 404: "No task with this id"}),
        },
    )
    def stream(
        principal: Caller,
        task_id: Annotated[str | None, Query(pattern=_TASK_ID)] = None,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_EVENT_ID, description="Stream the events after this id")
        ] = None,
        last_event_id: Annotated[
            str | None, Header(max_length=64, description="The id of the last event received; others are ignored")
        ] = None,
    ) -> StreamingResponse:
        """Task events as they happen (Server-Sent Events), resumable with Last-Event-ID."""
        if task_id is not None:
            load(task_id, principal)  # 404 for a task the caller may not see
        resumed = _event_id(last_event_id)
        if resumed is not None:
            start = resumed
        elif after is not None:
            start = after
        else:
            start = store.last_event_id()
        tenant = None if principal.sees_all_tenants else principal.tenant
        return StreamingResponse(
            frames(after=start, tenant=tenant, task_id=task_id),
            media_type="text/event-stream",
            # no proxy may buffer a live stream
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
