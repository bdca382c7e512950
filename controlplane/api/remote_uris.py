"""Remote inputs and outputs at submit time: the worker's own rules, answered with a 422 before anything is stored.

Two steps, because only the second needs the network:

1. :func:`check_remote_input` / :func:`check_remote_output` (pure, on the
   event loop): the URL rules of :mod:`faceswap.netguard` (scheme, no
   ``user@``, literal internal addresses in any notation, internal names)
   and the tenant's grant from the storage allow-lists (s3 and az prefixes,
   web hosts), exactly as the worker will check them.
2. :func:`refuse_internal_names` (async): each http(s) host name is resolved
   with a short timeout off the event loop; any internal address refuses it.
   A name that does not resolve now is accepted: the worker resolves and
   checks again before it connects, and that answer is the one it uses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from faceswap.access import Access
from faceswap.errors import BadInput
from faceswap.netguard import (
    AddressRefused,
    AllowedHosts,
    IPAddress,
    UrlRefused,
    check_addresses,
    check_target,
    host_listed,
    parse_web_url,
)

__all__ = [
    "HostResolver",
    "RemoteRules",
    "check_remote_input",
    "check_remote_output",
    "refuse_internal_names",
    "system_host_resolver",
]

#: ``(host, port) -> addresses``; raising anything means "no answer"
HostResolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def system_host_resolver(host: str, port: int) -> list[IPAddress]:
    """The event loop's getaddrinfo (it runs in the loop's thread pool, never on the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@dataclass(frozen=True)
class RemoteRules:
    """One submitter's rules: the tenant's grant and the operator's allowed internal hosts."""

    access: Access = field(default_factory=Access)
    allowed_internal: AllowedHosts = field(default_factory=AllowedHosts)


def _allowed_for(uri: str, rules: RemoteRules) -> AllowedHosts:
    """The operator's internal hosts count only for a host the tenant names ("*" is public hosts only)."""
    target = parse_web_url(uri)
    return rules.allowed_internal if host_listed(target, rules.access.web_hosts) else AllowedHosts()


def check_remote_input(uri: str, *, field: str, rules: RemoteRules) -> str:
    """The URI to store, or ValueError (message) for the API to answer 422 naming ``field``."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            target = parse_web_url(uri)
            check_target(target, allowed=_allowed_for(uri, rules))
        except (UrlRefused, AddressRefused) as exc:
            raise ValueError(str(exc)) from None
    try:
        rules.access.check(uri, field=field)
    except BadInput as exc:
        raise ValueError(exc.message) from None
    return uri


def check_remote_output(uri: str, *, field: str, rules: RemoteRules) -> str:
    """An s3 or az output must be inside one of the tenant's write prefixes."""
    try:
        rules.access.check(uri, field=field, write=True)
    except BadInput as exc:
        raise ValueError(exc.message) from None
    return uri


async def refuse_internal_names(
    uris: Mapping[str, str], *, rules: RemoteRules, resolver: HostResolver, timeout_s: float
) -> dict[str, str]:
    """Resolve the http(s) host names among ``uris`` (field -> URI) at once; the fields refused and why."""
    pending: dict[str, Awaitable[list[IPAddress]]] = {}
    targets = {}
    for name, uri in uris.items():
        if uri.split("://", 1)[0].lower() not in ("http", "https"):
            continue
        target = parse_web_url(uri)  # already checked by check_remote_input
        allowed = _allowed_for(uri, rules)
        if target.address is not None or allowed.allows(target):
            continue
        targets[name] = target
        pending[name] = asyncio.wait_for(resolver(target.host, target.port), timeout_s)
    answers = await asyncio.gather(*pending.values(), return_exceptions=True)
    refused = {}
    for name, answer in zip(pending, answers, strict=True):
        if isinstance(answer, BaseException):
            continue  # no answer now: the worker resolves again and decides
        try:
            check_addresses(targets[name], answer, allowed=AllowedHosts())
        except AddressRefused as exc:
            refused[name] = f"{exc} ({targets[name].host} resolves to an internal address)"
    return refused
