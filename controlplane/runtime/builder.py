"""One control plane from one :class:`Settings`: the store, the policy in force, the pollers, the providers,
the scheduler with its jobs, and the API over them.

``fusionctl serve`` is :func:`build_runtime`, :meth:`Runtime.start`, the API
until interrupted, and :meth:`Runtime.stop`. Everything is built in the
order a failure should be reported in: settings, database, policy, storage
allow-lists, tokens, pollers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from controlplane.api.app import create_app
from controlplane.api.auth import TokenError, TokenRegistry
from controlplane.api.limits import BodyLimit
from controlplane.api.upload_state import read_state
from controlplane.config import Settings, is_loopback
from controlplane.dataplane.pvc_store import MOUNTS_VARIABLE
from controlplane.dataplane.stager import Stager
from controlplane.dataplane.stores import Stores, StoreSettings
from controlplane.domain.target_storage import TargetStorage
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.metrics import Metrics
from controlplane.policy import PolicyError
from controlplane.policy.storage import StorageError, StorageFile
from controlplane.policy.webhooks import WebhooksFile, WebhooksFileError
from controlplane.runtime.callbacks import callback_refusal
from controlplane.runtime.dev_token import DevToken, ensure_dev_token
from controlplane.runtime.jobs import leadership_and_jobs
from controlplane.runtime.policies import PolicyRuntime, start_policy_runtime
from controlplane.runtime.providers import cloud_providers, local_provider
from controlplane.runtime.signals import build_signal_hub, check_signal_schedules, pollers_json
from controlplane.scheduler import Scheduler
from controlplane.scheduler.leader import Leadership
from controlplane.scheduler.webhook_sender import WebhookSender
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.scheduler.workerspec import tenant_grants
from controlplane.signals.hub import SignalHub
from controlplane.store import Store, make_engine, upgrade
from faceswap.netguard import AllowedHosts
from providers.base import Provider
from providers.local import LocalProvider

log = logging.getLogger("fusionplane.runtime")

__all__ = ["Runtime", "StartupError", "build_runtime", "check_settings", "prepare_folders"]


class StartupError(Exception):
    """The control plane cannot start with these settings or files; the message says which and why.

    ``usage`` marks the operator's own setting (``serve`` exits 2, as for a
    bad flag) rather than a file or a service that failed (exit 1).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(kw_only=True)
class Runtime:
    """A built control plane, not yet running: :meth:`start` it, serve :attr:`asgi`, then :meth:`stop` it."""

    settings: Settings
    engine: Engine
    store: Store
    metrics: Metrics
    policies: PolicyRuntime
    hub: SignalHub
    local: LocalProvider
    providers: Mapping[str, Provider]
    scheduler: Scheduler
    leadership: Leadership
    jobs: BackgroundScheduler
    tokens: TokenRegistry
    #: the development admin token's file (None in insecure mode)
    dev_token: DevToken | None
    #: the ASGI app to serve: the API wrapped in the request-body limit
    asgi: BodyLimit

    def start(self) -> None:
        """Start the jobs and try for the leader lease (a lone replica leads at once)."""
        self.jobs.start()
        self.leadership.renew()  # otherwise it waits for the holder's lease

    def stop(self) -> None:
        """Stop the jobs (waiting for a running one), give the lease up, stop watching the policy and polling."""
        self.jobs.shutdown(wait=True)
        self.leadership.resign()
        self.policies.stop()
        self.hub.close()


def check_settings(settings: Settings) -> None:
    """Refuse (ValueError naming the setting) what ``serve`` must not start with, before anything is created."""
    settings.check()
    check_signal_schedules(settings.signals)  # FUSIONPLANE_SIGNALS_*: before anything is migrated or started


def prepare_folders(settings: Settings) -> None:
    """Create ``var/``, the outputs and the input roots; ``var/`` (database, tokens) readable by this user only."""
    for folder in (settings.var_dir, settings.output_root, *settings.input_roots):
        folder.mkdir(parents=True, exist_ok=True)
    # a var/ made by an older version (or by hand) may be 0755: it holds the database and tokens
    settings.var_dir.chmod(settings.var_dir.stat().st_mode & 0o700)


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Everything ``serve`` runs, from ``settings`` (see :func:`check_settings` and :func:`prepare_folders`).

    Raises :class:`StartupError` for a policy, allow-list, pvc mount, tokens
    file or poller setting it cannot start with.
    """
    engine = make_engine(settings.database_url or None)
    if migrate:
        upgrade(engine=engine)
    store = Store(engine)
    metrics = Metrics.create()
    scheduler_id = f"{socket.gethostname()}-{os.getpid()}"
    try:
        policies = start_policy_runtime(
            store=store,
            policy_file=settings.policy_file,
            applied_by=scheduler_id,
            metrics=metrics,
            seed_clouds=settings.seed_clouds,
            consul=settings.consul,
        )
    except (PolicyError, OSError) as exc:
        raise StartupError(f"policy: {exc}") from exc
    _check_callbacks(settings, policies)
    storage = _storage_allow_lists(settings)
    webhooks = _webhook_settings(settings)
    # one store (and SDK client) per service, shared by the stager, the output route and retention
    stores = _stores(settings)
    # an admin token minted on its own is a convenience for a developer's machine, not for a server that others
    # reach: off loopback (a container, a cluster) the operator creates every token (docs/operations.md)
    dev_token = None if settings.insecure_dev or not is_loopback(settings.host) else ensure_dev_token(settings)
    try:
        tokens = TokenRegistry.load(settings.tokens_file, metrics=metrics)
    except TokenError as exc:
        raise StartupError(f"tokens file {settings.tokens_file}: {exc}") from exc
    local = local_provider(settings)
    try:
        hub = build_signal_hub(store=store, policy=policies.current, metrics=metrics, settings=settings.signals)
    except ValueError as exc:  # a bad FUSIONPLANE_SIGNALS_* setting
        raise StartupError(str(exc), usage=True) from exc
    try:
        clouds = cloud_providers(lambda: policies.current().targets, clouds=settings.clouds)
    except ValueError as exc:  # FUSIONPLANE_MODELS_MANIFEST names a file the fill could not read
        raise StartupError(f"FUSIONPLANE_MODELS_MANIFEST: {exc}", usage=True) from exc
    providers: dict[str, Provider] = {"local": local, **clouds}
    storage_of = _storage_of(policies)
    scheduler = _scheduler(
        settings,
        store=store,
        metrics=metrics,
        hub=hub,
        policies=policies,
        providers=providers,
        storage=storage,
        scheduler_id=scheduler_id,
        stores=stores,
    )
    leadership, jobs = leadership_and_jobs(
        settings=settings,
        store=store,
        scheduler=scheduler,
        hub=hub,
        metrics=metrics,
        stores=stores,
        storage_of=storage_of,
        deliverer=_deliverer(settings, store=store, metrics=metrics, webhooks=webhooks, owner=scheduler_id),
    )

    asgi, _app = create_app(
        settings=settings,
        store=store,
        tokens=tokens,
        metrics=metrics,
        attempt_logs=_attempt_logs(local),
        active_policy=policies.active,
        live_signals=lambda: scheduler.snapshot(policies.current()),
        signal_pollers=lambda: pollers_json(hub),
        leader_status=leadership.status,
        storage=storage,
        stores=stores,
        storage_of=storage_of,
        webhooks=webhooks,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        store=store,
        metrics=metrics,
        policies=policies,
        hub=hub,
        local=local,
        providers=providers,
        scheduler=scheduler,
        leadership=leadership,
        jobs=jobs,
        tokens=tokens,
        dev_token=dev_token,
        asgi=asgi,
    )


def _storage_allow_lists(settings: Settings) -> StorageFile:
    try:
        return StorageFile(settings.storage_file)
    except (StorageError, OSError) as exc:
        raise StartupError(f"storage allow-lists: {exc}") from exc


def _attempt_logs(local: LocalProvider) -> Callable[[str], Path | None]:
    """An attempt's worker log file, when the local provider kept one."""

    def attempt_logs(attempt_id: str) -> Path | None:
        try:
            return local.logs(attempt_id)
        except FileNotFoundError:
            return None

    return attempt_logs


def _webhook_settings(settings: Settings) -> WebhooksFile:
    try:
        return WebhooksFile(settings.webhooks.file)
    except (WebhooksFileError, OSError) as exc:
        raise StartupError(f"webhooks file: {exc}") from exc


def _deliverer(
    settings: Settings, *, store: Store, metrics: Metrics, webhooks: WebhooksFile, owner: str
) -> WebhookDeliverer:
    delivery = settings.webhooks
    sender = WebhookSender(
        allowed=AllowedHosts.parse(delivery.allow_hosts),
        timeout_s=delivery.timeout_s,
        max_response_bytes=delivery.max_response_bytes,
    )
    return WebhookDeliverer(
        store,
        settings=delivery,
        secrets_of=lambda tenant: webhooks.current().for_tenant(tenant).secrets,
        sender=sender,
        metrics=metrics,
        owner=owner,
    )


def _check_callbacks(settings: Settings, policies: PolicyRuntime) -> None:
    """Refuse (or, allowed, warn loudly) when remote workers could not call back: see runtime/callbacks.py."""
    refusal = callback_refusal(settings.callback_base, policies.current().targets)
    if refusal is None:
        return
    if not settings.allow_loopback_callbacks:
        policies.stop()
        raise StartupError(refusal, usage=True)
    log.warning(
        "",
        extra={
            "event": "serve.loopback_callbacks",
            "callback_base": settings.callback_base,
            "detail": "allowed by --allow-loopback-callbacks: remote workers must reach this address some other way",
        },
    )


def _stores(settings: Settings) -> Stores:
    """The stores, with what they need of the settings; refuses a pvc mount that is not a folder here."""
    for claim, mount in settings.pvc_mounts.items():
        if not mount.is_dir():
            # a missing mount would only show when a launch stages into it; say it at start instead
            raise StartupError(f"{MOUNTS_VARIABLE}: {claim}={mount} is not a folder (is the claim mounted here?)")
    return Stores(
        StoreSettings(pvc_mounts=settings.pvc_mounts, azure_connection_string=settings.clouds.blob_connection_string)
    )


def uploaded_sha256(path: Path) -> str | None:
    """The sha256 a resumable upload checked when ``path`` (its finished file) completed, so the stager
    does not read a large video twice; None for any other file (the stager hashes it)."""
    if not path.parent.name.startswith("upl_"):
        return None
    state = read_state(path.parent)
    return state.sha256 if state is not None and state.filename == path.name else None


def _storage_of(policies: PolicyRuntime) -> Callable[[str, str], TargetStorage | None]:
    """A target's store as the tenant's policy in force names it (None: no store, or no such target)."""

    def storage_of(tenant: str, target: str) -> TargetStorage | None:
        named = policies.current().for_tenant(tenant).target(target)
        return named.storage if named is not None else None

    return storage_of


def _scheduler(
    settings: Settings,
    *,
    store: Store,
    metrics: Metrics,
    hub: SignalHub,
    policies: PolicyRuntime,
    providers: Mapping[str, Provider],
    storage: StorageFile,
    scheduler_id: str,
    stores: Stores,
) -> Scheduler:
    """The scheduler over the policy in force and the pollers' latest values; tasks confined to their folders."""
    checkpoint_root = (settings.var_dir / "checkpoints").resolve()
    folders = TenantStorage(
        input_roots=settings.input_roots, output_root=settings.output_root, checkpoint_root=checkpoint_root
    )
    return Scheduler(
        store=store,
        signals=hub.samples,
        policy=policies.current,
        providers=providers,
        callback_base=settings.callback_base,
        checkpoint_root=checkpoint_root,
        scheduler_id=scheduler_id,
        metrics=metrics,
        storage=folders,
        grants=tenant_grants(storage, settings),
        stager=Stager(stores=stores, recorded_sha256=uploaded_sha256, tenant_storage=folders, metrics=metrics),
    )
