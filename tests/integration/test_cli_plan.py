"""``fusionctl plan``: the engine, offline, on the example policy and snapshot.

policies/examples/snapshot.json is written for policies/examples/seed-table.json:
onprem is at peak and full, isolated has 3 free GPUs, AWS g4dn.xlarge costs
0.26 $/h and Azure eastus 0.21 $/h (fresh), and the Azure westeurope price is
90 minutes old (stale at the Azure spot price's one-hour TTL).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from controlplane.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policies" / "examples" / "seed-table.json"
SNAPSHOT = REPO / "policies" / "examples" / "snapshot.json"
CLOUDS = {"aws", "azure"}

PUBLIC = {"source": "/in/face.png", "target": "s3://media/group.png", "data_sensitivity": "public"}
PRIVATE = {"source": "/in/face.png", "target": "/film/reel1.mov", "data_sensitivity": "private"}
URGENT = {**PUBLIC, "target": "s3://media/clip.mp4", "priority": "urgent", "deadline_seconds": 120}
CAMPAIGN = {**PUBLIC, "labels": {"campaign": "black-friday"}}


def fusionctl(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write(tmp_path: Path, name: str, document: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document, encoding="utf-8")
    return path


def plan_json(
    tmp_path: Path, task: dict[str, Any], *extra: str, policy: Path = POLICY, snapshot: Path = SNAPSHOT
) -> dict[str, Any]:
    task_file = write(tmp_path, "task.json", task)
    result = fusionctl("plan", "--policy", policy, "--signals", snapshot, "--task", task_file, "-o", "json", *extra)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def rejected(view: dict[str, Any]) -> dict[str, str]:
    return {r["target"]: r["code"] for r in view["rejected"]}


def _aws_over_budget(tmp_path: Path) -> Path:
    """The example snapshot with AWS g4dn.xlarge at 0.34 $/h, over aws-spot's 0.30 threshold."""
    document = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    for price in document["spot_prices"]:
        if (price["provider"], price["instance_type"]) == ("aws", "g4dn.xlarge"):
            price["usd_per_hour"] = 0.34
    return write(tmp_path, "dear-aws.json", document)


def test_ordinary_public_work_goes_to_azure_spot_when_onprem_is_full(tmp_path: Path) -> None:
    # a full cluster is at peak: AWS Spot when it is under the budget threshold (it is, in the example) ...
    assert [c["target"] for c in plan_json(tmp_path, PUBLIC)["candidates"]] == ["aws-spot"]
    # ... and Azure Spot when it is not
    view = plan_json(tmp_path, PUBLIC, snapshot=_aws_over_budget(tmp_path))
    assert set(view) == {"policy_version", "decided_at", "candidates", "rejected", "trace", "signals_used", "replan_by"}
    assert view["decided_at"] == "2026-11-24T12:00:00Z"  # the snapshot's taken_at: deterministic
    assert len(view["policy_version"]) == 64
    assert view["candidates"] == [
        {
            "target": "azure-spot",
            "provider": "azure",
            "private": False,
            "region": "eastus",
            "instance_type": "Standard_NC4as_T4_v3",
            "max_price_usd_h": 0.35,
            "expected_usd_h": 0.21,
            "market": "spot",
            "expected_usd_per_task": None,
            "completion_chance": None,
            "history_launches": None,
            "hedge": None,
            "reasons": [
                "rule ordinary-public ranks it 2 of 2",
                "spot price azure/eastus/Standard_NC4as_T4_v3 0.2100 USD/h <= max 0.35",
            ],
        }
    ]
    assert view["rejected"][0] == {
        "target": "onprem",
        "code": "no_capacity",
        "reasons": ["no free GPU: free_gpus/onprem = 0"],
    }
    assert rejected(view) == {
        "onprem": "no_capacity",
        "isolated": "excluded_by_rule",
        "aws-spot": "excluded_by_rule",
        "azure-lowlatency": "excluded_by_rule",
    }
    assert "rule ordinary-public: matched" in view["trace"]
    assert view["signals_used"]["free_gpus/onprem"] == {
        "value": 0.0,
        "age_seconds": 0.0,
        "ttl_seconds": 120.0,
        "stale": False,
        "missing": False,
    }


def test_a_private_task_never_gets_a_cloud_candidate(tmp_path: Path) -> None:
    view = plan_json(tmp_path, PRIVATE)
    assert [(c["target"], c["private"]) for c in view["candidates"]] == [("isolated", True)]
    assert not [c for c in view["candidates"] if c["provider"] in CLOUDS or not c["private"]]
    assert rejected(view) == {
        "onprem": "excluded_by_rule",
        "aws-spot": "private_data",
        "azure-lowlatency": "private_data",
        "azure-spot": "private_data",
    }
    # and whatever the rule says: a policy sending everything to the clouds still cannot
    clouds_first = json.loads(POLICY.read_text(encoding="utf-8"))
    clouds_first["rules"] = [{"name": "all-cloud", "use_cloud": True}]
    view = plan_json(tmp_path, PRIVATE, policy=write(tmp_path, "clouds.json", clouds_first))
    assert view["candidates"] == []
    assert rejected(view) == {
        "onprem": "excluded_by_rule",
        "isolated": "excluded_by_rule",
        "aws-spot": "private_data",
        "azure-lowlatency": "private_data",
        "azure-spot": "private_data",
    }


def test_a_stale_price_rejects_its_cloud(tmp_path: Path) -> None:
    view = plan_json(tmp_path, URGENT)
    assert rejected(view)["azure-lowlatency"] == "stale_price"
    assert [(c["target"], c["instance_type"], c["expected_usd_h"]) for c in view["candidates"]] == [
        ("aws-spot", "g4dn.xlarge", 0.26)
    ]
    assert rejected(view)["onprem"] == "no_capacity"
    assert view["signals_used"]["spot_price/azure/westeurope/Standard_NC4as_T4_v3"]["stale"] is True
    assert (
        "signal spot_price/azure/westeurope/Standard_NC4as_T4_v3: stale (5400.0s old, ttl 3600s), not used"
        in (view["trace"])
    )


def test_a_campaign_at_peak_goes_to_aws_spot_under_budget(tmp_path: Path) -> None:
    view = plan_json(tmp_path, CAMPAIGN)
    assert [(c["target"], c["region"], c["instance_type"], c["expected_usd_h"]) for c in view["candidates"]] == [
        ("aws-spot", "us-east-1", "g4dn.xlarge", 0.26)
    ]
    assert view["trace"][3].startswith("rule peak-aws-spot: matched; conditions hold (peak: onprem GPU utilisation")


def test_at_moves_the_decision_time_and_stale_load_never_rejects(tmp_path: Path) -> None:
    # five minutes on, the load signals (load TTL 120 s) are stale: onprem's "0 free" no longer rejects it
    view = plan_json(tmp_path, PUBLIC, "--at", "2026-11-24T13:05:00+01:00")
    assert view["decided_at"] == "2026-11-24T12:05:00Z"
    assert [c["target"] for c in view["candidates"]] == ["onprem", "azure-spot"]
    assert view["signals_used"]["free_gpus/onprem"]["stale"] is True
    assert view["signals_used"]["free_gpus/onprem"]["age_seconds"] == 300.0


def test_tenant_reaches_the_rules(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        "tenants.json",
        {
            "targets": [
                {"name": "shared", "provider": "local", "private": True},
                {"name": "studio-box", "provider": "local", "private": True},
            ],
            "rules": [{"name": "studio", "match": {"tenant": "studio"}, "targets": ["studio-box"]}],
        },
    )
    assert [c["target"] for c in plan_json(tmp_path, PUBLIC, policy=policy)["candidates"]] == ["shared", "studio-box"]
    view = plan_json(tmp_path, PUBLIC, "--tenant", "studio", policy=policy)
    assert [c["target"] for c in view["candidates"]] == ["studio-box"]
    assert view["trace"][0] == "rule studio: matched"


def test_the_same_files_give_the_same_plan(tmp_path: Path) -> None:
    assert plan_json(tmp_path, URGENT) == plan_json(tmp_path, URGENT)


def test_text_output_lists_candidates_then_rejections_then_the_trace(tmp_path: Path) -> None:
    task = write(tmp_path, "task.json", URGENT)
    result = fusionctl("plan", "--policy", POLICY, "--signals", SNAPSHOT, "--task", task)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("policy   ")
    assert lines[1] == "at       2026-11-24T12:00:00Z"
    heads = [lines.index(h) for h in ("candidates (in launch order)", "rejected", "trace", "signals used")]
    assert heads == sorted(heads)
    candidate_rows = lines[heads[0] + 1 : heads[1]]
    assert candidate_rows[0].split() == [
        "#", "TARGET", "PROVIDER", "PRIVATE", "REGION", "INSTANCE", "TYPE", "MAX", "$/H", "EXPECTED", "$/H", "HEDGE",
    ]  # fmt: skip
    assert candidate_rows[1].split() == ["1", "aws-spot", "aws", "no", "us-east-1", "g4dn.xlarge", "0.3", "0.26", "-"]
    rejected_rows = [line.split(None, 2) for line in lines[heads[1] + 2 : heads[2]] if line.strip()]
    assert rejected_rows[2][:2] == ["azure-lowlatency", "stale_price"]
    assert "max price 0.4 USD/h but no fresh spot price" in rejected_rows[2][2]
    assert lines[heads[2] + 1] == "  1. rule film-restoration: no match (data_sensitivity public not in [private])"
    assert lines[heads[2] + 2] == "  2. rule urgent-sla: matched"


def test_no_candidate_is_still_an_answer(tmp_path: Path) -> None:
    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    snapshot["free_gpus"]["isolated"] = 0
    signals = write(tmp_path, "full.json", snapshot)
    task = write(tmp_path, "task.json", PRIVATE)
    result = fusionctl("plan", "--policy", POLICY, "--signals", signals, "--task", task)
    assert result.exit_code == 0, result.output
    assert "candidates: none (every target was rejected)" in result.stdout
    assert "no_capacity" in result.stdout


# --------------------------------------------------------------------------- bad input: exit 65


def _bad(tmp_path: Path, *, policy: Path = POLICY, signals: Path = SNAPSHOT, task: Any = PUBLIC) -> Result:
    task_file = task if isinstance(task, Path) else write(tmp_path, "task.json", task)
    result = fusionctl("plan", "--policy", policy, "--signals", signals, "--task", task_file, "-o", "json")
    assert result.exit_code == 65, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    return result


def test_a_bad_snapshot_exits_65_naming_the_file_and_path(tmp_path: Path) -> None:
    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    snapshot["spot_prices"][2]["usd_per_hour"] = -0.21
    signals = write(tmp_path, "snapshot.json", snapshot)
    result = _bad(tmp_path, signals=signals)
    assert result.stderr == f"error: {signals}: spot_prices[2].usd_per_hour: must be a positive number\n"

    signals = write(tmp_path, "zoneless.json", {"taken_at": "2026-11-24T12:00:00"})
    assert _bad(tmp_path, signals=signals).stderr == (
        f"error: {signals}: taken_at: needs a time zone (e.g. 2026-11-24T12:00:00Z)\n"
    )
    signals = write(tmp_path, "broken.json", '{"taken_at": ')
    assert _bad(tmp_path, signals=signals).stderr.startswith(f"error: {signals} is not valid JSON")
    assert f"cannot read {tmp_path / 'absent.json'}" in _bad(tmp_path, signals=tmp_path / "absent.json").stderr


def test_a_bad_policy_exits_65_naming_the_file_and_path(tmp_path: Path) -> None:
    document = json.loads(POLICY.read_text(encoding="utf-8"))
    document["rules"][2]["targets"] = ["aws-spto"]
    policy = write(tmp_path, "policy.json", document)
    stderr = _bad(tmp_path, policy=policy).stderr
    assert stderr.startswith(f"error: {policy}: rules[2].targets[0]: unknown target 'aws-spto'")


def test_a_bad_task_exits_65_naming_the_file_and_field(tmp_path: Path) -> None:
    result = _bad(tmp_path, task={**PUBLIC, "priority": "asap"})
    assert result.stderr.startswith(f"error: {tmp_path / 'task.json'}: priority: Input should be 'low', 'normal'")
    result = _bad(tmp_path, task={"source": "a", "target": "b.gif"})
    assert result.stderr == f"error: {tmp_path / 'task.json'}: kind: cannot tell image from video by .gif; set kind\n"


@pytest.mark.parametrize(
    ("option", "value"), [("--at", "2026-11-24T12:05:00"), ("--at", "soon"), ("--tenant", "two words")]
)
def test_bad_options_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    task = write(tmp_path, "task.json", PUBLIC)
    result = fusionctl("plan", "--policy", POLICY, "--signals", SNAPSHOT, "--task", task, option, value)
    assert result.exit_code == 2
    assert option in result.stderr


@pytest.mark.slow
def test_fusionctl_plan_in_a_subprocess(tmp_path: Path, fusionctl: list[str]) -> None:
    task = write(tmp_path, "task.json", CAMPAIGN)
    done = subprocess.run(
        [*fusionctl, "plan", "--policy", str(POLICY), "--signals", str(SNAPSHOT), "--task", str(task), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [c["target"] for c in json.loads(done.stdout)["candidates"]] == ["aws-spot"]
    bad = write(tmp_path, "bad.json", {"taken_at": "2026-11-24T12:00:00Z", "free_gpus": {"onprem": -1}})
    done = subprocess.run(
        [*fusionctl, "plan", "--policy", str(POLICY), "--signals", str(bad), "--task", str(task)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 65
    assert done.stderr == f"error: {bad}: free_gpus.onprem: must be a number >= 0\n"


def test_the_documented_dry_run_output_is_what_the_command_prints(tmp_path: Path) -> None:
    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    documented = json.loads(text.split("## Dry-run output\n", 1)[1].split("```json\n", 1)[1].split("```", 1)[0])
    view = plan_json(tmp_path, URGENT)
    shown = {name: used for name, used in documented.pop("signals_used").items() if name != "..."}
    assert {name: view["signals_used"][name] for name in shown} == shown
    del view["signals_used"]
    assert view == documented
