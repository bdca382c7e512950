"""What the two EC2 price sources share: the fail-fast boto3 client settings, problem lines, and the regions read
in parallel within the poll's time (``aws_spot``: DescribeSpotPriceHistory; ``aws_on_demand``: the Price List API).
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from botocore.parsers import ResponseParserError

__all__ = [
    "AUTH_CODES",
    "THROTTLE_CODES",
    "BotoClients",
    "RegionFailed",
    "by_region",
    "call_timeout",
    "client_config",
    "positive_price",
    "problem_text",
    "read_regions",
]

#: how much of an error message goes into a problem line
MESSAGE_CHARS = 300
#: one request attempt gets this share of the poll's time for connecting and this share for
#: reading (each): two attempts then fit in the poll, plus standard mode's short backoff
_ATTEMPT_SHARE = 0.25
#: no per-call timeout below this (a 0.01 s connect fails even on loopback)
_MIN_CALL_TIMEOUT_S = 0.1

THROTTLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "EC2ThrottledException", "TooManyRequestsException"}
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "OptInRequired",
        "Blocked",
    }
)

_T = TypeVar("_T")


class RegionFailed(Exception):
    """One region's read went wrong; the message becomes its problem line."""


def positive_price(raw: Any) -> float | None:
    """``raw`` as a price: a positive finite number (a string is read as one), else None."""
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def call_timeout(timeout_s: float) -> float:
    return max(timeout_s * _ATTEMPT_SHARE, _MIN_CALL_TIMEOUT_S)


def client_config(timeout_s: float, *, user_agent: str = "fusionplane-aws-spot") -> botocore.config.Config:
    """The fail-fast client settings for a poll of ``timeout_s`` seconds.

    * ``connect_timeout`` / ``read_timeout`` = a quarter of the poll each
      (botocore's defaults are 60 s each, longer than any poll): one attempt
      takes at most half the poll, two attempts fit in it.
    * ``retries = {"total_max_attempts": 2, "mode": "standard"}``: one retry,
      for a dropped connection or a single throttle. The hub already polls
      again on its interval and backs off when a source is down; retrying
      more inside a poll would only keep a throttled API busier and run past
      the poll's time. Standard mode (not legacy) retries throttling codes
      (``RequestLimitExceeded``, ``ThrottlingException``) and connection
      errors, waits at most ``rand(0, 1) s`` before a throttled retry and
      ``rand(0, 0.05) s`` before others, and stops retrying through its retry
      quota when everything fails. (``total_max_attempts`` counts the first
      attempt; botocore's ``max_attempts`` would count retries only and mean
      three attempts.)
    """
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    each = call_timeout(timeout_s)
    return botocore.config.Config(
        connect_timeout=each,
        read_timeout=each,
        retries={"total_max_attempts": 2, "mode": "standard"},
        user_agent_extra=user_agent,
    )


def problem_text(exc: Exception, *, timeout_s: float, service: str = "EC2", answer: str = "EC2 XML") -> str:
    """One line that says what happened, in an operator's words rather than botocore's class names.

    ``service`` names the API in the line ("EC2", "the Price List API");
    ``answer`` what a readable answer is ("EC2 XML", "JSON").
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "unknown"
        message = str(error.get("Message", "")).strip()
        if code in THROTTLE_CODES:
            return (
                f"throttled by {service} ({code}): the account's API request rate is used up; "
                f"no price this poll, the next poll retries"
            )
        if code in AUTH_CODES:
            return f"credentials refused ({code}): {message[:MESSAGE_CHARS]}"
        return f"{service} error {code}: {message[:MESSAGE_CHARS]}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found (standard chain: environment, config files, SSO, instance or task role)"
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        return f"timed out ({type(exc).__name__}, {call_timeout(timeout_s):.2f}s a call)"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot connect: {exc}"[:MESSAGE_CHARS]
    if isinstance(exc, ResponseParserError):
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"unreadable answer (not {answer}): {first_line[:MESSAGE_CHARS]}"
    return f"{type(exc).__name__}: {exc}"[:MESSAGE_CHARS]


def by_region(offers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(region, type) pairs as region -> its sorted types, regions sorted."""
    regions: dict[str, list[str]] = {}
    for region, instance_type in offers:
        types = regions.setdefault(region, [])
        if instance_type not in types:
            types.append(instance_type)
    return {region: sorted(types) for region, types in sorted(regions.items())}


def read_regions(
    reads: Mapping[str, Callable[[], _T]],
    *,
    remaining_s: float,
    max_workers: int,
    thread_prefix: str,
) -> dict[str, concurrent.futures.Future[_T]]:
    """Run each region's read on its own thread and wait at most ``remaining_s`` for them all.

    A region still running then keeps its (not done) future and its thread
    ends on its own client timeouts: a hung region never holds the poll.
    """
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(len(reads), max_workers)), thread_name_prefix=thread_prefix
    )
    try:
        futures = {region: pool.submit(read) for region, read in reads.items()}
        concurrent.futures.wait(futures.values(), timeout=max(remaining_s, 0.0))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return futures


class BotoClients:
    """boto3 clients cached per (region, per-call timeout), made from one session, closed together.

    A client is thread-safe, its creation is not: the lock is re-entrant, so a
    poll that holds it may still ask for a client.
    """

    def __init__(self, session: boto3.session.Session | None, *, user_agent: str) -> None:
        self._session = session
        self._user_agent = user_agent
        self._clients: dict[tuple[str, float], Any] = {}
        self._lock = threading.RLock()

    def cached_client(self, service: str, region: str, endpoint_url: str | None, *, timeout_s: float) -> Any:
        """The ``service`` client of ``region`` for polls of ``timeout_s`` (see :func:`client_config`)."""
        config = client_config(timeout_s, user_agent=self._user_agent)
        key = (region, float(config.connect_timeout))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                if self._session is None:  # a new session, never the shared default one (not thread-safe)
                    self._session = boto3.session.Session()
                client = self._session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
                self._clients[key] = client
            return client

    def close(self) -> None:
        """Close every cached client's connections (a later poll makes new clients)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
