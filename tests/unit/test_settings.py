"""Control-plane settings from the environment: defaults, the HA and reconcile knobs, bad values named."""

from __future__ import annotations

import pytest

from controlplane.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FUSIONPLANE_LEADER_LEASE_S",
        "FUSIONPLANE_RECONCILE_S",
        "FUSIONPLANE_LOCAL_WORKER_COMMAND",
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
