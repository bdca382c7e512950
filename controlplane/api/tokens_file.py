"""The tokens file: read, check, and change it (create, revoke) without losing a concurrent change.

The file holds sha256 hashes only (``controlplane.api.auth`` describes the
format). Every read-modify-write holds an exclusive ``flock`` on a lock file
beside it (``tokens.json.lock``), so two ``fusionctl tokens`` commands at
once both land; the new content goes to a 0600 temporary file in the same
folder and replaces the old one with ``os.replace``, so a reader (the
running server) sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.domain import TENANT_RULE, is_tenant_name

__all__ = [
    "ROLES",
    "TokenEntry",
    "TokenError",
    "check_new_token",
    "create_token",
    "hash_token",
    "list_tokens",
    "read_tokens",
    "revoke_token",
    "short_id",
]

#: ``metrics`` reads ``/metrics`` and the ``/readyz`` detail, nothing else
ROLES = ("submitter", "operator", "admin", "metrics")
_TOKEN_PREFIX = "fp_"
_SHORT_ID = 8
_MAX_NAME = 128


class TokenError(ValueError):
    """The tokens file or a token request is unusable; ``field`` names what."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, kw_only=True)
class TokenEntry:
    """One token as ``fusionctl tokens list`` shows it: never the token, never the whole hash."""

    id: str
    name: str
    tenant: str
    role: str
    created_at: str
    #: why the server would refuse the file because of this entry ("" when none)
    problem: str = ""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def short_id(sha256: str) -> str:
    """The first 8 hex digits of a token's hash: enough to name it, useless to guess it."""
    return sha256[:_SHORT_ID]


def _document(path: Path) -> list[dict[str, Any]]:
    """The entries of ``path`` with the shape checked (objects with string fields); [] when absent."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TokenError(f"{path} cannot be read: {exc.strerror or exc}", field="tokens_file") from exc
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise TokenError(f"{path} is not readable JSON: {exc}", field="tokens_file") from exc
    entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TokenError(f'{path} needs a top-level "tokens" list', field="tokens_file")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenError("must be an object", field=f"tokens[{i}]")
        for key in ("tenant", "role", "sha256"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise TokenError("is required", field=f"tokens[{i}].{key}")
        for key in ("name", "created_at"):
            if not isinstance(entry.get(key, ""), str):
                raise TokenError("must be a string", field=f"tokens[{i}].{key}")
    return entries


def _problem(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) of what makes this entry unusable, or None."""
    if entry["role"] not in ROLES:
        return "role", f"must be one of {', '.join(ROLES)}"
    if not is_tenant_name(entry["tenant"]):
        return "tenant", f"{entry['tenant']!r} is not a tenant name ({TENANT_RULE})"
    digest = entry["sha256"]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return "sha256", "must be 64 lowercase hex digits"
    return None


def read_tokens(path: Path) -> list[dict[str, Any]]:
    """Every entry of ``path``, all valid, or :class:`TokenError` naming the first bad one."""
    entries = _document(path)
    for i, entry in enumerate(entries):
        problem = _problem(entry)
        if problem is not None:
            raise TokenError(problem[1], field=f"tokens[{i}].{problem[0]}")
    return entries


def _entry_view(entry: dict[str, Any]) -> TokenEntry:
    problem = _problem(entry)
    return TokenEntry(
        id=short_id(entry["sha256"]),
        name=str(entry.get("name", "")),
        tenant=entry["tenant"],
        role=entry["role"],
        created_at=str(entry.get("created_at", "")),
        problem=f"{problem[0]}: {problem[1]}" if problem else "",
    )


def list_tokens(path: Path) -> list[TokenEntry]:
    """The entries of ``path`` in file order, bad ones included (with their ``problem``) so they can be revoked."""
    return [_entry_view(entry) for entry in _document(path)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the tokens file's lock (``<file>.lock``, 0600) for one read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tokens.", dir=path.parent)  # 0600 from the start
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"tokens": entries}, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_new_token(*, tenant: str, role: str, name: str) -> None:
    """Refuse a bad ``tokens create`` request before anything is read or written."""
    if role not in ROLES:
        raise TokenError(f"must be one of {', '.join(ROLES)}", field="role")
    if not is_tenant_name(tenant):
        raise TokenError(f"{tenant!r} is not a tenant name ({TENANT_RULE})", field="tenant")
    if len(name) > _MAX_NAME or any(not c.isprintable() for c in name):
        raise TokenError(f"at most {_MAX_NAME} printable characters", field="name")


def create_token(path: Path, *, tenant: str, role: str, name: str = "") -> str:
    """Add a new token's hash to ``path`` (created 0600 if absent) and return the token, once."""
    check_new_token(tenant=tenant, role=role, name=name)
    with _locked(path):
        entries = read_tokens(path)  # a file the server would refuse is not made worse
        if name and any(entry.get("name") == name for entry in entries):
            raise TokenError(f"a token named {name!r} exists; names must be unique to revoke by", field="name")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        entries.append(
            {
                "name": name or f"{tenant}-{role}-{short_id(digest)}",
                "tenant": tenant,
                "role": role,
                "sha256": digest,
                "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        _write(path, entries)
    return token


def revoke_token(path: Path, *, name_or_id: str) -> TokenEntry:
    """Remove the one entry named ``name_or_id`` (its name or short id) and return what it was.

    :class:`TokenError` on ``name_or_id`` when nothing or more than one entry
    matches; the file is then unchanged.
    """
    wanted = name_or_id.strip()
    with _locked(path):
        entries = _document(path)  # a bad entry can be revoked: that is how it is fixed
        matches = [
            i
            for i, entry in enumerate(entries)
            if wanted and (entry.get("name") == wanted or short_id(entry["sha256"]) == wanted.lower())
        ]
        if not matches:
            raise TokenError(
                f"no token is named or has the id {name_or_id!r} (see fusionctl tokens list)", field="name_or_id"
            )
        if len(matches) > 1:
            ids = ", ".join(short_id(entries[i]["sha256"]) for i in matches)
            raise TokenError(
                f"{name_or_id!r} matches {len(matches)} tokens (ids {ids}); revoke one by its id", field="name_or_id"
            )
        removed = entries.pop(matches[0])
        _write(path, entries)
    return _entry_view(removed)
