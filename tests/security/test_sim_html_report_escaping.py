"""The simulator's HTML report with hostile names, targets and descriptions: text stays text, nothing loads.

The report document comes from a simulation whose scenario, policies and targets anyone may name;
the page is opened in a browser, perhaps mailed around. Nothing in it may become markup, a script,
an event handler or a URL the browser would follow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from simulator.html_report import render_html, write_html
from tests.support.html_tree import Element, parse
from tests.support.sim_reports import sample_report

SVG_NS = "http://www.w3.org/2000/svg"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg onload=alert(3)>",
    "</svg><script>alert(4)</script>",
    "</title></style><script>alert(5)</script>",
    "javascript:alert(6)",
    "<a href=javascript:alert(7)>x</a>",
    "<!-- --><![CDATA[ ]]>&amp;&#x3c;",
)


def _hostile_report() -> dict[str, Any]:
    report = sample_report(runs=len(HOSTILE), points=40)
    scenario = report["scenario"]
    scenario.update(name=HOSTILE[0], description="\n".join(HOSTILE), start=HOSTILE[1], seed=HOSTILE[2])
    for i, (run, bad) in enumerate(zip(report["runs"], HOSTILE, strict=False)):
        run["name"] = f"{bad} #{i}"
        summary, series = run["summary"], run["series"]
        summary["spend_by_target"] = {f"{bad} spend": 10.0 + i}
        summary["sla"] = {**summary["sla"], f"{bad} priority": 0.5}
        series["gpus_in_use"] = {f"{bad} target": series["gpus_in_use"]["aws-spot"]}
    return report


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(_hostile_report())


@pytest.fixture(scope="module")
def tree(page: str) -> Element:
    return parse(page)


def test_no_script_element_and_no_event_handler_attribute(page: str, tree: Element) -> None:
    assert "<script" not in page.lower()
    assert not list(tree.iter("script"))
    assert not list(tree.iter("img"))
    handlers = [(e.tag, name) for e in tree.iter() for name in e.attrs if name.lower().startswith("on")]
    assert handlers == []


def test_no_link_or_url_attribute_a_browser_would_follow(tree: Element) -> None:
    assert not list(tree.iter("a"))
    for element in tree.iter():
        for name, value in element.attrs.items():
            assert name not in ("href", "src", "xlink:href", "action", "formaction"), (element.tag, name)
            # text attributes (aria-label) may quote a name; no value may be a javascript: URL
            assert not (value or "").strip().lower().startswith("javascript:"), (element.tag, name, value)
            if name != "xmlns":
                assert "://" not in (value or ""), (element.tag, name, value)


def test_every_hostile_string_reads_back_as_the_text_it_was(tree: Element) -> None:
    text = tree.text()
    for i, bad in enumerate(HOSTILE):
        assert f"{bad} #{i}" in text
        assert f"{bad} spend" in text
        assert f"{bad} priority" in text
        assert f"{bad} target" in text
    assert tree.find("head").find("title").text() == f"Simulation report: {HOSTILE[0]}"
    assert tree.find("h1").text() == f"Simulation report: {HOSTILE[0]}"


def test_the_content_security_policy_forbids_every_source(tree: Element) -> None:
    head = tree.find("head")
    policies = [
        m.attrs.get("content") for m in head.iter("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert policies == [CSP]


def test_the_only_url_in_the_page_is_the_svg_namespace() -> None:
    page = render_html(sample_report(runs=3, points=100))
    assert set(re.findall(r"(?i)\b(?:https?:)?//[^\s\"'<>)]*", page)) == {SVG_NS}
    assert set(re.findall(r"(?i)xmlns=\"([^\"]*)\"", page)) == {SVG_NS}


def test_control_characters_and_lone_surrogates_do_not_break_the_page(tmp_path: Path) -> None:
    report = sample_report(runs=1, points=10)
    report["runs"][0]["name"] = "nul\x00 bell\x07 surrogate\ud800 end"
    target = tmp_path / "report.html"
    write_html(report, target)
    text = parse(target.read_text(encoding="utf-8")).text()
    assert "nul\ufffd bell\ufffd surrogate\ufffd end" in text


def test_a_string_where_a_number_belongs_is_refused_not_rendered() -> None:
    report = sample_report(runs=1, points=10)
    report["runs"][0]["summary"]["usd_total"] = "<script>alert(8)</script>"
    with pytest.raises(ValueError, match=r"runs\[0\]\.summary\.usd_total"):
        render_html(report)
