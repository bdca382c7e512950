"""The console's routes on a real uvicorn: the bundle and its headers, ``/v1/whoami``, the simulator reports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.api.console_routes import CONSOLE_CSP
from controlplane.api.sim_reports import REPORT_CSP
from controlplane.store import Store
from tests.support.api_fixtures import ACME, METRICS, OPERATOR, ApiServer
from tests.support.stores import sqlite_store

pytestmark = pytest.mark.timeout(60)

BUNDLE = ["main.js", "api.js", "dom.js", "tasks.js", "receipt.js", "signals.js", "policy.js", "diff.js", "reports.js"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with sqlite_store(tmp_path / "store.db") as made:
        yield made


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "sim"
    folder.mkdir()
    (folder / "launch-day.html").write_text("<html><style>p{}</style><p>launch day</p></html>", encoding="utf-8")
    (folder / "notes.txt").write_text("not a report", encoding="utf-8")
    (folder / ".hidden.html").write_text("hidden", encoding="utf-8")
    (tmp_path / "secret.html").write_text("outside the folder", encoding="utf-8")
    os.symlink(tmp_path / "secret.html", folder / "escape.html")
    return folder


@pytest.fixture
def api(store: Store, tmp_path: Path, reports: Path) -> Iterator[ApiServer]:
    with ApiServer.start(store, tmp_path, sim_reports_dir=reports) as server:
        yield server


def test_the_page_and_every_file_of_the_bundle_come_with_the_strict_policy(api: ApiServer) -> None:
    client = api.client()  # no token: the page holds no data
    page = client.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="main.js"' in page.text
    for name in [*BUNDLE, "console.css"]:
        answer = client.get(f"/console/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-security-policy"] == CONSOLE_CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/console/main.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/console/console.css").headers["content-type"].startswith("text/css")
    assert page.headers["content-security-policy"] == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP
    assert "script-src 'self'" in CONSOLE_CSP


def test_console_without_the_slash_goes_to_the_page(api: ApiServer) -> None:
    answer = api.client().get("/console", follow_redirects=False)
    assert answer.status_code == 308
    assert answer.headers["location"] == "/console/"


@pytest.mark.parametrize("name", ["nope.js", "index.htm", "%2e%2e", "console_routes.py", "__init__.py"])
def test_only_the_bundle_is_served(api: ApiServer, name: str) -> None:
    answer = api.client().get(f"/console/{name}")
    assert answer.status_code == 404
    assert answer.headers["content-security-policy"] == CONSOLE_CSP


@pytest.mark.parametrize("path", ["/console/..%2Fapp.py", "/console/../api/app.py", "/console/%2e%2e/app.py"])
def test_no_path_leaves_the_bundle(api: ApiServer, path: str) -> None:
    answer = api.client().get(path)
    assert answer.status_code == 404
    assert "import" not in answer.text


def test_whoami_names_the_token_and_says_whether_it_sees_every_tenant(api: ApiServer) -> None:
    assert api.client(ACME).get("/v1/whoami").json() == {
        "name": "acme-ci",
        "tenant": "acme",
        "role": "submitter",
        "sees_all_tenants": False,
    }
    assert api.client(OPERATOR).get("/v1/whoami").json()["sees_all_tenants"] is True
    assert api.client().get("/v1/whoami").status_code == 401
    assert api.client("fp_not-a-token").get("/v1/whoami").status_code == 401
    assert api.client(METRICS).get("/v1/whoami").status_code == 403


def test_the_reports_folder_lists_its_html_reports_only(api: ApiServer) -> None:
    body = api.client(OPERATOR).get("/v1/simulator/reports").json()
    assert body["configured"] is True
    assert [r["name"] for r in body["reports"]] == ["launch-day.html"]  # not the .txt, hidden or escaping file
    assert body["reports"][0]["bytes"] > 0
    assert body["reports"][0]["modified_at"].endswith("Z")


def test_a_report_is_an_attachment_that_runs_nothing(api: ApiServer) -> None:
    answer = api.client(OPERATOR).get("/v1/simulator/reports/launch-day.html")
    assert answer.status_code == 200
    assert "launch day" in answer.text
    assert answer.headers["content-security-policy"] == REPORT_CSP
    assert "sandbox" in REPORT_CSP
    assert answer.headers["content-disposition"].startswith("attachment")
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_reports_are_for_operators(api: ApiServer) -> None:
    assert api.client(ACME).get("/v1/simulator/reports").status_code == 403
    assert api.client(ACME).get("/v1/simulator/reports/launch-day.html").status_code == 403
    assert api.client().get("/v1/simulator/reports").status_code == 401


def test_without_a_reports_folder_the_list_says_so(store: Store, tmp_path: Path) -> None:
    with ApiServer.start(store, tmp_path) as server:
        assert server.client(OPERATOR).get("/v1/simulator/reports").json() == {"configured": False, "reports": []}
        assert server.client(OPERATOR).get("/v1/simulator/reports/launch-day.html").status_code == 404
