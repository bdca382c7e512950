"""Policy versions (each document stored once, by content) and policy applications (what took effect, when)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError

from controlplane.store.core import DEFAULT_PAGE_SIZE, StoreCore
from controlplane.store.errors import NotFound
from controlplane.store.records import PolicyApplication, PolicyVersion
from controlplane.store.tables import policy_applications, policy_versions

__all__ = [
    "find_policy_versions",
    "get_policy_version",
    "list_policy_applications",
    "list_policy_versions",
    "policy_version_of",
    "record_policy_application",
    "save_policy_version",
]


def policy_version_of(document: Mapping[str, Any]) -> str:
    """The version of a policy document: sha256 of its canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _policy_version(row: Row[Any]) -> PolicyVersion:
    return PolicyVersion(
        version=row.version,
        document=dict(row.document),
        created_at=row.created_at,
        created_by=row.created_by,
        source=row.source,
    )


def _has_policy_version(core: StoreCore, version: str) -> bool:
    with core.read() as conn:
        found = conn.execute(
            select(policy_versions.c.version).where(policy_versions.c.version == version)
        ).one_or_none()
    return found is not None


def save_policy_version(core: StoreCore, *, document: Mapping[str, Any], created_by: str, source: str) -> str:
    """Store a policy document once per content; returns its version (sha256)."""
    version = policy_version_of(document)
    if _has_policy_version(core, version):
        return version
    try:
        with core.write() as conn:
            conn.execute(
                insert(policy_versions).values(
                    version=version,
                    document=dict(document),
                    created_at=core.now(),
                    created_by=created_by,
                    source=source,
                )
            )
    except IntegrityError:
        if not _has_policy_version(core, version):
            raise
    return version


def get_policy_version(core: StoreCore, version: str) -> PolicyVersion:
    """A stored policy document, or :class:`NotFound`."""
    with core.read() as conn:
        row = conn.execute(select(policy_versions).where(policy_versions.c.version == version)).one_or_none()
    if row is None:
        raise NotFound("policy_version", version)
    return _policy_version(row)


def find_policy_versions(core: StoreCore, *, prefix: str, limit: int = 2) -> list[str]:
    """Versions starting with ``prefix`` (hex), for short version ids on the command line."""
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        return []
    with core.read() as conn:
        rows = conn.execute(
            select(policy_versions.c.version)
            .where(policy_versions.c.version.startswith(prefix, autoescape=True))
            .order_by(policy_versions.c.version)
            .limit(limit)
        ).all()
    return [r.version for r in rows]


def list_policy_versions(core: StoreCore, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyVersion]:
    """The newest stored policy versions first."""
    with core.read() as conn:
        rows = conn.execute(select(policy_versions).order_by(policy_versions.c.created_at.desc()).limit(limit)).all()
    return [_policy_version(r) for r in rows]


def record_policy_application(
    core: StoreCore,
    *,
    version: str,
    source: str,
    applied_by: str,
    modify_index: int | None = None,
    overlays: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Note that a policy took effect (its documents must already be saved); returns the row id."""
    with core.write() as conn:
        result = conn.execute(
            insert(policy_applications).values(
                applied_at=core.now(),
                applied_by=applied_by,
                source=source,
                modify_index=modify_index,
                version=version,
                overlays={tenant: dict(detail) for tenant, detail in (overlays or {}).items()},
            )
        )
        key = result.inserted_primary_key
    return int(key[0]) if key is not None else 0


def list_policy_applications(core: StoreCore, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyApplication]:
    """Newest first: every time a control plane switched policy."""
    with core.read() as conn:
        rows = conn.execute(
            select(policy_applications)
            .order_by(policy_applications.c.applied_at.desc(), policy_applications.c.id.desc())
            .limit(limit)
        ).all()
    return [
        PolicyApplication(
            id=int(r.id),
            applied_at=r.applied_at,
            applied_by=r.applied_by,
            source=r.source,
            modify_index=r.modify_index,
            version=r.version,
            overlays=dict(r.overlays),
        )
        for r in rows
    ]
