"""Hot reload: keep :class:`ActivePolicy` current from Consul (blocking queries) or from files (polling).

A new version is validated as a whole (base and every overlay), recorded
(``on_applied``: the store keeps each document and the application with its
ModifyIndex) and only then swapped in. Anything else (Consul unreachable,
a document that is not JSON or not valid, the store refusing the record)
keeps the last good set in force and says why: a log event, the
``fusionplane_policy_reloads{outcome}`` counter, the source gauge, and
``ActivePolicy.status()`` behind /readyz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controlplane.domain import SettingsCheck
from controlplane.policy.model import PolicyError
from controlplane.policy.seed import NO_SEED_CLOUDS, SeedClouds
from controlplane.policy_sources.active import ActivePolicy, PolicyDocuments, PolicySet, build_policy_set
from controlplane.policy_sources.consul_source import ConsulPolicySource
from controlplane.policy_sources.sources import FilePolicySource

if TYPE_CHECKING:
    from controlplane.metrics import Metrics

__all__ = ["CONSUL_WAIT_S", "FILE_POLL_S", "PolicyWatcher"]

log = logging.getLogger("fusionplane.policy")

#: the blocking query's wait: a change answers at once; this only bounds how long shutdown waits
CONSUL_WAIT_S = 5.0
#: how often the file source checks ``stat``
FILE_POLL_S = 0.5
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.25, 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolicyWatcher:
    """One daemon thread per control plane; :meth:`stop` ends it within one wait."""

    def __init__(
        self,
        *,
        active: ActivePolicy,
        source: ConsulPolicySource | FilePolicySource,
        on_applied: Callable[[PolicySet], None],
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
        consul_wait_s: float = CONSUL_WAIT_S,
        file_poll_s: float = FILE_POLL_S,
        seed_clouds: SeedClouds = NO_SEED_CLOUDS,
        check_settings: SettingsCheck | None = None,
    ) -> None:
        self.active, self.source, self.on_applied = active, source, on_applied
        self.seed_clouds = seed_clouds
        #: the providers' settings models (this package may not import them): a bad setting refuses a reload
        self.check_settings = check_settings
        self.metrics, self.clock = metrics, clock
        self.consul_wait_s, self.file_poll_s = consul_wait_s, file_poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index: int | None = None
        self._fingerprint: Any = None
        self._backoff = _BACKOFF_FIRST_S
        self._reachable = True

    # -- lifecycle -------------------------------------------------------------
    def prime(self, index: int) -> None:
        """Start blocking from ``index`` (the start-up read's X-Consul-Index)."""
        self._index = max(index, 1)

    def start(self) -> None:
        if isinstance(self.source, FilePolicySource):
            # the file as it is now was loaded at start-up; only later edits count
            self._fingerprint = self.source.fingerprint()
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.consul_wait_s + 10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                waited = self.check_once()
            except Exception:  # the watcher must outlive any bug in one round
                log.exception("", extra={"event": "policy.watch_error"})
                waited = False
            if not waited:
                self._stop.wait(self.file_poll_s if isinstance(self.source, FilePolicySource) else self._backoff)

    # -- one round ---------------------------------------------------------------
    def check_once(self) -> bool:
        """Look once (a blocking read for Consul); returns True when the round itself waited."""
        if isinstance(self.source, FilePolicySource):
            self._check_files(self.source)
            return False
        return self._check_consul(self.source)

    def _check_files(self, source: FilePolicySource) -> None:
        fingerprint = source.fingerprint()
        if fingerprint == self._fingerprint:
            return
        try:
            documents = source.read()
        except (OSError, PolicyError) as exc:
            self._fingerprint = fingerprint
            self._refuse("invalid" if isinstance(exc, PolicyError) else "unreachable", str(exc), reachable=True)
            return
        if self._consider(documents):
            self._fingerprint = fingerprint

    def _check_consul(self, source: ConsulPolicySource) -> bool:
        started = time.monotonic()
        try:
            read = source.read(index=self._index, wait_s=self.consul_wait_s)
        except Exception as exc:  # requests / consul errors: the source is down, not the control plane
            self._unreachable(f"consul unreachable: {type(exc).__name__}: {exc}")
            return False
        self._backoff = _BACKOFF_FIRST_S
        if not self._reachable:
            self._reachable = True
            self._set_source_up(True)
            self.active.source_ok()
            log.info("", extra={"event": "policy.source_back", "source": source.name})
        if self._index is not None and read.index < self._index:
            # Consul's index went backwards (restored or rebuilt server): start over, as its docs advise
            self._index = None
            return False
        changed = self._index is None or read.index != self._index
        self._index = max(read.index, 1)
        if not changed:
            return True
        waited = time.monotonic() - started > 0.05
        if read.error is not None:
            self._refuse("invalid", f"{source.key} (index {read.modify_index}): {read.error}", reachable=True)
        elif read.documents is None:
            self._refuse("invalid", f"{source.key} does not exist in Consul", reachable=True)
        elif not self._consider(read.documents):
            self._index = None  # could not record it: read again after a pause
            return False
        return waited

    def _consider(self, documents: PolicyDocuments) -> bool:
        """Validate, record and swap; False only when recording failed (worth retrying)."""
        try:
            policies = build_policy_set(documents, seed_clouds=self.seed_clouds, check_settings=self.check_settings)
        except PolicyError as exc:
            self._refuse("invalid", str(exc), reachable=True)
            return True
        current = self.active.current()
        same = (
            policies.version == current.version
            and dict(policies.overlays) == dict(current.overlays)
            and policies.modify_index == current.modify_index
        )
        if same:
            self.active.apply(current, at=self.clock())  # clears an error left by a version since fixed
            self._count("unchanged")
            return True
        try:
            self.on_applied(policies)
        except Exception as exc:  # the store is down: do not run a version that no receipt could resolve
            self._refuse("record_failed", f"could not record policy {policies.version[:12]}: {exc}", reachable=True)
            return False
        now = self.clock()
        self.active.apply(policies, at=now)
        self._count("applied")
        if self.metrics is not None:
            self.metrics.policy_applied_timestamp.set(now.timestamp())
        log.info(
            "",
            extra={
                "event": "policy.applied",
                "version": policies.version,
                "source": policies.source,
                "modify_index": policies.modify_index,
                "tenants": sorted(policies.overlays),
                "previous_version": current.version,
            },
        )
        return True

    # -- reporting ---------------------------------------------------------------
    def _refuse(self, outcome: str, reason: str, *, reachable: bool) -> None:
        self.active.source_failed(reason, at=self.clock(), reachable=reachable)
        self._count(outcome)
        log.warning(
            "",
            extra={
                "event": "policy.rejected" if outcome == "invalid" else "policy.not_applied",
                "outcome": outcome,
                "reason": reason,
                "kept_version": self.active.current().version,
            },
        )

    def _unreachable(self, reason: str) -> None:
        self._count("unreachable")
        self._index = None  # when Consul answers again, read at once instead of blocking on the old index
        if self._reachable:  # log the change, not every retry
            self._reachable = False
            self._set_source_up(False)
            self.active.source_failed(reason, at=self.clock(), reachable=False)
            log.warning(
                "",
                extra={
                    "event": "policy.source_down",
                    "reason": reason,
                    "kept_version": self.active.current().version,
                },
            )
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.policy_reloads.labels(outcome=outcome).inc()

    def _set_source_up(self, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.policy_source_up.set(1 if up else 0)
