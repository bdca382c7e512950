"""Control-plane settings from the environment: defaults, the HA and reconcile knobs, bad values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane.config import DEFAULT_STORAGE_PATH, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FUSIONPLANE_LEADER_LEASE_S",
        "FUSIONPLANE_RECONCILE_S",
        "FUSIONPLANE_LOCAL_WORKER_COMMAND",
        "FUSIONPLANE_STORAGE_FILE",
        "FUSIONPLANE_FETCH_ALLOW_HOSTS",
        "FUSIONPLANE_FETCH_MAX_BYTES",
        "FUSIONPLANE_FETCH_CONNECT_TIMEOUT_S",
        "FUSIONPLANE_FETCH_READ_TIMEOUT_S",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings.from_env()
    assert settings.leader_lease_seconds == 15.0
    assert settings.reconcile_seconds == 60.0
    assert settings.local_worker_command == ()


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONPLANE_LEADER_LEASE_S", "3.5")
    monkeypatch.setenv("FUSIONPLANE_RECONCILE_S", "10")
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WORKER_COMMAND", "nice -n 5 '/opt/my worker' run")
    settings = Settings.from_env()
    assert settings.leader_lease_seconds == 3.5
    assert settings.reconcile_seconds == 10.0
    assert settings.local_worker_command == ("nice", "-n", "5", "/opt/my worker", "run")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "86401", "nan"])
@pytest.mark.parametrize("name", ["FUSIONPLANE_LEADER_LEASE_S", "FUSIONPLANE_RECONCILE_S"])
def test_bad_seconds_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()


def test_serve_refuses_a_bad_setting_before_starting_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from controlplane.cli.serve import serve

    result = CliRunner().invoke(serve, [], env={"FUSIONPLANE_LEADER_LEASE_S": "soon"})
    assert result.exit_code == 2
    assert "FUSIONPLANE_LEADER_LEASE_S: not a number of seconds: 'soon'" in result.output


def test_fetch_and_storage_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings.from_env()
    assert defaults.storage_file == DEFAULT_STORAGE_PATH  # the shipped allow-lists
    assert (defaults.fetch_allow_hosts, defaults.fetch_max_bytes) == ((), 2 << 30)
    monkeypatch.setenv("FUSIONPLANE_STORAGE_FILE", str(tmp_path / "storage.json"))
    monkeypatch.setenv("FUSIONPLANE_FETCH_ALLOW_HOSTS", "minio.corp.internal:9000, 10.0.0.5")
    monkeypatch.setenv("FUSIONPLANE_FETCH_MAX_BYTES", "1048576")
    monkeypatch.setenv("FUSIONPLANE_FETCH_READ_TIMEOUT_S", "30")
    settings = Settings.from_env()
    settings.check()
    assert settings.storage_file == tmp_path / "storage.json"
    assert settings.fetch_allow_hosts == ("minio.corp.internal:9000", "10.0.0.5")
    assert (settings.fetch_max_bytes, settings.fetch_read_timeout_s) == (1 << 20, 30.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("FUSIONPLANE_FETCH_ALLOW_HOSTS", "admin@10.0.0.5"), ("FUSIONPLANE_FETCH_MAX_BYTES", "-1")],
)
def test_bad_fetch_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.from_env().check()


def test_serve_refuses_a_poll_interval_that_outlasts_its_values_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure prices live an hour: polled every hour, they would be stale part of every hour."""
    from click.testing import CliRunner

    from controlplane.cli.serve import serve

    for name in [n for n in os.environ if n.startswith("FUSIONPLANE_SIGNALS_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(serve, [], env={"FUSIONPLANE_SIGNALS_AZURE_SPOT_INTERVAL_S": "3600"})
    assert result.exit_code == 2
    assert "FUSIONPLANE_SIGNALS_AZURE_SPOT_INTERVAL_S: a poll every 3600 s" in result.output
    assert "3600 s TTL of azure_spot's values" in result.output
    # the jitter and the answer time count too: 1800 + 1790 + 20 s can outlast the hour
    result = CliRunner().invoke(serve, [], env={"FUSIONPLANE_SIGNALS_AZURE_SPOT_JITTER_S": "1790"})
    assert result.exit_code == 2
    assert "FUSIONPLANE_SIGNALS_AZURE_SPOT_JITTER_S" in result.output


def test_the_default_signal_schedules_fit_their_ttls(monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.runtime.signals import DEFAULT_SCHEDULES, SOURCE_TTLS, check_signal_schedules

    for name in [n for n in os.environ if n.startswith("FUSIONPLANE_SIGNALS_")]:
        monkeypatch.delenv(name)
    check_signal_schedules()
    assert set(SOURCE_TTLS) == set(DEFAULT_SCHEDULES)
    for name, schedule in DEFAULT_SCHEDULES.items():
        assert schedule.interval_s + schedule.jitter_s + schedule.timeout_s < SOURCE_TTLS[name], name
    # the table is what the sources are built with
    from controlplane.signals import aws_spot, azure_spot, prometheus
    from controlplane.signals.kubernetes_capacity import KubernetesCapacitySource
    from controlplane.signals.queue import QueueDepthSource

    assert SOURCE_TTLS["aws_spot"] == aws_spot.DEFAULT_TTL_SECONDS == 600
    assert SOURCE_TTLS["azure_spot"] == azure_spot.DEFAULT_TTL_SECONDS == 3600
    assert SOURCE_TTLS["prometheus"] == prometheus.DEFAULT_TTL_SECONDS
    assert SOURCE_TTLS["queue"] == QueueDepthSource(lambda: 0).ttl_seconds
    assert SOURCE_TTLS["kubernetes"] == KubernetesCapacitySource().ttl_seconds


def test_a_source_turned_off_is_neither_checked_nor_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from controlplane.policy_sources import DEFAULT_POLICY_PATH, load_policy_file
    from controlplane.runtime.signals import (
        build_signal_hub,
        check_signal_schedules,
        pollers_json,
        sources_off,
    )
    from controlplane.store import Store, make_engine, upgrade

    for name in [n for n in os.environ if n.startswith("FUSIONPLANE_SIGNALS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_KUBERNETES_INTERVAL_S", "3600")
    with pytest.raises(ValueError, match="FUSIONPLANE_SIGNALS_KUBERNETES_INTERVAL_S"):
        check_signal_schedules()
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_OFF", "kubernetes, azure_spot")
    assert sources_off() == {"kubernetes", "azure_spot"}
    check_signal_schedules()  # the slow schedule belongs to a source that is off
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    policy = load_policy_file(DEFAULT_POLICY_PATH)
    hub = build_signal_hub(store=Store(engine), policy=lambda: policy)
    try:
        names = {poller["source"] for poller in pollers_json(hub)}
    finally:
        hub.close()
    assert not {"kubernetes", "azure_spot"} & names
    assert {"queue", "aws_spot"} <= names
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_OFF", "kubernetes,gpus")
    with pytest.raises(ValueError, match="FUSIONPLANE_SIGNALS_OFF: unknown source gpus"):
        sources_off()


def test_the_simulator_reports_folder_is_unset_unless_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FUSIONPLANE_SIM_REPORTS_DIR", raising=False)
    assert Settings.from_env().sim_reports_dir is None
    monkeypatch.setenv("FUSIONPLANE_SIM_REPORTS_DIR", str(tmp_path / "sim"))
    assert Settings.from_env().sim_reports_dir == tmp_path / "sim"


@pytest.mark.parametrize(("value", "on"), [("", False), ("0", False), ("off", False), ("1", True), ("true", True)])
def test_the_warm_local_worker_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WARM_WORKER", value)
    assert Settings.from_env().local_warm_worker is on


def test_a_bad_warm_local_worker_value_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WARM_WORKER", "maybe")
    with pytest.raises(ValueError, match="FUSIONPLANE_LOCAL_WARM_WORKER"):
        Settings.from_env()
