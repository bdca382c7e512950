"""The control plane's policy at start-up and while it runs: which source, what to fall back on, what to record.

Start-up order, most authoritative first:

1. ``CONSUL_HTTP_ADDR`` set (``ConsulSettings``): the key in Consul (default ``fusionplane/policy``).
   Unreachable, missing or invalid there, the policy this database last
   applied (the last good one, as the store remembers it); with none, the
   policy file. The watcher keeps trying Consul and switches when it can.
2. Otherwise the policy file (``FUSIONPLANE_POLICY_FILE``, or the default
   shipped as package data of ``controlplane.policy_sources``, which in a
   checkout is ``policies/default.json``) with ``tenants/*.json`` overlays
   next to it, reloaded on change. An invalid file at start-up is an error: there is no
   last good policy to keep yet that the operator chose on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controlplane.config import ConsulSettings
from controlplane.metrics import Metrics
from controlplane.policy import PolicyError, parse_policy
from controlplane.policy.seed import NO_SEED_CLOUDS, SeedClouds
from controlplane.policy_sources import ActivePolicy, PolicySet, build_policy_set
from controlplane.policy_sources.consul_source import ConsulPolicySource, consul_client
from controlplane.policy_sources.sources import FilePolicySource
from controlplane.policy_sources.watch import CONSUL_WAIT_S, PolicyWatcher
from controlplane.store import NotFound, Store, utcnow
from providers.target_settings import check_target_settings

__all__ = ["PolicyRuntime", "record_policy_set", "start_policy_runtime"]

log = logging.getLogger("fusionplane.policy")

#: how long Consul may take to answer, beyond a blocking query's wait
CONSUL_ANSWER_S = 5.0


def record_policy_set(store: Store, policies: PolicySet, *, applied_by: str) -> None:
    """Keep every effective document (receipts name them) and note the application."""
    where = policies.source + (f"@{policies.modify_index}" if policies.modify_index is not None else "")
    for version, document in policies.documents.items():
        kind = "base" if version == policies.version else "overlay"
        store.save_policy_version(document=document, created_by=applied_by, source=f"{where} ({kind})")
    store.record_policy_application(
        version=policies.version,
        source=policies.source,
        applied_by=applied_by,
        modify_index=policies.modify_index,
        overlays=policies.overlays,
    )


def last_applied(store: Store, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS) -> PolicySet | None:
    """The policy set this database last applied, rebuilt from stored documents (None when there is none)."""
    rows = store.list_policy_applications(limit=1)
    if not rows:
        return None
    row = rows[0]
    try:
        base = parse_policy(store.get_policy_version(row.version).document, seed_clouds=seed_clouds)
        tenants = {
            tenant: parse_policy(store.get_policy_version(str(detail["version"])).document, seed_clouds=seed_clouds)
            for tenant, detail in row.overlays.items()
        }
    except (NotFound, PolicyError, KeyError) as exc:
        log.warning("", extra={"event": "policy.last_applied_unusable", "reason": str(exc)})
        return None
    return PolicySet(
        base=base,
        tenants=tenants,
        documents={},
        source=f"store:last-applied ({row.source})",
        modify_index=row.modify_index,
        overlays=row.overlays,
    )


@dataclass
class PolicyRuntime:
    active: ActivePolicy
    watcher: PolicyWatcher

    def current(self) -> PolicySet:
        return self.active.current()

    def stop(self) -> None:
        self.watcher.stop()


def start_policy_runtime(
    *,
    store: Store,
    policy_file: Path,
    applied_by: str,
    metrics: Metrics | None = None,
    now: datetime | None = None,
    consul_wait_s: float = CONSUL_WAIT_S,
    seed_clouds: SeedClouds = NO_SEED_CLOUDS,
    consul: ConsulSettings | None = None,
) -> PolicyRuntime:
    """Load the start-up policy, record it, and start watching its source.

    ``seed_clouds`` configures a seed form's built-in clouds and ``consul``
    the Consul source (both from :class:`controlplane.config.Settings`;
    ``consul`` None: this process's environment). Raises
    :class:`PolicyError` when no usable policy exists at all.
    """
    now = now or utcnow()
    consul = ConsulSettings.from_env() if consul is None else consul
    files = FilePolicySource(policy_file)

    def record(policies: PolicySet) -> None:
        record_policy_set(store, policies, applied_by=applied_by)

    if consul.configured:
        # py-consul adds a blocking query's wait (and 1/16) to this itself: a silent Consul costs the
        # start-up read CONSUL_ANSWER_S and a watch round consul_wait_s * 17/16 + CONSUL_ANSWER_S
        source = ConsulPolicySource(consul_client(token=consul.token, timeout_s=CONSUL_ANSWER_S), consul.policy_key)
        initial, problem, index = _from_consul(source, seed_clouds)
        if initial is None:
            initial = last_applied(store, seed_clouds=seed_clouds) or build_policy_set(
                files.read(), seed_clouds=seed_clouds, check_settings=check_target_settings
            )
            log.warning(
                "",
                extra={"event": "policy.consul_unavailable_at_start", "reason": problem, "using": initial.source},
            )
        watched: ConsulPolicySource | FilePolicySource = source
    else:
        initial = build_policy_set(files.read(), seed_clouds=seed_clouds, check_settings=check_target_settings)
        problem, index = None, None
        watched = files
    if initial.documents:
        record(initial)
    active = ActivePolicy(initial, applied_at=now)
    if problem is not None:
        active.source_failed(problem, at=now, reachable="unreachable" not in problem)
    if metrics is not None:
        metrics.policy_source_up.set(0 if problem and "unreachable" in problem else 1)
        metrics.policy_applied_timestamp.set(now.timestamp())
    watcher = PolicyWatcher(
        active=active,
        source=watched,
        on_applied=record,
        metrics=metrics,
        consul_wait_s=consul_wait_s,
        seed_clouds=seed_clouds,
        check_settings=check_target_settings,
    )
    if index is not None:
        watcher.prime(index)  # the first blocking query waits for the next change, not for what we just read
    watcher.start()
    log.info(
        "",
        extra={
            "event": "policy.started",
            "version": initial.version,
            "source": initial.source,
            "watching": watched.name,
            "modify_index": initial.modify_index,
        },
    )
    return PolicyRuntime(active=active, watcher=watcher)


def _from_consul(
    source: ConsulPolicySource, seed_clouds: SeedClouds
) -> tuple[PolicySet | None, str | None, int | None]:
    """(policy set, why not, X-Consul-Index of the read)."""
    try:
        read = source.read()
    except Exception as exc:  # requests / consul errors
        return None, f"consul unreachable: {type(exc).__name__}: {exc}", None
    if read.error is not None:
        return None, f"{source.key}: {read.error}", read.index
    if read.documents is None:
        return None, f"{source.key} does not exist in Consul", read.index
    try:
        return (
            build_policy_set(read.documents, seed_clouds=seed_clouds, check_settings=check_target_settings),
            None,
            read.index,
        )
    except PolicyError as exc:
        return None, str(exc), read.index
