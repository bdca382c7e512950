"""``fusionctl serve`` refuses remote targets whose workers could not call back (FUSIONPLANE_PUBLIC_URL)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from controlplane.cli.serve import serve
from controlplane.config import ConsulSettings, Settings, SignalSettings
from controlplane.runtime import Runtime, StartupError, build_runtime, prepare_folders

AWS = {"name": "spot", "provider": "aws", "private": False, "settings": {"launch_template": "fusionplane-worker"}}
LOCAL = {"name": "here", "provider": "local", "private": True}


def _policy(tmp_path: Path, *targets: dict[str, object]) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"targets": list(targets)}))
    return path


def _env(tmp_path: Path, policy: Path, **extra: str) -> dict[str, str]:
    return {
        "FUSIONPLANE_VAR_DIR": str(tmp_path / "var"),
        "FUSIONPLANE_POLICY_FILE": str(policy),
        "FUSIONPLANE_SIGNALS_OFF": "kubernetes,aws_spot,azure_spot,prometheus",
        "CONSUL_HTTP_ADDR": "",
        "FUSIONPLANE_PUBLIC_URL": "",
        **extra,
    }


def test_serve_refuses_a_cloud_target_with_a_loopback_callback_url(tmp_path: Path) -> None:
    policy = _policy(tmp_path, LOCAL, AWS)
    result = CliRunner().invoke(serve, ["--port", "18099"], env=_env(tmp_path, policy))
    assert result.exit_code == 2, result.output
    assert "FUSIONPLANE_PUBLIC_URL" in result.output
    assert "spot (aws)" in result.output
    assert "http://127.0.0.1:18099" in result.output
    assert "--allow-loopback-callbacks" in result.output


def test_an_unspecified_bind_address_is_no_callback_address_either(tmp_path: Path) -> None:
    policy = _policy(tmp_path, LOCAL, AWS)
    result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--port", "18099"], env=_env(tmp_path, policy))
    assert result.exit_code == 2, result.output
    assert "0.0.0.0 is this machine only" in result.output


def _close(runtime: Runtime) -> None:
    """A runtime built but never started: its policy watcher and pollers stop, its jobs never ran."""
    runtime.policies.stop()
    runtime.hub.close()
    runtime.engine.dispose()


def _settings(tmp_path: Path, policy: Path, **overrides: object) -> Settings:
    var = tmp_path / "var"
    values: dict[str, object] = {
        "var_dir": var,
        "database_url": f"sqlite:///{var / 'state.db'}",
        "tokens_file": var / "tokens.json",
        "input_roots": (var / "inputs",),
        "output_root": var / "outputs",
        "policy_file": policy,
        "signals": SignalSettings(off="kubernetes,aws_spot,azure_spot,prometheus"),
        "consul": ConsulSettings(),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_allowed_loopback_callbacks_start_with_a_loud_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, _policy(tmp_path, LOCAL, AWS), allow_loopback_callbacks=True)
    prepare_folders(settings)
    with caplog.at_level(logging.WARNING, logger="fusionplane.runtime"):
        runtime = build_runtime(settings)
    try:
        (record,) = [r for r in caplog.records if getattr(r, "event", "") == "serve.loopback_callbacks"]
        assert record.levelno == logging.WARNING
        assert record.callback_base == "http://127.0.0.1:8080"  # type: ignore[attr-defined]
    finally:
        _close(runtime)


@pytest.mark.parametrize(
    ("public_url", "targets"),
    [
        ("http://control.example:8080", (LOCAL, AWS)),  # a name the workers resolve
        ("https://10.0.0.5", (LOCAL, AWS)),
        ("", (LOCAL,)),  # nothing runs elsewhere: loopback is fine
    ],
)
def test_a_reachable_url_or_local_work_only_starts_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, public_url: str, targets: tuple[dict[str, object], ...]
) -> None:
    settings = _settings(tmp_path, _policy(tmp_path, *targets), public_url=public_url)
    prepare_folders(settings)
    with caplog.at_level(logging.WARNING, logger="fusionplane.runtime"):
        runtime = build_runtime(settings)
    try:
        assert not [r for r in caplog.records if getattr(r, "event", "") == "serve.loopback_callbacks"]
    finally:
        _close(runtime)


def test_build_runtime_refuses_it_as_the_operators_setting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, _policy(tmp_path, LOCAL, AWS), public_url="http://localhost:8080")
    prepare_folders(settings)
    with pytest.raises(StartupError, match="FUSIONPLANE_PUBLIC_URL") as caught:
        build_runtime(settings)
    assert caught.value.usage
