"""``POST /v1/tasks``: check a submission, then queue it through the group-commit writers.

Every local path a task names is its tenant's (``api/schemas.py``), every
remote one follows the fetch rules and the tenant's storage grant
(``api/remote_uris.py``); a retry with the same ``Idempotency-Key`` and body
gets the first answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from controlplane.api.contract import BAD_BODY, CALLER, errors
from controlplane.api.deps import Caller
from controlplane.api.errors import ApiError
from controlplane.api.input_content import check_local_content
from controlplane.api.notify_url import check_notify_url
from controlplane.api.remote_uris import HostResolver, RemoteRules, refuse_internal_names
from controlplane.api.schemas import FieldError, TaskCreate, check_input_uri, check_output_uri
from controlplane.api.submissions import SubmitQueue
from controlplane.api.task_file import TaskFileError, infer_kind, output_suffix, task_spec_from_request
from controlplane.api.views import NOTHING_SPENT, task_json
from controlplane.config import Settings
from controlplane.domain import TaskKind, TaskSpec
from controlplane.metrics import Metrics
from controlplane.policy.storage import StorageFile
from controlplane.policy.webhooks import WebhooksFile
from controlplane.store import IdempotencyConflict, NewTask, Store, new_id, task_costs
from faceswap.netguard import AllowedHosts

__all__ = ["SUBMIT_WRITERS_POSTGRES", "submit_router"]

_IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]{1,128}$"
#: concurrent group-commit writers on PostgreSQL (each holds one pooled connection)
SUBMIT_WRITERS_POSTGRES = 3


def _kind(body: TaskCreate) -> TaskKind:
    try:
        return infer_kind(body)
    except TaskFileError as exc:
        raise ApiError(422, "invalid", exc.message, field=exc.path) from exc


def _with_notify(spec: TaskSpec, body: TaskCreate, default_url: str | None) -> TaskSpec:
    """The task's own notify URL, else its tenant's default; the optional states only with a URL."""
    url = body.notify_url or default_url
    if url is None:
        return spec
    return dataclasses.replace(spec, notify_url=url, notify_events=tuple(body.notify_events))


def submit_router(
    *,
    settings: Settings,
    store: Store,
    metrics: Metrics,
    storage: StorageFile,
    resolve_host: HostResolver,
    webhooks: WebhooksFile | None = None,
) -> APIRouter:
    """The submission route and its group-commit queue; a task without notify_url gets its tenant's default."""
    router = APIRouter(tags=["tasks"])
    allowed_internal = AllowedHosts.parse(settings.fetch_allow_hosts)
    notify_allowed = AllowedHosts.parse(settings.webhooks.allow_hosts)
    timeout_s = settings.submit_resolve_timeout_s
    submit_queue = SubmitQueue(
        store,
        writers=SUBMIT_WRITERS_POSTGRES if store.engine.dialect.name == "postgresql" else 1,
        observe_batch=metrics.submit_batch_size.observe,
    )

    @router.post(
        "/v1/tasks",
        status_code=202,
        responses=errors(
            *CALLER,
            *BAD_BODY,
            409,
            why={
                403: "A metrics token",
                409: "This Idempotency-Key was used with another body (`task_id` names the first task)",
                422: "A value breaks a rule (`field` names it): a local path outside the tenant's input folder, "
                "an internal or unresolvable host, an s3:// or az:// prefix the tenant has no grant for, "
                "a notify_url to an internal address, ...",
            },
        ),
    )
    async def submit(
        body: TaskCreate,
        response: Response,
        principal: Caller,
        idempotency_key: Annotated[str | None, Header(pattern=_IDEMPOTENCY_KEY)] = None,
    ) -> dict[str, Any]:
        """Queue a face-swap task; 202 with its id and a Location header."""
        # Runs on the event loop: the checks below are pure, a realpath under
        # local roots or a read of a local input's first 4 KiB (host names are
        # resolved in the loop's thread pool; one key lookup only for a retry
        # whose output exists), and the write goes through the group-commit queue.
        kind = _kind(body)
        # every local path is the caller's own tenant's (operators and admins included: their principal's)
        tenant = principal.tenant
        remote = RemoteRules(access=storage.current().for_tenant(tenant).access(), allowed_internal=allowed_internal)
        roots = list(settings.input_roots)
        source = check_input_uri(body.source, field="source", input_roots=roots, tenant=tenant, remote=remote)
        target = check_input_uri(body.target, field="target", input_roots=roots, tenant=tenant, remote=remote)
        check_local_content(source, given=body.source, field="source", wanted=TaskKind.IMAGE.value)
        check_local_content(target, given=body.target, field="target", wanted=kind.value)
        if body.notify_url is not None:  # before the input names are resolved: a refusal costs no lookup
            await check_notify_url(body.notify_url, allowed=notify_allowed, resolver=resolve_host, timeout_s=timeout_s)
        inputs = {"source": source, "target": target}
        refused = await refuse_internal_names(inputs, rules=remote, resolver=resolve_host, timeout_s=timeout_s)
        for field, reason in refused.items():
            raise ApiError(422, "invalid", reason, field=field)
        # the hash covers what the caller sent, so a retry with the same body matches
        request_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        wanted_output = body.output or f"{tenant}/{new_id('out')}/swapped{output_suffix(body, kind)}"
        try:
            output = check_output_uri(
                wanted_output, field="output", output_root=settings.output_root, tenant=tenant, remote=remote
            )
        except FieldError:
            # a retry of a task that has written its output since gets the stored answer, not "already exists"
            earlier = store.task_for_key(tenant=tenant, idempotency_key=idempotency_key) if idempotency_key else None
            if earlier is None or earlier[1] != request_hash:
                raise
            metrics.submissions.labels(outcome="replayed").inc()
            response.headers["Location"] = f"/v1/tasks/{earlier[0].id}"
            return task_json(earlier[0], task_costs(store.engine, [earlier[0].id], now=store.now())[earlier[0].id])
        spec = task_spec_from_request(body, tenant=tenant, kind=kind, source=source, target=target, output=output)
        spec = _with_notify(spec, body, webhooks.current().for_tenant(tenant).url if webhooks else None)
        try:
            task, created = await submit_queue.submit(
                NewTask(spec=spec, request_hash=request_hash, idempotency_key=idempotency_key)
            )
        except IdempotencyConflict as exc:
            metrics.submissions.labels(outcome="conflict").inc()
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with another body",
                field="Idempotency-Key",
                task_id=exc.task_id,
            ) from exc
        metrics.submissions.labels(outcome="created" if created else "replayed").inc()
        response.headers["Location"] = f"/v1/tasks/{task.id}"
        # a replay may be of a task that has run since: its cost is read; a new one has spent nothing
        return task_json(
            task, task_costs(store.engine, [task.id], now=store.now())[task.id] if not created else NOTHING_SPENT
        )

    return router
