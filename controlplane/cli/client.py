"""The CLI's HTTP client for the REST API (``FUSIONPLANE_URL``, ``FUSIONPLANE_TOKEN``).

API errors become one line on stderr, ``error: FIELD: MESSAGE (HTTP 422)``,
and exit status 1; an unreachable API exits 3.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click
import httpx

from controlplane.config import DEFAULT_API_URL, ClientSettings

__all__ = ["ApiClient", "client_options"]

DEFAULT_URL = DEFAULT_API_URL
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class ApiClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        given = ClientSettings.from_env()
        self.url = (url or given.url).rstrip("/")
        token = token or given.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def fail(self, response: httpx.Response) -> NoReturn:
        """Print the API's error for ``response`` on stderr and exit 1."""
        self._fail(response)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One exchange as it went: any status, and ``httpx.HTTPError`` raised (for callers that retry)."""
        return self._http.request(method, path, **kwargs)

    def _fail(self, response: httpx.Response) -> NoReturn:
        try:
            error = response.json().get("error", {})
        except ValueError:
            error = {}
        field = f"{error['field']}: " if error.get("field") else ""
        message = error.get("message") or response.text.strip()[:200] or response.reason_phrase
        click.echo(f"error: {field}{message} (HTTP {response.status_code})", err=True)
        sys.exit(EXIT_API_ERROR)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot reach the FusionPlane API at {self.url}: {exc}", err=True)
            sys.exit(EXIT_UNREACHABLE)
        if response.status_code >= 400:
            self._fail(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def close(self) -> None:
        self._http.close()

    def event_stream(self) -> httpx.Client:
        """A client of its own for ``GET /v1/events`` (a long read on another thread): heartbeats come every
        15 s, so a read that waits a minute means the stream is dead."""
        return httpx.Client(base_url=self.url, headers=self._http.headers, timeout=httpx.Timeout(10.0, read=60.0))

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed exchange, its body read as it arrives; an error status is printed (exit 1) as for
        :meth:`request`, a connection that fails on the way exits 3, a redirect is the caller's."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    self._fail(response)
                yield response
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot reach the FusionPlane API at {self.url}: {exc}", err=True)
            sys.exit(EXIT_UNREACHABLE)


def client_options(func: Any) -> Any:
    """``--url`` and ``--token`` (defaulting to the environment) for commands that call the API."""
    func = click.option(
        "--token", envvar="FUSIONPLANE_TOKEN", default=None, help="Bearer token [env: FUSIONPLANE_TOKEN]"
    )(func)
    func = click.option(
        "--url",
        envvar="FUSIONPLANE_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="API base URL [env: FUSIONPLANE_URL]",
    )(func)
    return func
