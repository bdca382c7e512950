"""One webhook POST under the rules every outbound fetch of a task follows (faceswap/netguard.py).

The URL was checked at submission, but a name may resolve elsewhere by the
time the outcome is sent: the host is resolved here, every address is
checked, and the connection goes to a checked address (with the name as
``Host`` and TLS server name), so a second lookup cannot swap in an
internal one. Redirects are never followed: a receiver that moved answers
3xx, which counts as a failed try. At most ``max_response_bytes`` of the
answer are read, within ``timeout_s`` per step.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from faceswap.netguard import (
    AddressRefused,
    AllowedHosts,
    IPAddress,
    UrlRefused,
    WebTarget,
    check_addresses,
    check_target,
    parse_web_url,
)

__all__ = ["Resolver", "SendResult", "WebhookSender", "system_resolver"]

#: ``(host, port) -> addresses``; raising OSError means "no answer"
Resolver = Callable[[str, int], list[IPAddress]]
#: the receiver says the endpoint is gone for good: no more tries
_GONE = 410


def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@dataclass(frozen=True)
class SendResult:
    """What one try came to: ``status`` when the receiver answered; ``final`` when trying again is pointless."""

    delivered: bool
    status: int | None = None
    error: str | None = None
    final: bool = False


class WebhookSender:
    """POSTs signed bodies to checked addresses; one connection pool, shared by the deliverer's threads."""

    def __init__(
        self,
        *,
        allowed: AllowedHosts,
        timeout_s: float,
        max_response_bytes: int,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._allowed, self._resolver, self._cap = allowed, resolver, max_response_bytes
        # trust_env=False: a proxy from the environment would make its own lookup of the name
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendResult:
        """POST ``body`` to ``url``: the first checked address that connects gets it."""
        try:
            target = parse_web_url(url)
            check_target(target, allowed=self._allowed)
        except (UrlRefused, AddressRefused) as exc:
            return SendResult(False, error=f"notify_url refused: {exc}", final=True)
        try:
            addresses = [target.address] if target.address is not None else self._resolver(target.host, target.port)
        except OSError:
            return SendResult(False, error=f"cannot resolve {target.host}")
        try:
            check_addresses(target, addresses, allowed=self._allowed)
        except AddressRefused as exc:
            return SendResult(False, error=f"{target.host} resolves to an internal address: {exc}", final=True)
        for address in addresses:
            result = self._post(target, address, headers, body)
            if result is not None:
                return result
        return SendResult(False, error=f"cannot connect to {target.host_port}")

    def _post(
        self, target: WebTarget, address: IPAddress, headers: Mapping[str, str], body: bytes
    ) -> SendResult | None:
        """One POST to ``address``; None when it did not connect (the next address is tried)."""
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.address is None else {}
        request = self._client.build_request(
            "POST",
            target.url_for(address),
            headers={**headers, "Host": target.host_header},
            content=body,
            extensions=extensions,
        )
        try:
            response = self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return None
        except httpx.TimeoutException:
            return SendResult(False, error=f"{target.host_port} did not answer in time")
        except httpx.HTTPError:
            return SendResult(False, error=f"the connection to {target.host_port} broke off")
        try:
            self._drain(response)
        except httpx.HTTPError:
            pass  # the status is the answer; a body cut short changes nothing
        finally:
            response.close()
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(True, status=status)
        if 300 <= status < 400:
            return SendResult(False, status=status, error=f"answered {status}: redirects are not followed")
        return SendResult(False, status=status, error=f"answered {status}", final=status == _GONE)

    def _drain(self, response: httpx.Response) -> None:
        """Read at most the cap of the answer's body, so a receiver cannot make us read without end."""
        read = 0
        for chunk in response.iter_raw():
            read += len(chunk)
            if read >= self._cap:
                return
