"""Which web addresses a job may fetch from: pure rules, no I/O.

A task names its inputs, and the worker that fetches them runs inside the
operator's network, next to cloud metadata services, databases and admin
ports. These rules keep a task's URL from reaching any of them (SSRF):

- the URL itself: http(s) only, a host, no ``user@`` part, no backslashes,
  ASCII host names only (an IDN is given in its ``xn--`` form, so no
  Unicode look-alike of a digit can turn into an address);
- the host when it is an address, written in any form a resolver accepts
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1`` are 127.0.0.1), and every
  address a name resolves to: loopback, link-local, private, shared (CGNAT),
  multicast, unspecified, broadcast, reserved and documentation ranges, cloud
  metadata addresses, and the IPv6 forms that carry an IPv4 address
  (mapped, compatible, NAT64, 6to4);
- names that are internal by definition (``localhost``, ``*.internal``,
  ``metadata.google.internal``, single-label names resolved through search
  domains).

An operator allows named internal hosts explicitly (:class:`AllowedHosts`,
``host`` or ``host:port``); nothing else bypasses the rules. Resolving and
connecting (once, to the checked address) is :mod:`faceswap.fetcher`'s job;
the control plane applies the same rules at submit time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "ANY_PUBLIC_HOST",
    "AddressRefused",
    "AllowedHosts",
    "IPAddress",
    "UrlRefused",
    "WebTarget",
    "address_rule",
    "check_addresses",
    "check_target",
    "host_listed",
    "name_rule",
    "parse_web_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: in a tenant's list of web hosts: any host that passes these rules
ANY_PUBLIC_HOST = "*"

_V4_RULES = [
    (ipaddress.IPv4Network(net), rule)
    for net, rule in (
        ("169.254.169.254/32", "cloud metadata"),
        ("100.100.100.200/32", "cloud metadata"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("198.18.0.0/15", "benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
]
_V6_RULES = [
    (ipaddress.IPv6Network(net), rule)
    for net, rule in (
        ("fd00:ec2::254/128", "cloud metadata"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "private"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "reserved"),  # Teredo, benchmarking, ORCHID and other protocol assignments
    )
]
#: IPv6 forms that carry an IPv4 address in their low 32 bits
_V6_EMBEDDING = [
    (ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped"),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "IPv4-translated"),
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64"),
    (ipaddress.IPv6Network("::/96"), "IPv4-compatible"),
]
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

_INTERNAL_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".arpa", ".intranet")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class UrlRefused(ValueError):
    """A URL no job may fetch, whatever it resolves to (scheme, userinfo, malformed host)."""


class AddressRefused(ValueError):
    """A host or address inside the operator's network; ``rule`` names which."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"address not allowed: {rule}")
        self.rule = rule


@dataclass(frozen=True)
class WebTarget:
    """One checked http(s) URL, split into what a connection needs."""

    url: str
    scheme: str
    #: lowercased name without a trailing dot, or an address's canonical text
    host: str
    port: int
    #: the host when the URL names an address (in whatever form it was written)
    address: IPAddress | None
    #: what goes on the request line: path and query, never the fragment
    path: str

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """This URL with the host replaced by ``address``: connect there, and nowhere else."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def _number(text: str) -> int | None:
    """One part of an inet_aton address: decimal, 0-prefixed octal or 0x hex; None if not a number."""
    if not _NUMBER.match(text):
        return None
    if text.startswith("0x"):
        return int(text[2:] or "0", 16)
    if len(text) > 1 and text.startswith("0"):
        if not set(text) <= set("01234567"):
            raise UrlRefused(f"{text!r} is not a valid octal part of an IPv4 address")
        return int(text, 8)
    return int(text)


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a resolver reads in ``host`` (1 to 4 parts, the last filling the rest), or None.

    As in the WHATWG URL standard, a host whose last label is a number is an
    address or an error, never a name.
    """
    parts = host.split(".")
    if not parts or _number(parts[-1]) is None:
        return None
    numbers = [_number(part) for part in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UrlRefused(f"{host!r} is not a valid IPv4 address")
    values = [n for n in numbers if n is not None]
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise UrlRefused(f"{host!r} is not a valid IPv4 address")
    value = values[-1]
    for index, part in enumerate(values[:-1]):
        value |= part << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def _host(raw: str) -> tuple[str, IPAddress | None]:
    """Canonical host text and its address, if it is one."""
    if not raw:
        raise UrlRefused("the URL has no host")
    if not raw.isascii():
        raise UrlRefused("host names must be ASCII (write an international name in its xn-- form)")
    host = raw.lower()
    if ":" in host:
        if "%" in host:
            raise UrlRefused("IPv6 zone identifiers are not allowed")
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlRefused(f"{raw!r} is not a valid IPv6 address") from None
        return str(v6), v6
    host = host[:-1] if host.endswith(".") else host
    v4 = _inet_aton(host)
    if v4 is not None:
        return str(v4), v4
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise UrlRefused(f"{raw!r} is not a valid host name")
    return host, None


def parse_web_url(url: str) -> WebTarget:
    """Split an http(s) URL; raises :class:`UrlRefused` for anything a job may not fetch."""
    if any(ord(c) <= 32 or 127 <= ord(c) < 160 for c in url) or "\\" in url:
        raise UrlRefused("URLs may not contain spaces, control characters or backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("only http:// and https:// URLs can be fetched")
    if "@" in parts.netloc:
        raise UrlRefused("URLs with a user name or password (user@host) are not allowed")
    netloc = parts.netloc
    if netloc.startswith("["):
        raw, _, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise UrlRefused("the URL's host is malformed")
        port_text = rest[1:]
    else:
        raw, _, port_text = netloc.partition(":")
        if "[" in netloc or "]" in netloc:
            raise UrlRefused("the URL's host is malformed")
    host, address = _host(raw)
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise UrlRefused("the URL's port must be a number from 1 to 65535")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebTarget(url=url, scheme=scheme, host=host, port=port, address=address, path=path)


def address_rule(address: IPAddress) -> str | None:
    """The rule that keeps ``address`` out of reach, or None for a public address."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, rule in _V4_RULES:
            if address in network:
                return rule
        return None if address.is_global else "reserved"
    for network6, rule in _V6_RULES:
        if address in network6:
            return rule
    for embedding, form in _V6_EMBEDDING:
        if address in embedding:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            inner = address_rule(embedded)
            return f"{inner} ({form})" if inner else None
    if address in _SIX_TO_FOUR:
        inner = address_rule(ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF))
        return f"{inner} (6to4)" if inner else None
    return None if address in _GLOBAL_UNICAST else "reserved"


def name_rule(host: str) -> str | None:
    """The rule that makes a host name internal by itself, or None."""
    if host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        return "internal name"
    if "." not in host:
        return "single-label name"  # completed from the resolver's search domains: an internal host
    return None


@dataclass(frozen=True)
class AllowedHosts:
    """Internal hosts an operator lets jobs fetch from: ``(host, port)``, port None for any."""

    entries: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        """``host`` or ``host:port`` entries (``[v6]:port`` for IPv6); a bad one raises ValueError naming it."""
        parsed: set[tuple[str, int | None]] = set()
        for entry in entries:
            text = entry.strip()
            if not text:
                continue
            try:
                target = parse_web_url(f"http://{text}/")
            except UrlRefused as exc:
                raise ValueError(f"allowed host {entry!r}: {exc}") from None
            has_port = text.rsplit("]", 1)[-1].count(":") == 1
            parsed.add((target.host, target.port if has_port else None))
        return cls(frozenset(parsed))

    def allows(self, target: WebTarget) -> bool:
        return (target.host, None) in self.entries or (target.host, target.port) in self.entries

    def as_list(self) -> list[str]:
        """Entries in the form :meth:`parse` reads."""
        out = []
        for host, port in sorted(self.entries, key=lambda e: (e[0], e[1] or 0)):
            shown = f"[{host}]" if ":" in host else host
            out.append(shown if port is None else f"{shown}:{port}")
        return out


def check_target(target: WebTarget, *, allowed: AllowedHosts) -> None:
    """Refuse a URL whose host is internal by its name or literal address (no resolving)."""
    if allowed.allows(target):
        return
    rule = address_rule(target.address) if target.address is not None else name_rule(target.host)
    if rule is not None:
        raise AddressRefused(rule)


def check_addresses(target: WebTarget, addresses: Iterable[IPAddress], *, allowed: AllowedHosts) -> None:
    """Refuse ``target`` if ANY address it resolved to is internal (a name may not mix in one)."""
    if allowed.allows(target):
        return
    for address in addresses:
        rule = address_rule(address)
        if rule is not None:
            raise AddressRefused(rule)


def host_listed(target: WebTarget, hosts: Iterable[str]) -> bool:
    """Whether a tenant's list of web hosts names ``target``'s host: exactly, or ``*.domain`` for subdomains.

    ``*`` (:data:`ANY_PUBLIC_HOST`) is handled by the caller: it lets any host
    through that passes the address rules.
    """
    for entry in hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and target.host.endswith(entry[1:]):
            return True
        if ":" in entry and not entry.startswith("["):
            name, _, port = entry.rpartition(":")
            if name == target.host and port == str(target.port):
                return True
        elif entry == target.host:
            return True
    return False
