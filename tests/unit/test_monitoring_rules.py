"""The alert rules: valid for Prometheus, every alert unit-tested firing and not firing, each with its runbook.

``promtool`` (Debian's ``prometheus`` package, ``make system-deps``) checks
the rules and runs ``deploy/monitoring/tests/*.yaml``. The dashboard's
queries go through the same PromQL parser, as recording rules, with
Grafana's variables given values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import ALERTS_FILE, RULE_TESTS, alert_rules, dashboard_queries

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package; `make system-deps`)"
)
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "operations-alerts.md"
SEVERITIES = {"critical", "warning"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = _promtool("check", "rules", str(ALERTS_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


@needs_promtool
def test_the_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests under deploy/monitoring/tests"
    ran = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert ran.returncode == 0, ran.stdout + ran.stderr


@needs_promtool
def test_promtool_fails_a_rule_test_that_expects_the_wrong_alert(tmp_path: Path) -> None:
    # the unit tests above can fail: the same file with one expectation turned around does
    (source,) = [path for path in RULE_TESTS if path.name == "fusionplane-alerts.test.yaml"]
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    document["rule_files"] = [str(ALERTS_FILE)]
    first = document["tests"][0]["alert_rule_test"][0]
    assert first["exp_alerts"] == []
    first["exp_alerts"] = [{"exp_labels": {"severity": "critical"}}]
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    ran = _promtool("test", "rules", str(broken))
    assert ran.returncode != 0
    assert "FusionPlaneNoLeader" in ran.stdout + ran.stderr


def _expectations() -> dict[str, set[bool]]:
    """Alert name -> {True if some case expects it firing, False if some case expects it silent}."""
    seen: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                seen.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return seen


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    seen = _expectations()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "two alerts share a name"
    untested = {name: sorted(seen.get(name, set())) for name in names if seen.get(name) != {True, False}}
    assert not untested, f"alerts without a firing and a silent case: {untested}"
    assert not set(seen) - set(names), "a unit test names an alert the rules do not have"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_says_how_urgent_what_and_where_to_read(rule: dict[str, object]) -> None:
    assert "for" in rule, "every alert states how long its condition must hold"
    labels = rule["labels"]
    assert isinstance(labels, dict)
    assert labels.get("severity") in SEVERITIES
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    anchor = str(annotations["runbook_url"]).partition("#")[2]
    assert anchor in _runbook_anchors(), f"docs/operations-alerts.md has no section #{anchor}"


def _runbook_anchors() -> set[str]:
    # GitHub's anchors: the heading lowercased, spaces to dashes, punctuation dropped
    headings = re.findall(r"^#+\s+(.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # as recording rules, Grafana's variables given what Grafana would put there
    rules = [
        {"record": f"dashboard:query_{number}", "expr": _as_grafana_sends(query.expr)}
        for number, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_bad_dashboard_query_would_be_refused(tmp_path: Path) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed")
    path = tmp_path / "bad.yaml"
    rule = {"record": "dashboard:bad", "expr": _as_grafana_sends("sum by (target (rate(x[$__rate_interval]))")}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [rule]}]}), encoding="utf-8")
    assert _promtool("check", "rules", str(path)).returncode != 0


def _as_grafana_sends(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$job", ".*")
