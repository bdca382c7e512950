"""Download an http(s) input without letting its URL reach inside the operator's network.

Every hop (the URL, then each redirect, at most ``max_redirects``) is
checked with :mod:`faceswap.netguard`'s rules, its name resolved once, every
resolved address checked, and the connection made to that checked address:
the request goes to ``scheme://ADDRESS:port`` with the ``Host`` header and
TLS server name of the real host, so certificates are still verified
against the name and a second lookup (DNS rebinding) has nothing to change.
The body is streamed to disk with a size cap checked while reading; a
refused, oversized or broken download leaves no file behind.

Failures do not describe the network: an address refused by a rule says
which rule (decided from the URL and DNS alone, nothing probed), and every
failure to connect (refused, unreachable, timed out) reads the same, with no
error text or timing from the socket.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from faceswap.errors import BadInput, TemporaryFailure
from faceswap.netguard import (
    ANY_PUBLIC_HOST,
    AddressRefused,
    AllowedHosts,
    IPAddress,
    UrlRefused,
    WebTarget,
    check_addresses,
    check_target,
    host_listed,
    parse_web_url,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_MAX_BYTES", "FetchRules", "ResolveFailed", "Resolver", "download", "system_resolver"]

DEFAULT_MAX_BYTES = 2 << 30
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 20


class ResolveFailed(Exception):
    """A name that did not resolve: ``temporary`` when the resolver may answer later."""

    def __init__(self, *, temporary: bool) -> None:
        super().__init__("temporary" if temporary else "no such host")
        self.temporary = temporary


#: ``(host, port, timeout_s) -> addresses``; raises :class:`ResolveFailed`
Resolver = Callable[[str, int, float], list[IPAddress]]


def system_resolver(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """getaddrinfo on a daemon thread, given up after ``timeout_s`` (getaddrinfo has no timeout of its own)."""
    answer: list[list[IPAddress] | BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append([ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos])
        except BaseException as exc:
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="resolve", daemon=True).start()
    if not done.wait(timeout_s):
        raise ResolveFailed(temporary=True)
    result = answer[0]
    if isinstance(result, socket.gaierror):
        raise ResolveFailed(temporary=result.errno == socket.EAI_AGAIN)
    if isinstance(result, BaseException):
        raise ResolveFailed(temporary=True)
    if not result:
        raise ResolveFailed(temporary=False)
    return list(dict.fromkeys(result))  # one entry per address, in the resolver's order


@dataclass(frozen=True)
class FetchRules:
    """How the worker may fetch: the operator's allowed internal hosts, the size cap, timeouts."""

    allowed_internal: AllowedHosts = field(default_factory=AllowedHosts)
    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    resolve_timeout_s: float = 10.0
    max_redirects: int = 5
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)
    #: certificate verification for https (default: the system's CAs via certifi; tests hand in their own CA)
    tls_verify: ssl.SSLContext | bool = field(default=True, compare=False, repr=False)


def _refused(url: str, why: str, *, field: str) -> BadInput:
    return BadInput(f"cannot read {url}: {why}", field=field)


def _admit(url: str, *, rules: FetchRules, hosts: Iterable[str] | None, field: str) -> tuple[WebTarget, AllowedHosts]:
    """Check one hop's URL against the rules and the tenant's hosts; the internal hosts it may use."""
    try:
        target = parse_web_url(url)
    except UrlRefused as exc:
        raise _refused(url, str(exc), field=field) from None
    allowed = rules.allowed_internal
    if hosts is not None:
        listed = host_listed(target, hosts)
        if not listed and ANY_PUBLIC_HOST not in hosts:
            raise _refused(url, f"host {target.host} is not in this tenant's allowed web hosts", field=field)
        if not listed:
            allowed = AllowedHosts()  # "*" means public hosts: an internal one must be named
    try:
        check_target(target, allowed=allowed)
    except AddressRefused as exc:
        raise _refused(url, str(exc), field=field) from None
    return target, allowed


def _resolve(target: WebTarget, *, rules: FetchRules, allowed: AllowedHosts, field: str) -> list[IPAddress]:
    if target.address is not None:
        return [target.address]
    try:
        addresses = rules.resolver(target.host, target.port, rules.resolve_timeout_s)
    except ResolveFailed as exc:
        cls = TemporaryFailure if exc.temporary else BadInput
        raise cls(f"cannot read {target.url}: cannot resolve {target.host}", field=field) from None
    try:
        check_addresses(target, addresses, allowed=allowed)
    except AddressRefused as exc:
        raise _refused(target.url, str(exc), field=field) from None
    return addresses


def download(url: str, dest: Path, *, field: str, rules: FetchRules, hosts: Iterable[str] | None = None) -> None:
    """Fetch ``url`` into ``dest`` under ``rules``; ``hosts`` is the tenant's web hosts (None: no tenant limit).

    Raises :class:`BadInput` (exit 65) for refused URLs and addresses, 4xx,
    oversized bodies and hosts that cannot be reached; :class:`TemporaryFailure`
    (exit 75) for 5xx, 429 and broken or timed-out transfers.
    """
    import httpx

    listed = None if hosts is None else tuple(hosts)
    timeout = httpx.Timeout(rules.read_timeout_s, connect=rules.connect_timeout_s)
    # trust_env=False: a proxy from the environment would make its own lookup of the name
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=rules.tls_verify) as client:
        current = url
        for _hop in range(rules.max_redirects + 1):
            target, allowed = _admit(current, rules=rules, hosts=listed, field=field)
            addresses = _resolve(target, rules=rules, allowed=allowed, field=field)
            location = _get(client, target, addresses, dest, rules=rules, field=field)
            if location is None:
                return
            following = urljoin(current, location)
            if target.scheme == "https" and following.lower().startswith("http:"):
                raise _refused(url, "a redirect from https to http is not followed", field=field)
            current = following
    raise _refused(url, f"more than {rules.max_redirects} redirects", field=field)


def _get(
    client: httpx.Client, target: WebTarget, addresses: list[IPAddress], dest: Path, *, rules: FetchRules, field: str
) -> str | None:
    """One request to the first checked address that connects; the redirect's Location, or None once saved."""
    import httpx

    extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.address is None else {}
    for address in addresses:
        request = client.build_request(
            "GET", target.url_for(address), headers={"Host": target.host_header}, extensions=extensions
        )
        try:
            response = client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue  # the same words for refused, unreachable and silent: no port scanner
        except httpx.TimeoutException:
            raise TemporaryFailure(f"cannot read {target.url}: timed out", field=field) from None
        except httpx.HTTPError:
            raise TemporaryFailure(f"cannot read {target.url}: the connection broke off", field=field) from None
        try:
            return _answer(response, target, dest, rules=rules, field=field)
        finally:
            response.close()
    raise BadInput(f"cannot read {target.url}: cannot connect to {target.host_port}", field=field)


def _answer(response: httpx.Response, target: WebTarget, dest: Path, *, rules: FetchRules, field: str) -> str | None:
    import httpx

    status = response.status_code
    if status in _REDIRECTS and response.headers.get("location"):
        return str(response.headers["location"])
    if status >= 500 or status == 429:
        raise TemporaryFailure(f"cannot read {target.url}: HTTP {status}", field=field)
    if status != 200:  # 4xx, and 2xx/3xx other than 200 carry no file
        raise BadInput(f"cannot read {target.url}: HTTP {status}", field=field)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > rules.max_bytes:
        raise BadInput(f"cannot read {target.url}: larger than the {rules.max_bytes} byte limit", field=field)
    written = 0
    try:
        with dest.open("wb") as handle:
            for chunk in response.iter_bytes(_CHUNK):
                written += len(chunk)
                if written > rules.max_bytes:
                    raise BadInput(
                        f"cannot read {target.url}: larger than the {rules.max_bytes} byte limit", field=field
                    )
                handle.write(chunk)
    except httpx.TimeoutException:
        dest.unlink(missing_ok=True)
        raise TemporaryFailure(f"cannot read {target.url}: timed out", field=field) from None
    except httpx.HTTPError:
        dest.unlink(missing_ok=True)
        raise TemporaryFailure(f"cannot read {target.url}: the connection broke off", field=field) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return None
