"""``/v1/simulator/reports/{name}`` against hostile names: only a report file directly in the folder is served."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.api.sim_reports import list_reports
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import OPERATOR, ApiServer

pytestmark = pytest.mark.timeout(60)

SECRET = "outside the reports folder"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    reports = tmp_path / "reports"
    (reports / "sub").mkdir(parents=True)
    (reports / "ok.html").write_text("<p>ok</p>", encoding="utf-8")
    (reports / "sub" / "nested.html").write_text(SECRET, encoding="utf-8")
    (tmp_path / "secret.html").write_text(SECRET, encoding="utf-8")
    os.symlink(tmp_path / "secret.html", reports / "link.html")
    os.symlink(reports / "sub", reports / "dir.html")
    return reports


@pytest.fixture
def api(tmp_path: Path, folder: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    try:
        with ApiServer.start(Store(engine), tmp_path, sim_reports_dir=folder) as server:
            yield server
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "name",
    [
        "link.html",  # a symlink out of the folder
        "dir.html",  # a folder
        "..%2Fsecret.html",
        "sub%2Fnested.html",
        "%2e%2e%2fsecret.html",
        ".hidden.html",
        "ok.html%00.txt",
        "ok.htm",
        "OK.HTML",
        "a" * 200 + ".html",
        "ok.html%0d%0aSet-Cookie:x=1",
    ],
)
def test_a_hostile_name_gets_no_file(api: ApiServer, name: str) -> None:
    answer = api.client(OPERATOR).get(f"/v1/simulator/reports/{name}")
    assert answer.status_code in (404, 422), (name, answer.status_code)
    assert SECRET not in answer.text
    assert "set-cookie" not in answer.headers


def test_the_list_leaves_out_links_folders_and_nested_files(folder: Path) -> None:
    assert [r["name"] for r in list_reports(folder)] == ["ok.html"]


def test_a_missing_folder_lists_nothing(tmp_path: Path) -> None:
    assert list_reports(tmp_path / "absent") == []
