"""The simulator's HTML report in a real browser: headless Chromium draws the page and keeps its tables.

Only local files: the page loads nothing, Chromium is told to use no proxy and gets its own
profile and home in the test's folder. Skipped where Debian's ``chromium`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from simulator.html_report import write_html
from tests.support.html_tree import header_and_body, parse
from tests.support.sim_reports import sample_report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]
# Okabe-Ito blue, the first run's line and the best cells' underline, as OpenCV's BGR
FIRST_LINE_BGR = np.array([0xB2, 0x72, 0x00])


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-proxy-server",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    # its own home and no session bus: nothing of the user's profile or desktop is read or written
    env = {**os.environ, "HOME": str(tmp_path), "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.fixture
def report_page(tmp_path: Path) -> Path:
    page = tmp_path / "report.html"
    write_html(sample_report(runs=4, points=2000), page)
    return page


def test_the_page_draws_something_in_chromium(tmp_path: Path, report_page: Path) -> None:
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2400", report_page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image is not None
    assert image.shape[:2] == (2400, 1400)
    assert float(image.std()) > 20.0, "the screenshot is (nearly) blank"
    # the charts are drawn: the first run's colour covers more than a few stray pixels
    near_blue = np.abs(image.astype(np.int16) - FIRST_LINE_BGR).max(axis=2) < 40
    assert int(near_blue.sum()) > 2000


def test_the_dom_chromium_builds_holds_the_tables(tmp_path: Path, report_page: Path) -> None:
    done = _chromium(tmp_path, "--dump-dom", report_page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    tree = parse(done.stdout)
    header, body = header_and_body(tree.find("table", id="comparison"))
    assert len(body) == 5
    assert all(len(row) == len(header) for row in body)
    assert [row[0].text() for row in body][-1] == "bound:offline"
    assert len(list(tree.iter("polyline"))) == 4 * 3 + 4 * 3
    assert not list(tree.iter("script"))
