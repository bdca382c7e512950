"""The operator console against hostile text: labels, reasons, rejection details, signal names, ids.

Everything the API returns is data a tenant or a cloud could have shaped.
The page must show it as the characters it is: no element, no script, no
handler made from it. Two walls, each tested: the scripts build the page
from text nodes only (read here from the bundle), and the page runs under
a CSP that allows no inline code (read from the served headers); then the
real thing in headless Chromium, where an injected ``onerror`` would set
``window.__pwned``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pytest

from controlplane.api.console_routes import CONSOLE_CSP
from controlplane.domain import Candidate, PlacementPlan, Rejection
from controlplane.store import PlannedLaunch, Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, OPERATOR, ApiServer
from tests.support.browser import (
    BROWSER_MISSING,
    chromium_session,
    log_in,
    screenshot_on_failure,
    wait_for,
    wait_for_text,
)

pytestmark = pytest.mark.timeout(120)

BUNDLE = resources.files("controlplane.api").joinpath("console")
#: markup that runs script if it is ever parsed as HTML rather than shown as text
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
#: ways of turning text into markup or code; none may appear in the console's scripts
SINKS = [
    r"\.innerHTML\b",
    r"\.outerHTML\b",
    r"insertAdjacentHTML",
    r"document\.write",
    r"\beval\s*\(",
    r"\bnew\s+Function\b",
    r"setTimeout\(\s*['\"`]",
    r"setInterval\(\s*['\"`]",
    r"createContextualFragment",
    r"DOMParser",
    r"srcdoc",
]


def _scripts() -> dict[str, str]:
    return {entry.name: entry.read_text(encoding="utf-8") for entry in BUNDLE.iterdir() if entry.name.endswith(".js")}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


# --------------------------------------------------------------------------- the bundle, read


def test_no_script_builds_markup_from_text() -> None:
    scripts = _scripts()
    assert len(scripts) >= 8
    for name, text in scripts.items():
        for sink in SINKS:
            assert not re.search(sink, text), f"{name} uses {sink}"


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    page = BUNDLE.joinpath("index.html").read_text(encoding="utf-8")
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.script_text == ""
    for tag, attrs in parsed.tags:
        assert not [name for name in attrs if name.startswith("on")], tag
        assert "style" not in attrs, tag
        assert tag != "style"
        if tag == "script":
            assert attrs.get("src") == "main.js"
        for link in (attrs.get("src"), attrs.get("href")):
            assert link is None or not re.match(r"^([a-z]+:|//)", link), link
    everything = page + "".join(_scripts().values()) + BUNDLE.joinpath("console.css").read_text(encoding="utf-8")
    assert not re.search(r"https?://|@import|@font-face|url\(", everything)


def test_the_policy_allows_no_inline_code_and_no_other_origin() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CONSOLE_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"


# --------------------------------------------------------------------------- the page, drawn


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    try:
        with ApiServer.start(Store(engine), tmp_path) as server:
            yield server
    finally:
        engine.dispose()


def _hostile_task(api: ApiServer) -> str:
    """A task whose labels, queue reason and receipt all carry the payload."""
    answer = api.client(ACME).post("/v1/tasks", json=api.body(labels={"note": PAYLOAD}))
    assert answer.status_code == 202, answer.text
    task_id = str(answer.json()["id"])
    (claimed,) = [t for t in api.store.claim_queued(batch_size=10, scheduler_id="s") if t.id == task_id]
    plan = PlacementPlan(
        task_id=claimed.id,
        policy_version="f" * 64,
        decided_at=datetime.now(UTC),
        candidates=(Candidate(target=f"t{PAYLOAD}", provider="local", private=True, reasons=(f"reason {PAYLOAD}",)),),
        rejections=(Rejection(target="aws", code=f"code{PAYLOAD}", detail=f"detail {PAYLOAD}"),),
        trace=(f"trace {PAYLOAD}",),
        signals_used={f"signal{PAYLOAD}": {"value": PAYLOAD, "age_seconds": 1.0, "ttl_seconds": 30.0}},
    )
    api.store.start_launch_groups([PlannedLaunch(plan=plan, wait=f"waiting {PAYLOAD}")], actor="s")
    return task_id


def _nothing_ran(driver: object) -> None:
    assert driver.execute_script("return window.__pwned") is None  # type: ignore[attr-defined]
    injected = driver.execute_script("return document.querySelectorAll('#view img, #view script, #view iframe').length")  # type: ignore[attr-defined]
    assert injected == 0


@pytest.mark.slow
@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_hostile_text_is_shown_as_text_in_the_list_and_the_receipt(api: ApiServer, tmp_path: Path) -> None:
    task_id = _hostile_task(api)
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, api.url, OPERATOR)
        row = wait_for(driver, f'tr[data-task-id="{task_id}"]')
        assert PAYLOAD in row.find_element("css selector", "td.why").text
        _nothing_ran(driver)

        row.find_element("css selector", "a").click()
        receipt = wait_for(driver, "#receipt")
        text = receipt.text
        for shown in (f"reason {PAYLOAD}", f"detail {PAYLOAD}", f"trace {PAYLOAD}", f"signal{PAYLOAD}", f"t{PAYLOAD}"):
            assert shown in text, shown
        assert PAYLOAD in driver.find_element("css selector", "dl.fields").text  # the labels
        _nothing_ran(driver)


@pytest.mark.slow
@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_a_hostile_task_id_in_the_address_is_text_too(api: ApiServer, tmp_path: Path) -> None:
    with chromium_session(tmp_path / "browser") as driver, screenshot_on_failure(driver, tmp_path / "failure.png"):
        log_in(driver, api.url, OPERATOR)
        wait_for(driver, "#who-text")
        driver.get(f"{api.url}/console/#/tasks/{quote(PAYLOAD, safe='')}")
        wait_for(driver, "#view p.error")
        assert PAYLOAD in driver.find_element("css selector", "#view h2").text
        _nothing_ran(driver)
        driver.get(f"{api.url}/console/#/tasks/%E0%A4%A")  # a malformed escape is shown as typed
        wait_for_text(driver, "#view h2 code", "%E0%A4%A")
        assert "no task" in wait_for(driver, "#view p.error").text
