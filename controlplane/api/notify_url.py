"""A task's ``notify_url`` is hostile input: the address rules of every fetch, answered with a 422 naming it.

The receiver of a webhook is chosen by the submitter, and the control plane
is the one that connects, from inside the operator's network: an
unchecked URL would let a tenant make it POST to the metadata service, a
database's admin port or anything else on the private network. So the
URL meets the rules of :mod:`faceswap.netguard` (http(s) only, no
``user@``, no internal address in any notation, no internal names), its
name is resolved now with a short timeout (an internal answer refuses it),
and the deliverer resolves and checks again before every send. Only hosts
the operator lists in ``FUSIONPLANE_WEBHOOK_ALLOW_HOSTS`` pass despite the
address rules.
"""

from __future__ import annotations

import asyncio

from controlplane.api.errors import ApiError
from controlplane.api.remote_uris import HostResolver
from faceswap.netguard import AddressRefused, AllowedHosts, UrlRefused, check_addresses, check_target, parse_web_url

__all__ = ["FIELD", "check_notify_url"]

FIELD = "notify_url"


def _refused(reason: str) -> ApiError:
    return ApiError(422, "invalid", f"notify_url refused: {reason}", field=FIELD)


async def check_notify_url(url: str, *, allowed: AllowedHosts, resolver: HostResolver, timeout_s: float) -> str:
    """``url`` when it may be POSTed to; else ApiError 422 on ``notify_url``."""
    try:
        target = parse_web_url(url)
        check_target(target, allowed=allowed)
    except (UrlRefused, AddressRefused) as exc:
        raise _refused(str(exc)) from None
    if target.address is not None or allowed.allows(target):
        return url
    try:
        addresses = await asyncio.wait_for(resolver(target.host, target.port), timeout_s)
    except Exception:
        return url
    try:
        check_addresses(target, addresses, allowed=AllowedHosts())
    except AddressRefused as exc:
        raise _refused(f"{exc} ({target.host} resolves to an internal address)") from None
    return url
