"""Calls to the API server: one bounded request as a JSON object, a read that maps 404 to None, a pager.

Every call carries ``_request_timeout`` and asks for the raw answer
(``_preload_content=False``): the provider reads plain JSON, never the
client's generated models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from providers.kubernetes.errors import not_found
from providers.kubernetes.status import get_path, items_of

__all__ = ["Calls", "call", "list_all", "read"]

#: bounds the pager even against a server that keeps handing out new continue tokens
_MAX_PAGES = 10_000


def call(fn: Callable[..., Any], *args: Any, timeout_s: float, **kwargs: Any) -> dict[str, Any]:
    """One API call, bounded by the request timeout, its answer as a JSON object."""
    response = fn(*args, _request_timeout=(timeout_s, timeout_s), _preload_content=False, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    body = json.loads(data) if data else {}
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    return body


def read(fn: Callable[..., Any], name: str, namespace: str, *, timeout_s: float) -> dict[str, Any] | None:
    """The object, or None when the API server says 404."""
    try:
        return call(fn, name, namespace, timeout_s=timeout_s)
    except ApiException as exc:
        if not_found(exc):
            return None
        raise


def list_all(
    fn: Callable[..., Any], namespace: str, *, timeout_s: float, page_size: int, **kwargs: Any
) -> list[Mapping[str, Any]]:
    """Every item of a namespaced list, page by page (``limit``/``continue``).

    Like client-go's pager, an expired continue token (410) falls back to
    one full list rather than failing.
    """
    items: list[Mapping[str, Any]] = []
    token: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        try:
            body = call(fn, namespace, timeout_s=timeout_s, limit=page_size, _continue=token, **kwargs)
        except ApiException as exc:
            if exc.status != 410 or token is None:
                raise
            return items_of(call(fn, namespace, timeout_s=timeout_s, **kwargs).get("items"))
        items.extend(items_of(body.get("items")))
        next_token = get_path(body, "metadata", "continue") or None
        if next_token is None:
            return items
        if not isinstance(next_token, str) or next_token in seen:
            raise ValueError("the list's continue token repeats")
        seen.add(next_token)
        token = next_token
    raise ValueError(f"the list has more than {_MAX_PAGES} pages")


@dataclass(frozen=True)
class Calls:
    """:func:`call`, :func:`read` and :func:`list_all` with one provider's request timeout and page size."""

    timeout_s: float
    page_size: int

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One bounded call (see :func:`call`)."""
        return call(fn, *args, timeout_s=self.timeout_s, **kwargs)

    def read(self, fn: Callable[..., Any], name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None on 404 (see :func:`read`)."""
        return read(fn, name, namespace, timeout_s=self.timeout_s)

    def list_all(self, fn: Callable[..., Any], namespace: str, **kwargs: Any) -> list[Mapping[str, Any]]:
        """Every item, page by page (see :func:`list_all`)."""
        return list_all(fn, namespace, timeout_s=self.timeout_s, page_size=self.page_size, **kwargs)
