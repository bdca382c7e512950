"""Client errors of the API server, translated into the domain's taxonomy at the boundary."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controlplane.domain import (
    InvalidSpec,
    ProviderError,
    QuotaExceeded,
    Throttled,
    Unavailable,
)
from providers.bootstrap import (
    access_denied,
)

#: where an operator looks when the API server answers 403 (not a quota)
ACCESS_CHECK = (
    "the RBAC Role and RoleBinding of the control plane's service account (or kubeconfig user) "
    "in this target's namespace (docs/providers.md, RBAC)"
)


def api_message(exc: ApiException) -> str:
    """The Status ``message`` of an API error (short, no tracebacks), else its HTTP reason."""
    message = ""
    try:
        body = json.loads(exc.body) if exc.body else None
    except (ValueError, TypeError):
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        message = body["message"]
    return (message or str(exc.reason or ""))[:500]


def translate(exc: BaseException, what: str, *, target: str, scrub: Iterable[str] = ()) -> ProviderError:
    """The taxonomy error for an exception of the client (see the module docstring)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ApiException):
        message = api_message(exc)
        for secret in scrub:  # an API server echoing a value must not put a token into a receipt
            if secret:
                message = message.replace(secret, "***")
        status = int(exc.status or 0)
        detail = f"{what}: HTTP {status}: {message}"
        if status == 403:
            if "exceeded quota" in message.lower():
                return QuotaExceeded(f"{what}: ResourceQuota exceeded: {message}", target=target)
            return access_denied(what, f"HTTP 403 forbidden (RBAC): {message}", target=target, check=ACCESS_CHECK)
        if status in (400, 422):
            return InvalidSpec(detail, target=target)
        if status == 429:
            return Throttled(detail, target=target)
        if status == 401:
            # expired or wrong credentials: this cluster's problem, not the task's
            return Unavailable(f"{what}: unauthorized (credentials): {message}", target=target)
        if status == 409 or status >= 500 or status == 0:
            return Unavailable(detail, target=target)
        return InvalidSpec(detail, target=target)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # before the timeouts: urllib3 makes NewConnectionError (refused, no route) a ConnectTimeoutError
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return Unavailable(f"{what}: cannot reach the API server: {exc}", target=target)
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return Unavailable(f"{what}: the API server timed out: {exc}", target=target)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return Unavailable(f"{what}: cannot reach the API server: {type(exc).__name__}: {exc}", target=target)
    if isinstance(exc, ConfigException):
        return Unavailable(f"{what}: no usable kubeconfig: {exc}", target=target)
    if isinstance(exc, ValueError):  # a 2xx answer that is not the JSON object it should be
        return Unavailable(f"{what}: malformed answer from the API server: {exc}", target=target)
    raise exc


def not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409
