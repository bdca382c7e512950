"""Storage allow-lists and host resolvers for tests: a granting document, resolvers that never leave the machine."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from controlplane.api.remote_uris import HostResolver
from faceswap.fetcher import FetchRules, ResolveFailed, Resolver
from faceswap.netguard import AllowedHosts, IPAddress

__all__ = ["allow_loopback", "fixed_host_resolver", "fixed_resolver", "offline_host_resolver", "write_storage"]


def write_storage(path: Path, tenants: Mapping[str, Mapping[str, Sequence[str]]]) -> Path:
    """A storage document granting ``tenants`` (name -> s3_read/s3_write/web_hosts); its path."""
    document = {"version": 1, "defaults": {"web_hosts": ["*"]}, "tenants": {k: dict(v) for k, v in tenants.items()}}
    path.write_text(json.dumps(document, indent=2))
    return path


async def offline_host_resolver(host: str, port: int) -> list[IPAddress]:
    """No name resolves: submissions naming hosts are accepted without a DNS query leaving the machine."""
    raise OSError(f"{host}: not resolved in tests")


def fixed_host_resolver(names: Mapping[str, Sequence[str]]) -> HostResolver:
    """An API resolver answering ``names`` (host -> addresses) and nothing else."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in names:
            raise OSError(f"{host}: not resolved in tests")
        return [ipaddress.ip_address(a) for a in names[host]]

    return resolve


def fixed_resolver(names: Mapping[str, Sequence[str]]) -> Resolver:
    """A worker-side resolver (``FetchRules.resolver``) answering ``names`` and nothing else."""

    def resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
        if host not in names:
            raise ResolveFailed(temporary=False)
        return [ipaddress.ip_address(a) for a in names[host]]

    return resolve


def allow_loopback(*urls: str, **rules: object) -> FetchRules:
    """Fetch rules with the operator's explicit allow of these loopback servers (``http://127.0.0.1:PORT``)."""
    hosts = [url.split("://", 1)[1].split("/", 1)[0] for url in urls]
    return FetchRules(allowed_internal=AllowedHosts.parse(hosts), **rules)  # type: ignore[arg-type]
