"""The simulator's HTML reports (``fusionctl sim run --report``) for operators, from one configured folder.

``FUSIONPLANE_SIM_REPORTS_DIR`` names the folder (``make sim`` writes to
``build/sim/``); unset, the list is empty and says so. Only ``*.html`` files
directly inside it are listed or served, by a name that cannot hold a path,
and a file whose real path leaves the folder (a symlink) is refused.

A report is served as an attachment under a CSP that runs nothing and loads
nothing (``sandbox``): it is a page written from a scenario and a database,
and neither is trusted to be free of markup. The console fetches it with
the operator's token and saves it; opened from disk it draws as it does
after ``sim run``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller, require_operator
from controlplane.api.errors import ApiError

__all__ = ["REPORT_CSP", "REPORT_NAME", "sim_report_router"]

#: a file name, not a path: no slash, no leading dot, ends in .html
REPORT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,122}\.html$"
_NAME = re.compile(REPORT_NAME)
#: the report's own inline style and nothing else; sandboxed even if opened in place
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
_ERRORS = errors(*CALLER, why={403: "Operators only"})
_REPORT_ERRORS = errors(*CALLER, 404, why={403: "Operators only", 404: "No such report"})


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _inside(folder: Path, name: str) -> Path | None:
    """The report file ``name`` in ``folder``, or None when absent, not a file, or really elsewhere."""
    if not _NAME.fullmatch(name):
        return None
    root = folder.resolve()
    try:
        real = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.parent == root and real.is_file() else None


def list_reports(folder: Path) -> list[dict[str, Any]]:
    """The folder's reports, newest first (an absent or unreadable folder has none)."""
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        real = _inside(folder, entry.name)
        if real is None:
            continue
        stat = real.stat()
        found.append({"name": entry.name, "bytes": stat.st_size, "modified_at": _moment(stat.st_mtime)})
    return sorted(found, key=lambda r: (r["modified_at"], r["name"]), reverse=True)


def sim_report_router(*, reports_dir: Path | None) -> APIRouter:
    """``GET /v1/simulator/reports`` and ``GET /v1/simulator/reports/{name}`` (operators)."""
    router = APIRouter(tags=["simulator"])

    @router.get("/v1/simulator/reports", responses=_ERRORS)
    def reports(principal: Caller) -> dict[str, Any]:
        """The simulator reports in ``FUSIONPLANE_SIM_REPORTS_DIR``, newest first (none when it is unset)."""
        require_operator(principal)
        if reports_dir is None:
            return {"configured": False, "reports": []}
        return {"configured": True, "reports": list_reports(reports_dir)}

    @router.get(
        "/v1/simulator/reports/{name}",
        response_class=FileResponse,
        responses={**_REPORT_ERRORS, 200: {"content": {"text/html": {}}}},
    )
    def report(name: Annotated[str, PathParam(pattern=REPORT_NAME)], principal: Caller) -> FileResponse:
        """One report page, as an attachment that runs nothing and loads nothing."""
        require_operator(principal)
        found = _inside(reports_dir, name) if reports_dir is not None else None
        if found is None:
            raise ApiError(404, "not_found", f"no simulator report {name}", field="name")
        headers = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
        return FileResponse(found, media_type="text/html; charset=utf-8", filename=name, headers=headers)

    return router
