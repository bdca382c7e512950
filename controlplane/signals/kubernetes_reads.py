"""Reading lists from a Kubernetes API server within one poll's deadline, and saying why a read failed.

Shared by the signal sources that read a cluster (free GPUs, and what may be
preempted): every call is bounded by what is left of the poll's deadline
(``_request_timeout``), pages are followed as client-go's pager does, and a
failure becomes one short line an operator can act on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

__all__ = ["MalformedResponse", "describe", "list_all"]

#: bounds the pager even against a server that keeps handing out new continue tokens
_MAX_PAGES = 10_000


class MalformedResponse(ValueError):
    """The API server answered 2xx with something that is not the object list it should be."""


def _items(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{what} is not a list")
    return value


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the poll's deadline passed before the next API call")
    return left


def _read_json(response: Any) -> Mapping[str, Any]:
    """The body of a raw (``_preload_content=False``) response as a JSON object."""
    try:
        data = response.data
    finally:
        response.release_conn()
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedResponse(f"the API server's answer is not JSON ({len(data)} bytes)") from exc
    if not isinstance(body, Mapping):
        raise MalformedResponse("the API server's answer is not a JSON object")
    return body


def list_all(
    call: Callable[..., Any], *, deadline: float, page_size: int, what: str, **kwargs: Any
) -> list[Mapping[str, Any]]:
    """Every item of a list call, page by page (``limit``/``continue``), each call bounded by ``deadline``.

    Like client-go's pager, a continue token that expired (410 Gone) falls
    back to one full list without a limit, rather than failing the poll.
    """
    items: list[Mapping[str, Any]] = []
    token: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        left = _left(deadline)
        try:
            body = _read_json(
                call(limit=page_size, _continue=token, _request_timeout=(left, left), _preload_content=False, **kwargs)
            )
        except ApiException as exc:
            if exc.status != 410 or token is None:
                raise
            left = _left(deadline)
            body = _read_json(call(_request_timeout=(left, left), _preload_content=False, **kwargs))
            return _items(body.get("items"), f"{what} items")
        items.extend(_items(body.get("items"), f"{what} items"))
        meta = body.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise MalformedResponse(f"the {what} list metadata is not an object")
        next_token = meta.get("continue") or None
        if next_token is None:
            return items
        if not isinstance(next_token, str) or next_token in seen:
            # a server handing back a token it gave before would page for ever
            raise MalformedResponse(f"the {what} list's continue token repeats")
        seen.add(next_token)
        token = next_token
    raise MalformedResponse(f"the {what} list has more than {_MAX_PAGES} pages")


def describe(exc: BaseException, needs: str = "list on nodes and pods cluster-wide") -> str:
    """A short, operator-facing reason (no tracebacks, no response bodies with secrets)."""
    if isinstance(exc, ApiException):
        hint = f" (needs {needs})" if exc.status in (401, 403) else ""
        return f"API server answered HTTP {exc.status} {exc.reason}{hint}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # before the timeouts: urllib3 makes NewConnectionError (refused, no route) a ConnectTimeoutError
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"cannot reach the API server: {exc}"
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return f"timed out: {exc}"
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return f"cannot reach the API server: {type(exc).__name__}: {exc}"
    if isinstance(exc, ConfigException):
        return f"no usable kubeconfig: {exc}"
    return f"{type(exc).__name__}: {exc}"
