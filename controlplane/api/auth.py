"""Bearer-token authentication against a tokens file that holds only hashes.

Tokens file (``--tokens-file``, default ``var/tokens.json``), mode 0600::

    {"tokens": [{"name": "ci", "tenant": "acme", "role": "submitter",
                 "sha256": "<hex of sha256(token)>", "created_at": "2026-11-24T16:00:00Z"}]}

A token is ``fp_`` + 43 url-safe characters (256 bits); it is printed once by
``fusionctl tokens create`` and never stored. Roles: ``submitter`` (own
tenant's tasks), ``operator`` (all tenants, decisions, policies), ``admin``
(operator + token and policy administration).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["ROLES", "Principal", "TokenError", "TokenRegistry", "create_token", "hash_token"]

ROLES = ("submitter", "operator", "admin")
_TOKEN_PREFIX = "fp_"


class TokenError(ValueError):
    """The tokens file or a token request is unusable; ``field`` names what."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant and role."""

    name: str
    tenant: str
    role: str

    @property
    def sees_all_tenants(self) -> bool:
        return self.role in ("operator", "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
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
        if entry["role"] not in ROLES:
            raise TokenError(f"must be one of {', '.join(ROLES)}", field=f"tokens[{i}].role")
    return entries


def create_token(path: Path, *, tenant: str, role: str, name: str = "") -> str:
    """Add a new token's hash to ``path`` (created 0600 if absent) and return the token, once."""
    if role not in ROLES:
        raise TokenError(f"must be one of {', '.join(ROLES)}", field="role")
    if not tenant or len(tenant) > 64 or not all(c.isalnum() or c in "-_." for c in tenant):
        raise TokenError("1-64 letters, digits, '-', '_' or '.'", field="tenant")
    entries = _read(path)
    token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
    entries.append(
        {
            "name": name or f"{tenant}-{role}-{len(entries) + 1}",
            "tenant": tenant,
            "role": role,
            "sha256": hash_token(token),
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokens.", dir=path.parent)  # 0600 from the start
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"tokens": entries}, handle, indent=2)
    os.replace(tmp, path)
    return token


class TokenRegistry:
    """Hashes loaded from the tokens file; looks a bearer token up in constant time."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._by_hash = {
            e["sha256"]: Principal(name=str(e.get("name", "")), tenant=e["tenant"], role=e["role"]) for e in entries
        }

    @classmethod
    def load(cls, path: Path) -> TokenRegistry:
        return cls(_read(path))

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None
