"""The operator console in headless Chromium against a real ``fusionctl serve``.

Log in with a token through the page's form, submit a task through the API,
see it in the console's list, open it and see its receipt (candidates and
their reasons). A submitter sees its own tenant's tasks only and no receipt.
Each test saves a screenshot into its folder when it fails; the operator's
receipt is also saved into ``build/console/`` for the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.api.auth import create_token
from simulator.html_report import write_html
from tests.conftest import REPO
from tests.support.api_fixtures import PNG_START
from tests.support.browser import (
    BROWSER_MISSING,
    chromium_session,
    log_in,
    screenshot_on_failure,
    wait_for,
    wait_for_text,
)
from tests.support.serve_process import ServedPlane, served
from tests.support.sim_reports import sample_report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING)),
]
RECORD = REPO / "build" / "console"


@dataclass(frozen=True)
class Console:
    plane: ServedPlane
    tokens: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.plane.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=10
        )

    def submit(self, who: str, **extra: Any) -> str:
        """A task of ``who``'s tenant, its inputs uploaded first (a PNG's first bytes; the rest is not an image)."""
        with self.client(who) as client:
            uris = [client.put(f"/v1/uploads/{name}", content=PNG_START).json()["uri"] for name in ("s.png", "t.png")]
            answer = client.post("/v1/tasks", json={"source": uris[0], "target": uris[1], **extra})
            assert answer.status_code == 202, answer.text
            return str(answer.json()["id"])

    def wait_decided(self, task_id: str, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        with self.client("ops") as client:
            while not client.get(f"/v1/tasks/{task_id}/decision").json()["decisions"]:
                assert time.monotonic() < deadline, f"{task_id} was never placed"
                time.sleep(0.1)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    workdir = tmp_path_factory.mktemp("serve")
    # a copy of the default policy, so that a test can change it and the console show the difference
    policy = json.loads((REPO / "policies" / "default.json").read_text(encoding="utf-8"))
    policy.pop("$schema", None)
    (workdir / "policy.json").write_text(json.dumps(policy, indent=2), encoding="utf-8")
    reports = workdir / "reports"
    reports.mkdir()
    write_html(sample_report(runs=2, points=50), reports / "launch-day.html")
    env = {"FUSIONPLANE_POLICY_FILE": str(workdir / "policy.json"), "FUSIONPLANE_SIM_REPORTS_DIR": str(reports)}
    with served(workdir, **env) as plane:
        tokens = {
            "ops": create_token(plane.tokens_file, tenant="ops", role="operator", name="ops"),
            "acme": create_token(plane.tokens_file, tenant="acme", role="submitter", name="acme-ci"),
            "globex": create_token(plane.tokens_file, tenant="globex", role="submitter", name="globex-ci"),
        }
        deadline = time.monotonic() + 10
        # new tokens take effect within about a second, without a restart
        while plane.get("/v1/whoami", tokens["globex"]).status_code != 200:
            assert time.monotonic() < deadline, "the tokens never took effect"
            time.sleep(0.05)
        yield Console(plane=plane, tokens=tokens)


def test_an_operator_sees_a_submitted_task_and_its_receipt(console: Console, tmp_path: Path) -> None:
    task_id = console.submit("acme")
    console.wait_decided(task_id)
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["ops"])
        assert "ops (operator, tenant ops)" in wait_for(driver, "#who-text").text
        row = wait_for(driver, f'tr[data-task-id="{task_id}"]')
        assert "acme" in row.text
        RECORD.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(RECORD / "tasks.png"))
        row.find_element("css selector", "a").click()

        candidate = wait_for(driver, "#receipt li.candidate")
        assert candidate.get_attribute("data-target") == "local"
        reasons = [r.text for r in driver.find_elements("css selector", "#receipt li.candidate li.reason")]
        assert all(reasons), "every candidate says why it is there"
        assert any(reason.startswith("rule default ranks it") for reason in reasons), reasons
        assert "Decision 1 of" in driver.find_element("css selector", "#receipt").text
        assert wait_for(driver, "#task-id").text == task_id
        assert driver.find_elements("css selector", "#receipt table.signals, #receipt p.muted")  # signals or "none"
        assert driver.find_elements("css selector", "#attempts tr.attempt"), "the attempt the scheduler launched"
        driver.save_screenshot(str(RECORD / "receipt.png"))


def test_the_task_list_follows_the_event_stream(console: Console, tmp_path: Path) -> None:
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["acme"])
        wait_for(driver, '#task-list[data-stream="live"]')  # GET /v1/events opened with the tab's token
        task_id = console.submit("acme")
        # with the stream open the timer redraws only every 30 s: a row within 3 s came by the stream
        wait_for(driver, f'tr[data-task-id="{task_id}"]', within_s=3.0)


def test_an_operator_reads_signals_and_the_policy_in_force(console: Console, tmp_path: Path) -> None:
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["ops"])
        wait_for(driver, "#who-text")
        driver.get(f"{console.plane.url}/console/#/policy")
        version = wait_for(driver, "#policy-version").text
        with console.client("ops") as client:
            assert version == client.get("/v1/policy").json()["version"]
        assert wait_for(driver, "#policy-history tr.policy-application")
        assert '"targets"' in wait_for(driver, "#policy-document").text
        driver.get(f"{console.plane.url}/console/#/signals")
        wait_for_text(driver, "#view h2", "Signals")
        assert not driver.find_elements("css selector", "#view p.error")


def test_a_changed_policy_shows_in_the_history_and_the_difference(console: Console, tmp_path: Path) -> None:
    policy_file = console.plane.workdir / "policy.json"
    policy = json.loads(policy_file.read_text(encoding="utf-8"))
    before = policy["description"]
    policy["description"] = "Changed for the console's policy diff."
    with console.client("ops") as client:
        old = client.get("/v1/policy").json()["version"]
        policy_file.write_text(json.dumps(policy, indent=2), encoding="utf-8")  # serve watches the file
        deadline = time.monotonic() + 20
        while (new := client.get("/v1/policy").json()["version"]) == old:
            assert time.monotonic() < deadline, "the changed policy never took effect"
            time.sleep(0.1)
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["ops"])
        wait_for(driver, "#who-text")
        driver.get(f"{console.plane.url}/console/#/policy")
        assert wait_for(driver, "#policy-version").text == new
        assert len(driver.find_elements("css selector", "#policy-history tr.policy-application")) >= 2
        wait_for(driver, "#policy-diff")
        added = [line.text for line in driver.find_elements("css selector", "#policy-diff span.added")]
        removed = [line.text for line in driver.find_elements("css selector", "#policy-diff span.removed")]
        assert added == ['+   "description": "Changed for the console\'s policy diff.",']
        assert removed == [f'-   "description": {json.dumps(before)},']
        RECORD.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(RECORD / "policy-diff.png"))


def test_an_operator_saves_a_simulator_report(console: Console, tmp_path: Path) -> None:
    written = (console.plane.workdir / "reports" / "launch-day.html").read_bytes()
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["ops"])
        wait_for(driver, "#who-text")
        driver.get(f"{console.plane.url}/console/#/reports")
        row = wait_for(driver, "#report-table tr.report")
        assert "launch-day.html" in row.text
        row.find_element("css selector", "button").click()
        assert "Saved launch-day.html" in wait_for(driver, "#report-status").text
        saved = tmp_path / "browser" / "downloads" / "launch-day.html"
        deadline = time.monotonic() + 10
        while not saved.is_file():
            assert time.monotonic() < deadline, "the report was not saved"
            time.sleep(0.05)
        assert saved.read_bytes() == written


def test_a_submitter_sees_its_own_tenant_only_and_no_receipt(console: Console, tmp_path: Path) -> None:
    theirs = console.submit("acme")
    own = console.submit("globex")
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, console.tokens["globex"])
        wait_for(driver, f'tr[data-task-id="{own}"]')
        shown = {row.get_attribute("data-task-id") for row in driver.find_elements("css selector", "tr.task")}
        assert theirs not in shown
        assert {row.text.split()[1] for row in driver.find_elements("css selector", "tr.task")} == {"globex"}
        hidden = [
            a.get_attribute("textContent")
            for a in driver.find_elements("css selector", "nav a")
            if not a.is_displayed()
        ]
        assert hidden == ["Signals", "Policy", "Simulator reports"]

        driver.find_element("css selector", f'tr[data-task-id="{own}"] a').click()
        assert "for operators" in wait_for(driver, "#receipt-hidden").text
        driver.get(f"{console.plane.url}/console/#/tasks/{theirs}")
        assert "another tenant" in wait_for(driver, "#view p.error").text  # the API's own 403
        driver.get(f"{console.plane.url}/console/#/signals")
        wait_for_text(driver, "#view h2", "Signals")
        assert "Not for this token: operators only" in wait_for(driver, "#view p.error").text


def test_a_refused_token_is_not_kept(console: Console, tmp_path: Path) -> None:
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, console.plane.url, "fp_not-a-token")
        assert "refused" in wait_for(driver, "#login-error").text
        assert driver.execute_script("return sessionStorage.length") == 0
        log_in(driver, console.plane.url, console.tokens["acme"])
        wait_for(driver, "#who-text")
        driver.find_element("css selector", "#logout").click()
        wait_for(driver, "#token")
        assert driver.execute_script("return sessionStorage.length") == 0
