"""The FastAPI application: the routes of ``controlplane/api/*`` on one app, behind the body limit.

``create_app`` includes one APIRouter per group of routes and takes
everything it needs (store, token registry, settings); it starts nothing by
itself, so tests and ``fusionctl serve`` wire it the same way. The routes live with what they serve: ``tasks.py``,
``output_routes.py``, ``upload_routes.py``, ``callbacks.py`` (worker callbacks), ``health.py``,
``policies.py``, ``signals.py``, ``planning.py``, ``sim_reports.py`` (the simulator's reports) and
``console_routes.py`` (the operator console at ``/console/``, and ``/v1/whoami``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from controlplane import __version__
from controlplane.api.auth import TokenRegistry
from controlplane.api.callbacks import callback_router
from controlplane.api.console_routes import console_router
from controlplane.api.contract import with_one_error_shape
from controlplane.api.errors import install_error_handlers
from controlplane.api.health import health_router
from controlplane.api.limits import BodyLimit
from controlplane.api.output_routes import TargetStorageOf, output_router
from controlplane.api.planning import LiveSignals, PolicyFor, plan_router
from controlplane.api.policies import policy_router
from controlplane.api.remote_uris import HostResolver, system_host_resolver
from controlplane.api.request_metrics import RequestMetrics
from controlplane.api.signals import signal_router
from controlplane.api.sim_reports import sim_report_router
from controlplane.api.tasks import task_router
from controlplane.api.upload_routes import upload_router
from controlplane.api.webhooks import webhook_router
from controlplane.config import Settings
from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.stores import Stores
from controlplane.domain.target_storage import TargetStorage
from controlplane.metrics import Metrics
from controlplane.policy import Policy
from controlplane.policy.storage import StorageFile
from controlplane.policy.webhooks import WebhooksFile
from controlplane.policy_sources import ActivePolicy
from controlplane.store import Store
from controlplane.store.uploads import inputs_in_use

__all__ = ["create_app"]


def create_app(
    *,
    settings: Settings,
    store: Store,
    tokens: TokenRegistry,
    metrics: Metrics | None = None,
    attempt_logs: Callable[[str], Path | None] | None = None,
    policy_for: PolicyFor | None = None,
    live_signals: LiveSignals | None = None,
    active_policy: ActivePolicy | None = None,
    signal_pollers: Callable[[], list[dict[str, Any]]] | None = None,
    leader_status: Callable[[], dict[str, Any]] | None = None,
    storage: StorageFile | None = None,
    resolve_host: HostResolver = system_host_resolver,
    stores: Callable[[TargetStorage | str], ObjectStore] | None = None,
    storage_of: TargetStorageOf | None = None,
    webhooks: WebhooksFile | None = None,
) -> tuple[BodyLimit, FastAPI]:
    """The ASGI app to serve (FastAPI routes wrapped in the request-body limit) and the FastAPI app inside.

    ``attempt_logs`` maps an attempt id to its worker log file when the
    provider keeps one (the local provider does). ``active_policy`` is the
    running scheduler's policy in force (for /v1/policy and /readyz).
    ``storage`` is the per-tenant allow-lists in force (default: read from
    ``settings.storage_file``); ``resolve_host`` resolves input host names
    at submit time (tests hand in one that never leaves the machine).
    ``stores`` opens the object stores outputs are read from (default: a
    new :class:`~controlplane.dataplane.stores.Stores`); ``storage_of`` names a
    target's store (default: the active policy's targets). ``webhooks`` is
    the per-tenant webhook settings (a tenant's default ``notify_url``).
    """
    metrics = metrics or Metrics.create()
    app = FastAPI(
        title="FusionPlane",
        version=__version__,
        description="Place and run GPU face-swap tasks across private and cloud capacity.",
    )
    app.state.insecure_dev = settings.insecure_dev
    app.state.tokens = tokens
    app.state.store = store
    app.state.metrics = metrics
    install_error_handlers(app)
    # inside FastAPI so that the matched route's template is in the scope; a body refused by BodyLimit
    # (413) never reaches it
    app.add_middleware(RequestMetrics, metrics=metrics)
    if storage_of is None and active_policy is not None:
        policies = active_policy

        def storage_of(tenant: str, target: str) -> TargetStorage | None:
            named = policies.current().for_tenant(tenant).target(target)
            return named.storage if named is not None else None

    routers = [
        # before the task routes: the output is this router's, whoever else matches the path
        output_router(
            store=store,
            output_root=settings.output_root,
            stores=stores or Stores(),
            storage_of=storage_of,
            link_seconds=settings.output_link_seconds,
        ),
        task_router(
            settings=settings,
            store=store,
            metrics=metrics,
            storage=storage or StorageFile(settings.storage_file),
            resolve_host=resolve_host,
            attempt_logs=attempt_logs,
            webhooks=webhooks,
        ),
        upload_router(settings=settings, in_use=lambda: inputs_in_use(store)),
        callback_router(store=store, metrics=metrics),
        webhook_router(store=store),
        health_router(store=store, metrics=metrics, active_policy=active_policy, leader_status=leader_status),
        policy_router(store=store, active=active_policy),
        signal_router(
            store=store,
            snapshot=live_signals,
            pollers=signal_pollers,
            thresholds=(lambda: active_policy.current().base.thresholds) if active_policy is not None else None,
            local_targets=(lambda: _local_targets(active_policy)) if active_policy is not None else None,
        ),
    ]
    if policy_for is None and active_policy is not None:
        running = active_policy

        def policy_for(tenant: str) -> Policy:
            return running.current().for_tenant(tenant)

    routers.append(plan_router(settings=settings, policy_for=policy_for, live_signals=live_signals))
    routers.append(sim_report_router(reports_dir=settings.sim_reports_dir))
    routers.append(console_router())
    for router in routers:  # in this order: a path matched by two routes goes to the first
        app.include_router(router)
    with_one_error_shape(app)

    return BodyLimit(app, max_bytes=settings.max_body_bytes, unlimited_prefixes=("/v1/uploads/",)), app


def _local_targets(active: ActivePolicy) -> frozenset[str]:
    """The targets of the local provider in force: their capacity counts worker slots, not GPUs."""
    return frozenset(target.name for target in active.current().targets if target.provider == "local")
