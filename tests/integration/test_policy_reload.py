"""Hot reload from Consul (the fake KV server, driven by the real py-consul client) and from files.

What the policy issue asks to show: a push is applied in under 2 s; an
invalid push is refused (by the CLI) and an invalid document written past
the CLI is not applied (the control plane keeps the last good one); Consul
stopped mid-run keeps the last good policy and it recovers when Consul is
back; every applied version is recorded with its ModifyIndex and sha256.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from controlplane.cli.policy import policy as policy_cli
from controlplane.domain import SignalSnapshot
from controlplane.metrics import Metrics
from controlplane.policy import PolicyError, parse_policy, plan, policy_version
from controlplane.runtime.policies import PolicyRuntime, start_policy_runtime
from controlplane.store import Store, upgrade
from tests.fakes.consul import FakeConsul
from tests.unit.test_plan import _task as make_task

pytestmark = pytest.mark.timeout(60)

KEY = "fusionplane/policy"
TARGETS = [
    {"name": "local", "provider": "local", "private": True},
    {
        "name": "aws",
        "provider": "aws",
        "private": False,
        "regions": ["us-east-1"],
        "instance_types": ["g5.xlarge"],
        "settings": {"image_id": "ami-0123456789abcdef0"},  # a cloud target must be able to launch
    },
]


def policy_doc(first: str, *, peak: float = 0.85) -> dict[str, Any]:
    return {
        "description": f"{first} first",
        "targets": TARGETS,
        "rules": [{"name": "order", "targets": [first, *[t["name"] for t in TARGETS if t["name"] != first]]}],
        "thresholds": {"peak_gpu_utilization": peak},
    }


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=2).encode()


def wait_for(condition: Callable[[], bool], *, timeout_s: float) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def consul_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeConsul]:
    with FakeConsul() as fake:
        monkeypatch.setenv("CONSUL_HTTP_ADDR", fake.address)
        monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
        monkeypatch.delenv("FUSIONPLANE_POLICY_KEY", raising=False)
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
        yield fake


@pytest.fixture
def runtimes() -> Iterator[list[PolicyRuntime]]:
    started: list[PolicyRuntime] = []
    yield started
    for runtime in started:
        runtime.stop()


def start(store: Store, runtimes: list[PolicyRuntime], metrics: Metrics | None = None) -> PolicyRuntime:
    runtime = start_policy_runtime(
        store=store,
        policy_file=Path("policies/default.json"),
        applied_by="test",
        metrics=metrics,
        consul_wait_s=2.0,
    )
    runtimes.append(runtime)
    return runtime


def cli(*args: str) -> Any:
    return CliRunner().invoke(policy_cli, list(args), catch_exceptions=False)


def write(path: Path, document: Any) -> Path:
    path.write_bytes(encode(document))
    return path


def test_push_is_applied_within_two_seconds_and_recorded(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime], tmp_path: Path
) -> None:
    first = policy_doc("local")
    consul_env.seed(KEY, encode(first))
    runtime = start(store, runtimes)
    assert runtime.current().version == policy_version(first)

    wanted = write(tmp_path / "aws-first.json", policy_doc("aws"))
    shown = cli("diff", str(wanted))
    assert shown.exit_code == 1, shown.output  # it differs, and now we have seen the current version
    assert '-        "local",' in shown.output
    assert '+        "aws",' in shown.output
    pushed_at = time.monotonic()
    result = cli("push", str(wanted))
    assert result.exit_code == 0, result.output
    took = wait_for(lambda: runtime.current().version == policy_version(policy_doc("aws")), timeout_s=2.0)
    assert time.monotonic() - pushed_at < 2.0, took

    entry = consul_env.entry(KEY)
    assert entry is not None
    newest = store.list_policy_applications(limit=1)[0]
    assert newest.version == policy_version(policy_doc("aws"))
    assert newest.modify_index == entry.modify_index
    assert newest.source == f"consul:{KEY}"
    assert store.get_policy_version(newest.version).document == policy_doc("aws")
    status = runtime.active.status()
    assert status["up_to_date"]
    assert status["modify_index"] == entry.modify_index

    # receipts name the version that planned them
    decision = plan(
        make_task(), SignalSnapshot(taken_at=datetime.now(UTC)), runtime.current().for_tenant("t"), datetime.now(UTC)
    )
    assert decision.policy_version == newest.version


def test_invalid_push_is_refused_and_nothing_is_written(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime], tmp_path: Path
) -> None:
    consul_env.seed(KEY, encode(policy_doc("local")))
    before = consul_env.entry(KEY)
    bad = policy_doc("local")
    bad["rules"][0]["targets"] = ["gcp"]
    result = cli("push", str(write(tmp_path / "bad.json", bad)))
    assert result.exit_code == 65
    assert "rules[0].targets[0]" in result.output
    assert "unknown target 'gcp'" in result.output
    assert consul_env.entry(KEY) == before


def test_invalid_document_written_past_the_cli_keeps_the_last_good(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime]
) -> None:
    good = policy_doc("local")
    consul_env.seed(KEY, encode(good))
    metrics = Metrics.create()
    runtime = start(store, runtimes, metrics)
    consul_env.seed(KEY, b'{"targets": [], "rules": []}')
    wait_for(lambda: runtime.active.status()["last_error"] is not None, timeout_s=2.0)
    status = runtime.active.status()
    assert "targets: must name at least one target" in status["last_error"]
    assert not status["up_to_date"]
    assert runtime.current().version == policy_version(good)
    assert metrics.registry.get_sample_value("fusionplane_policy_reloads_total", {"outcome": "invalid"}) == 1.0
    consul_env.seed(KEY, b"{not json")
    wait_for(lambda: "not valid JSON" in (runtime.active.status()["last_error"] or ""), timeout_s=2.0)
    assert runtime.current().version == policy_version(good)
    # the operator fixes it: applied, and the error clears
    fixed = policy_doc("aws")
    consul_env.seed(KEY, encode(fixed))
    wait_for(lambda: runtime.current().version == policy_version(fixed), timeout_s=2.0)
    assert runtime.active.status()["up_to_date"]


def test_consul_down_keeps_the_last_good_and_recovers(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime]
) -> None:
    good = policy_doc("local")
    consul_env.seed(KEY, encode(good))
    metrics = Metrics.create()
    runtime = start(store, runtimes, metrics)
    consul_env.stop()
    wait_for(lambda: not runtime.active.status()["source_reachable"], timeout_s=3.0)
    assert runtime.current().version == policy_version(good)
    assert "consul unreachable" in runtime.active.status()["last_error"]
    assert metrics.registry.get_sample_value("fusionplane_policy_source_up") == 0.0
    time.sleep(1.0)  # several failed rounds: still the same policy, still planning
    decision = plan(make_task(), SignalSnapshot(taken_at=datetime.now(UTC)), runtime.current().base, datetime.now(UTC))
    assert decision.policy_version == policy_version(good)

    consul_env.start()
    newer = policy_doc("aws", peak=0.5)
    consul_env.seed(KEY, encode(newer))
    wait_for(lambda: runtime.current().version == policy_version(newer), timeout_s=8.0)
    status = runtime.active.status()
    assert status["source_reachable"]
    assert status["up_to_date"]
    assert metrics.registry.get_sample_value("fusionplane_policy_source_up") == 1.0


def test_start_with_consul_down_uses_the_policy_last_applied(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime]
) -> None:
    good = policy_doc("aws")
    consul_env.seed(KEY, encode(good))
    start(store, runtimes).stop()
    consul_env.stop()
    runtime = start(store, runtimes)
    assert runtime.current().version == policy_version(good)
    assert runtime.current().source.startswith("store:last-applied")
    assert not runtime.active.status()["source_reachable"]


def test_push_refused_when_someone_changed_it_meanwhile(consul_env: FakeConsul, tmp_path: Path) -> None:
    consul_env.seed(KEY, encode(policy_doc("local")))
    mine = write(tmp_path / "mine.json", policy_doc("aws"))
    assert cli("show").exit_code == 0
    theirs = policy_doc("local", peak=0.6)
    consul_env.seed(KEY, encode(theirs))  # another operator, after I looked
    result = cli("push", str(mine))
    assert result.exit_code == 1
    assert "changed since you last saw it" in result.output
    entry = consul_env.entry(KEY)
    assert entry is not None
    assert json.loads(entry.value or b"") == theirs
    # having looked again, the push goes through
    assert cli("diff", str(mine)).exit_code == 1
    assert cli("push", str(mine)).exit_code == 0
    entry = consul_env.entry(KEY)
    assert entry is not None
    assert json.loads(entry.value or b"") == policy_doc("aws")


def test_push_without_having_looked_is_refused(consul_env: FakeConsul, tmp_path: Path) -> None:
    consul_env.seed(KEY, encode(policy_doc("local")))
    result = cli("push", str(write(tmp_path / "p.json", policy_doc("aws"))))
    assert result.exit_code == 1
    assert "you have not seen the policy" in result.output
    assert cli("push", "--expect", str(consul_env.entry(KEY).modify_index), str(tmp_path / "p.json")).exit_code == 0  # type: ignore[union-attr]


def test_tenant_overlay_applies_to_that_tenant_only(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime], tmp_path: Path
) -> None:
    consul_env.seed(KEY, encode(policy_doc("local")))
    runtime = start(store, runtimes)
    overlay = {"rules": [{"name": "acme-cloud", "targets": ["aws"]}]}
    result = cli("push", "--tenant", "acme", str(write(tmp_path / "acme.json", overlay)))
    assert result.exit_code == 0, result.output
    wait_for(lambda: "acme" in runtime.current().tenants, timeout_s=2.0)
    acme = runtime.current().for_tenant("acme")
    assert [rule.name for rule in acme.rules] == ["acme-cloud", "order"]
    assert acme.rules[0].match.tenant == ("acme",)
    assert runtime.current().for_tenant("other") is runtime.current().base
    stored = store.get_policy_version(acme.version).document
    assert parse_policy(stored).version == acme.version  # the receipt's version resolves to a full document
    newest = store.list_policy_applications(limit=1)[0]
    assert newest.overlays["acme"]["version"] == acme.version
    assert newest.overlays["acme"]["overlay_sha256"] == policy_version(overlay)

    # an overlay may not add targets or match other tenants
    bad = {"targets": TARGETS, "rules": []}
    result = cli("push", "--tenant", "acme", str(write(tmp_path / "bad.json", bad)))
    assert result.exit_code == 65
    assert "targets stay in the base policy" in result.output
    other = {"rules": [{"name": "x", "match": {"tenant": "globex"}, "targets": ["aws"]}]}
    result = cli("push", "--tenant", "acme", str(write(tmp_path / "other.json", other)))
    assert result.exit_code == 65
    assert "rules[0].match.tenant" in result.output


def test_file_source_reloads_on_change_and_keeps_the_last_good(
    store: Store, runtimes: list[PolicyRuntime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    path = write(tmp_path / "policy.json", policy_doc("local"))
    runtime = start_policy_runtime(store=store, policy_file=path, applied_by="test")
    runtimes.append(runtime)
    assert runtime.current().source == f"file:{path}"
    write(path, policy_doc("aws"))
    wait_for(lambda: runtime.current().version == policy_version(policy_doc("aws")), timeout_s=2.0)
    path.write_text('{"targets": "nope"}', encoding="utf-8")
    wait_for(lambda: runtime.active.status()["last_error"] is not None, timeout_s=2.0)
    assert runtime.current().version == policy_version(policy_doc("aws"))
    assert "targets: must be an array" in runtime.active.status()["last_error"]
    (tmp_path / "tenants").mkdir()
    write(path, policy_doc("local"))
    write(tmp_path / "tenants" / "acme.json", {"thresholds": {"peak_queue_depth": 5}})
    wait_for(lambda: "acme" in runtime.current().tenants, timeout_s=2.0)
    assert runtime.current().for_tenant("acme").thresholds.peak_queue_depth == 5
    assert runtime.current().base.thresholds.peak_queue_depth == 100


def test_a_cloud_target_that_cannot_launch_is_refused_at_push_and_at_watch_time(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime], tmp_path: Path
) -> None:
    good = policy_doc("local")
    consul_env.seed(KEY, encode(good))
    runtime = start(store, runtimes)
    unlaunchable = policy_doc("aws")
    unlaunchable["targets"] = [TARGETS[0], {k: v for k, v in TARGETS[1].items() if k != "settings"}]
    why = "targets[1].settings: aws target 'aws' cannot launch: needs launch_template or image_id"
    # through the CLI: refused before anything is written
    before = consul_env.entry(KEY)
    result = cli("push", str(write(tmp_path / "no-ami.json", unlaunchable)))
    assert result.exit_code == 65
    assert why in result.output
    assert consul_env.entry(KEY) == before
    # written past the CLI: the watcher refuses it and the last good policy stays in force
    consul_env.seed(KEY, encode(unlaunchable))
    wait_for(lambda: runtime.active.status()["last_error"] is not None, timeout_s=2.0)
    assert why in runtime.active.status()["last_error"]
    assert runtime.current().version == policy_version(good)


def test_a_target_setting_of_the_wrong_form_is_refused_at_validate_push_and_watch_time(
    consul_env: FakeConsul, store: Store, runtimes: list[PolicyRuntime], tmp_path: Path
) -> None:
    good = policy_doc("local")
    consul_env.seed(KEY, encode(good))
    runtime = start(store, runtimes)
    bad = policy_doc("aws")
    bad["targets"] = [TARGETS[0], {**TARGETS[1], "settings": {"image_id": "ami-0123456789abcdef0", "subnets": [""]}}]
    why = "targets[1].settings.subnets: aws target 'aws': must be a string or a list of strings"
    path = write(tmp_path / "bad-subnets.json", bad)
    # `fusionctl policy validate`: an error with its JSON path, exit 65
    checked = cli("validate", "--output", "json", str(path))
    assert checked.exit_code == 65
    report = json.loads(checked.stdout)
    assert report["valid"] is False
    assert [(f["path"], f["severity"]) for f in report["findings"]] == [("targets[1].settings.subnets", "error")]
    # push: refused before anything is written
    before = consul_env.entry(KEY)
    pushed = cli("push", str(path))
    assert pushed.exit_code == 65
    assert why in pushed.output
    assert consul_env.entry(KEY) == before
    # written past the CLI: the watcher refuses it and the last good policy stays in force
    consul_env.seed(KEY, encode(bad))
    wait_for(lambda: runtime.active.status()["last_error"] is not None, timeout_s=2.0)
    assert why in runtime.active.status()["last_error"]
    assert runtime.current().version == policy_version(good)


def test_a_policy_file_with_an_unknown_setting_is_refused_at_start_up(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    typo = policy_doc("aws")
    typo["targets"] = [TARGETS[0], {**TARGETS[1], "settings": {"image_id": "ami-0123456789abcdef0", "subnet": "s-1"}}]
    with pytest.raises(PolicyError, match=r"targets\[1\]\.settings\.subnet: aws target 'aws': is not a setting"):
        start_policy_runtime(store=store, policy_file=write(tmp_path / "typo.json", typo), applied_by="test")
