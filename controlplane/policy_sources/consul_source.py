"""Policies in Consul KV, through py-consul.

Layout under the configured key (default ``fusionplane/policy``)::

    fusionplane/policy                    the base policy document (JSON)
    fusionplane/policy/tenants/<tenant>   optional overlay for one tenant

One recursive read returns both, and its ``X-Consul-Index`` moves when any of
them changes, so a single blocking query watches everything. Writes use
check-and-set on the ModifyIndex the operator last saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import consul

from controlplane.policy.model import PolicyError
from controlplane.policy_sources.active import PolicyDocuments
from controlplane.policy_sources.sources import MAX_POLICY_BYTES

__all__ = [
    "DEFAULT_POLICY_KEY",
    "ConsulPolicySource",
    "ConsulRead",
    "consul_client",
]

DEFAULT_POLICY_KEY = "fusionplane/policy"
TENANTS = "/tenants/"


def consul_client(*, token: str | None, timeout_s: float) -> consul.Consul:
    """A client for ``CONSUL_HTTP_ADDR`` (py-consul reads it) with ``token`` (``ConsulSettings.token``).

    ``timeout_s`` is how long a call may wait for Consul's answer. py-consul
    adds a blocking query's own ``wait`` (plus Consul's 1/16 jitter) to it, so
    the watcher passes the same short value as the CLI, not ``wait`` + margin.
    """
    return consul.Consul(token=token, connections_timeout=timeout_s)


@dataclass(frozen=True, kw_only=True)
class ConsulRead:
    """One read of the key and its overlays: ``documents`` is None while the base key does not exist."""

    index: int
    documents: PolicyDocuments | None
    #: the base value as stored (for show/diff), None when absent
    raw: bytes | None
    modify_index: int | None
    #: a value that is not JSON: the read still moves the index on, the watcher keeps the last good policy
    error: PolicyError | None = None


def _decode(value: bytes | None, where: str) -> Any:
    if value is None:
        raise PolicyError("", f"{where} is empty")
    if len(value) > MAX_POLICY_BYTES:
        raise PolicyError("", f"{where} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise PolicyError("", f"{where} is not valid JSON: {exc}") from exc


class ConsulPolicySource:
    """Reads, watches and writes the policy key."""

    def __init__(self, client: consul.Consul, key: str = DEFAULT_POLICY_KEY) -> None:
        self.client, self.key = client, key.strip("/")

    @property
    def name(self) -> str:
        return f"consul:{self.key}"

    def read(self, *, index: int | None = None, wait_s: float | None = None) -> ConsulRead:
        """The key and its overlays; with ``index``, a blocking query that returns after a change or ``wait_s``.

        Raises requests/consul exceptions when Consul cannot be reached; a
        value that is not JSON comes back as ``error``.
        """
        wait = f"{max(int(wait_s or 0), 1)}s" if index is not None else None
        found_index, items = self.client.kv.get(self.key, index=index, wait=wait, recurse=True)
        base: dict[str, Any] | None = None
        overlays: dict[str, dict[str, Any]] = {}
        for item in items or []:
            name = item["Key"]
            if name == self.key:
                base = item
            elif name.startswith(self.key + TENANTS) and len(name) > len(self.key + TENANTS):
                overlays[name[len(self.key + TENANTS) :]] = item
        read_index = int(found_index or 0)
        if base is None:
            return ConsulRead(index=read_index, documents=None, raw=None, modify_index=None)
        modify_index = int(base["ModifyIndex"])
        try:
            documents = PolicyDocuments(
                base=_decode(base["Value"], self.key),
                overlays={tenant: _decode(item["Value"], item["Key"]) for tenant, item in overlays.items()},
                source=self.name,
                modify_index=modify_index,
                overlay_indexes={tenant: int(item["ModifyIndex"]) for tenant, item in overlays.items()},
            )
        except PolicyError as exc:
            return ConsulRead(index=read_index, documents=None, raw=base["Value"], modify_index=modify_index, error=exc)
        return ConsulRead(index=read_index, documents=documents, raw=base["Value"], modify_index=modify_index)

    def write(self, value: bytes, *, cas: int) -> bool:
        """Check-and-set: write only if the key's ModifyIndex is still ``cas`` (0: only if absent)."""
        return bool(self.client.kv.put(self.key, value, cas=cas))

    def write_overlay(self, tenant: str, value: bytes, *, cas: int) -> bool:
        return bool(self.client.kv.put(f"{self.key}{TENANTS}{tenant}", value, cas=cas))
