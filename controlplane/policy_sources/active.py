"""The policy in force: a base document plus per-tenant overlays, swapped as one value.

:class:`PolicySet` is immutable; :class:`ActivePolicy` holds the current one
and the health of its source. A reload builds a whole new set and swaps a
single reference, so a planning batch that took the set keeps a consistent
view, and a bad document or an unreachable source leaves the last good set
in force.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.domain import SettingsCheck, Target
from controlplane.policy.checks import require_launchable
from controlplane.policy.model import Policy, PolicyError, policy_version
from controlplane.policy.overlay import apply_overlay
from controlplane.policy.parse import parse_policy
from controlplane.policy.seed import NO_SEED_CLOUDS, SeedClouds

__all__ = ["ActivePolicy", "PolicyDocuments", "PolicySet", "build_policy_set"]


@dataclass(frozen=True, kw_only=True)
class PolicyDocuments:
    """What a source read: the base document and each tenant's overlay, with where they came from."""

    base: Any
    overlays: Mapping[str, Any] = field(default_factory=dict)
    #: consul:KEY or file:PATH
    source: str
    #: Consul ModifyIndex of the base key (None for files)
    modify_index: int | None = None
    overlay_indexes: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PolicySet:
    """The base policy and the effective policy of every tenant that has an overlay."""

    base: Policy
    tenants: Mapping[str, Policy] = field(default_factory=dict)
    #: version -> document, for every effective policy (base included): what the store keeps
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "built-in"
    modify_index: int | None = None
    #: tenant -> {version, overlay_sha256, modify_index}
    overlays: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.base.version

    @property
    def targets(self) -> tuple[Target, ...]:
        """Overlays cannot add targets, so the base's are everyone's."""
        return self.base.targets

    def for_tenant(self, tenant: str) -> Policy:
        return self.tenants.get(tenant, self.base)


def build_policy_set(
    documents: PolicyDocuments, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS, check_settings: SettingsCheck | None = None
) -> PolicySet:
    """Validate everything a source read; one bad overlay refuses the whole change.

    All or nothing on purpose: applying the base without a tenant's overlay
    would silently move that tenant's work to where its operator said not to.
    A cloud target that cannot launch refuses the change too (overlays cannot
    add targets, so the base's are checked), and so does a setting of the
    wrong form when ``check_settings`` is given (the providers' settings
    models; the loaders pass them in). ``seed_clouds`` configures a seed
    form's built-in clouds.
    """
    try:
        base = parse_policy(documents.base, seed_clouds=seed_clouds)
        require_launchable(base, check_settings=check_settings)
    except PolicyError as exc:
        raise PolicyError(exc.path, f"{exc.message} (in {documents.source})") from exc
    assert isinstance(documents.base, dict)  # parse_policy accepted it
    tenants: dict[str, Policy] = {}
    kept: dict[str, Mapping[str, Any]] = {base.version: documents.base}
    overlays: dict[str, Mapping[str, Any]] = {}
    for tenant in sorted(documents.overlays):
        overlay = documents.overlays[tenant]
        try:
            merged, effective = apply_overlay(documents.base, overlay, tenant, seed_clouds=seed_clouds)
        except PolicyError as exc:
            raise PolicyError(exc.path, f"{exc.message} (in the overlay for tenant {tenant})") from exc
        tenants[tenant] = effective
        kept[effective.version] = merged
        overlays[tenant] = {
            "version": effective.version,
            "overlay_sha256": policy_version(overlay),
            "modify_index": documents.overlay_indexes.get(tenant),
        }
    return PolicySet(
        base=base,
        tenants=tenants,
        documents=kept,
        source=documents.source,
        modify_index=documents.modify_index,
        overlays=overlays,
    )


class ActivePolicy:
    """The current :class:`PolicySet` and what the source last said, for /readyz and metrics.

    Readers call :meth:`current` (a plain attribute read); the watcher thread
    calls :meth:`apply` and :meth:`source_failed`. The lock only orders
    writers and status reads; planning never waits on it.
    """

    def __init__(self, initial: PolicySet, *, applied_at: datetime) -> None:
        self._current = initial
        self._lock = threading.Lock()
        self._applied_at = applied_at
        self._error: str | None = None
        self._error_at: datetime | None = None
        self._source_up = True

    def current(self) -> PolicySet:
        return self._current

    def apply(self, policies: PolicySet, *, at: datetime) -> None:
        with self._lock:
            self._current = policies
            self._applied_at = at
            self._error = None
            self._error_at = None
            self._source_up = True

    def source_ok(self) -> None:
        """The source answers again; an error that was only its absence is over."""
        with self._lock:
            if not self._source_up:
                self._error = None
                self._error_at = None
            self._source_up = True

    def source_failed(self, reason: str, *, at: datetime, reachable: bool) -> None:
        """Keep the last good set; remember why the newest version was not applied."""
        with self._lock:
            self._error = reason
            self._error_at = at
            self._source_up = reachable

    def status(self) -> dict[str, Any]:
        with self._lock:
            current = self._current
            return {
                "version": current.version,
                "source": current.source,
                "modify_index": current.modify_index,
                "applied_at": self._applied_at.isoformat(),
                "tenants": {tenant: dict(detail) for tenant, detail in sorted(current.overlays.items())},
                "source_reachable": self._source_up,
                "last_error": self._error,
                "last_error_at": self._error_at.isoformat() if self._error_at else None,
                # a stale policy is still a valid one: the control plane stays ready, the detail says why
                "up_to_date": self._error is None,
            }
