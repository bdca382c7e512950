"""policies/examples/cloud-pods.json: it validates, against the parser and the published schema, and plans.

Planned offline on policies/examples/snapshot.json (written for the seed
table, whose cluster is also called ``onprem``): the cluster is at peak, so
public work goes to the pools, cheapest expected cost first (AKS eastus at
0.21 $/h, then EKS g4dn.xlarge at 0.26 $/h); private work never goes to a pool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from click.testing import CliRunner, Result

from controlplane.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "examples" / "cloud-pods.json"
SNAPSHOT = REPO / "policies" / "examples" / "snapshot.json"


def fusionctl(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def plan_json(tmp_path: Path, task: dict[str, Any]) -> dict[str, Any]:
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(task), encoding="utf-8")
    result = fusionctl("plan", "--policy", EXAMPLE, "--signals", SNAPSHOT, "--task", task_file, "-o", "json")
    assert result.exit_code == 0, result.output
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def test_the_example_validates_with_no_finding_and_against_the_schema() -> None:
    result = fusionctl("policy", "validate", EXAMPLE)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "warning" not in result.output.lower()
    schema = json.loads((REPO / "policies" / "schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))


def test_public_work_bursts_to_the_pools_priced_from_their_clouds(tmp_path: Path) -> None:
    view = plan_json(tmp_path, {"source": "s3://media/face.png", "target": "s3://media/group.png"})
    shown = [
        (c["target"], c["provider"], c["region"], c["instance_type"], c["expected_usd_h"], c["market"])
        for c in view["candidates"]
    ]
    assert shown == [
        ("aks-spot", "kubernetes", "eastus", "Standard_NC4as_T4_v3", 0.21, "spot"),
        ("eks-spot", "kubernetes", "us-east-1", "g4dn.xlarge", 0.26, "spot"),
    ]


def test_private_work_never_goes_to_a_pool(tmp_path: Path) -> None:
    view = plan_json(
        tmp_path, {"source": "s3://media/face.png", "target": "s3://media/group.png", "data_sensitivity": "private"}
    )
    # the example's cluster is full: private work waits for it rather than going anywhere public
    assert view["candidates"] == []
    assert {r["target"]: r["code"] for r in view["rejected"]} == {
        "onprem": "no_capacity",
        "eks-spot": "private_data",
        "aks-spot": "private_data",
    }
