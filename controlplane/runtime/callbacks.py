"""Whether the workers of the policy's targets can call the control plane back at its callback URL.

A worker posts heartbeats, progress and its ending to ``<callback base>/v1/attempts/<id>``
(``FUSIONPLANE_PUBLIC_URL``, default ``http://<host>:<port>``). A VM on AWS or Azure, or
a pod in a cluster, cannot reach the control plane's loopback address, nor an
unspecified one (``0.0.0.0``, ``::``): every attempt there would be lost after its first
heartbeat timeout, long after the launch was paid for. ``serve`` refuses to start that
way unless the operator says the address does reach them (a tunnel, a test).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from controlplane.domain import Target

__all__ = ["callback_refusal", "unreachable_callback_host"]


def unreachable_callback_host(callback_base: str) -> str | None:
    """The host of ``callback_base`` when only this machine could reach it (loopback or unspecified); else None."""
    try:
        host = urlsplit(callback_base).hostname or ""
    except ValueError:
        return callback_base
    if host == "localhost" or host.endswith(".localhost") or not host:
        return host or callback_base
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: it may well resolve elsewhere to an address the workers reach
    return host if address.is_loopback or address.is_unspecified else None


def callback_refusal(callback_base: str, targets: Iterable[Target]) -> str | None:
    """Why workers of the remote targets could not call back to ``callback_base``; None when they can (or none runs
    elsewhere). Targets that cannot launch (a seed form's unconfigured cloud) do not count."""
    remote = sorted(
        f"{target.name} ({target.provider})"
        for target in targets
        if target.provider != "local" and target.not_configured is None
    )
    host = unreachable_callback_host(callback_base)
    if not remote or host is None:
        return None
    return (
        f"FUSIONPLANE_PUBLIC_URL: workers of {', '.join(remote)} would call back to {callback_base}, "
        f"and {host} is this machine only; set FUSIONPLANE_PUBLIC_URL to an address they reach "
        "(docs/deployment.md), or pass --allow-loopback-callbacks when it does reach them (a tunnel, tests)"
    )
