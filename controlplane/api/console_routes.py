"""The operator console at ``/console/``: a static page, its scripts and its style, under a strict CSP.

The console is a small bundle of plain HTML, JavaScript modules and CSS
shipped inside the package (``controlplane/api/console/``); it holds no
data and no secret. The page asks for a bearer token, keeps it in
``sessionStorage`` and reads the same JSON API as ``fusionctl`` with it, so
the API's own authorization decides what a token sees: a submitter gets its
tenant's tasks, an operator every tenant, the receipts, the signals and the
policy. Nothing here authenticates, because nothing here is data.

Every answer carries a Content-Security-Policy that allows scripts, styles
and requests to this origin only and no inline script or style, so a task
id, tenant name or reason that slipped into the page as markup could not
run. The scripts never build markup from text either (``textContent``
only): the CSP is the second wall, not the first.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller

__all__ = ["CONSOLE_CSP", "CONSOLE_HEADERS", "console_router"]

#: this origin only; no inline code, no frames, no plug-ins, no form posts elsewhere
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONSOLE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # a new release must reach the browser at once: the bundle is small, revalidating it is cheap
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
_ERRORS = errors(*CALLER, why={403: "A metrics token"})


def _bundle() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by name, read once: a fixed set, so no request names a path on disk."""
    folder = resources.files("controlplane.api").joinpath("console")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _MEDIA_TYPES:
            files[entry.name] = (entry.read_bytes(), _MEDIA_TYPES[suffix])
    return files


def whoami_json(principal: Principal) -> dict[str, Any]:
    return {
        "name": principal.name,
        "tenant": principal.tenant,
        "role": principal.role,
        "sees_all_tenants": principal.sees_all_tenants,
    }


def console_router() -> APIRouter:
    """``/console/`` and its files, and ``GET /v1/whoami`` (what the page shows and hides follows it)."""
    router = APIRouter()
    files = _bundle()

    def answer(name: str) -> Response:
        body, media_type = files[name]
        return Response(body, media_type=media_type, headers=CONSOLE_HEADERS)

    @router.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        # relative links in the page resolve against /console/, not /
        return RedirectResponse("/console/", status_code=308, headers=CONSOLE_HEADERS)

    @router.get("/console/", include_in_schema=False)
    def console_page() -> Response:
        return answer("index.html")

    @router.get("/console/{name}", include_in_schema=False)
    def console_file(name: str) -> Response:
        if name not in files or name == "index.html":
            return Response(b"not found\n", status_code=404, media_type="text/plain", headers=CONSOLE_HEADERS)
        return answer(name)

    @router.get("/v1/whoami", tags=["auth"], responses=_ERRORS)
    def whoami(principal: Caller) -> dict[str, Any]:
        """The caller's token: name, tenant, role, and whether it sees every tenant."""
        return whoami_json(principal)

    return router
