"""Control-plane settings from the environment: defaults, the HA and reconcile knobs, bad values named."""

from __future__ import annotations

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
