"""What the shipped dashboard and alert rules ask of the control plane: their queries, metric names and labels.

The queries are PromQL in a Grafana dashboard and a Prometheus rules file;
these helpers read both and pick out each ``fusionplane_*`` series a query
selects, with the labels it matches on or groups by, so a test can hold
them against what the control plane really exports.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.config import CloudSettings, ConsulSettings, Settings, SignalSettings
from controlplane.runtime import Runtime, build_runtime, prepare_folders

__all__ = [
    "ALERTS_FILE",
    "DASHBOARD_FILE",
    "MONITORING",
    "RULE_TESTS",
    "Query",
    "alert_rules",
    "built_runtime",
    "dashboard",
    "dashboard_queries",
    "queries",
    "rule_queries",
]

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
DASHBOARD_FILE = MONITORING / "fusionplane-dashboard.json"
ALERTS_FILE = MONITORING / "fusionplane-alerts.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))

_SERIES = re.compile(r"\b(fusionplane_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is (a panel's title, an alert's name)."""

    where: str
    expr: str

    def series(self) -> Iterator[tuple[str, frozenset[str]]]:
        """Each ``fusionplane_*`` name the query selects, with the labels its selector matches on."""
        for match in _SERIES.finditer(self.expr):
            matchers = match.group(2) or ""
            yield match.group(1), frozenset(_MATCHER.findall(matchers))

    def grouping_labels(self) -> frozenset[str]:
        """The labels of every ``by``/``on``/``without``/``ignoring`` clause."""
        labels: set[str] = set()
        for clause in _GROUPING.findall(self.expr):
            labels.update(label.strip() for label in clause.split(",") if label.strip())
        return frozenset(labels)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[Query]:
    return [
        Query(f"panel {panel['title']!r}", target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]


def queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


#: the pollers that would reach out of the machine; the store's own (queue, breaker, budget) stay on
_REMOTE_SOURCES = "kubernetes,aws_spot,azure_spot,aws_on_demand,azure_on_demand,spot_history"


@contextlib.contextmanager
def built_runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A control plane built as ``fusionctl serve`` builds it, on SQLite under ``tmp_path``, not started.

    Whoever starts it stops it (:meth:`Runtime.stop`) before this closes.
    """
    var = tmp_path / "var"
    settings = Settings(
        var_dir=var,
        database_url=f"sqlite:///{var / 'state.db'}",
        tokens_file=var / "tokens.json",
        input_roots=(var / "inputs",),
        output_root=var / "outputs",
        clouds=CloudSettings(worker_image="registry.example/worker:1", owner="plane-1", worker_gpus=False),
        signals=SignalSettings(off=_REMOTE_SOURCES),
        consul=ConsulSettings(),
    )
    prepare_folders(settings)
    runtime = build_runtime(settings)
    try:
        yield runtime
    finally:
        runtime.policies.stop()
        runtime.hub.close()
        runtime.engine.dispose()
