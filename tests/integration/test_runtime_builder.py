"""``build_runtime``: one control plane from one Settings, as ``fusionctl serve`` runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import CloudSettings, ConsulSettings, Settings, SignalSettings
from controlplane.dataplane.pvc_store import PvcStore
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.runtime import StartupError, build_runtime, check_settings, prepare_folders
from controlplane.runtime.signals import sources_off


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    var = tmp_path / "var"
    values: dict[str, object] = {
        "var_dir": var,
        "database_url": f"sqlite:///{var / 'state.db'}",
        "tokens_file": var / "tokens.json",
        "input_roots": (var / "inputs",),
        "output_root": var / "outputs",
        "public_url": "http://workers.example:9000",
        "clouds": CloudSettings(worker_image="registry.example/worker:7", owner="plane-7", worker_gpus=False),
        "signals": SignalSettings(off="kubernetes,azure_spot"),
        "consul": ConsulSettings(),  # this process's CONSUL_HTTP_ADDR plays no part
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_the_runtime_is_built_from_its_settings_alone(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    check_settings(settings)
    prepare_folders(settings)
    runtime = build_runtime(settings)
    try:
        assert set(runtime.providers) == {"local", "kubernetes", "aws", "azure"}
        assert runtime.providers["local"] is runtime.local
        aws = runtime.providers["aws"]
        assert aws.image.image == "registry.example/worker:7"
        assert not aws.image.gpus
        assert aws.owner == "plane-7"  # type: ignore[attr-defined]
        assert runtime.scheduler.callback_base == "http://workers.example:9000"
        assert runtime.scheduler.store is runtime.store
        pollers = set(runtime.hub.names)
        assert not {"kubernetes", "azure_spot"} & pollers
        assert "queue" in pollers
        assert runtime.dev_token is not None
        assert runtime.dev_token.minted
        assert runtime.dev_token.works(runtime.tokens)
        assert runtime.policies.current().source.startswith("file:")
        assert {job.id for job in runtime.jobs.get_jobs()} >= {"place", "follow", "release", "reconcile"}
        runtime.start()
        assert runtime.jobs.running
    finally:
        runtime.stop()
        runtime.engine.dispose()


def test_off_loopback_no_development_token_is_minted(tmp_path: Path) -> None:
    # a server others reach (a container, a cluster) gets only the tokens its operator creates
    settings = _settings(tmp_path, host="0.0.0.0")
    check_settings(settings)
    prepare_folders(settings)
    runtime = build_runtime(settings)
    try:
        assert runtime.dev_token is None
        assert not (settings.var_dir / "dev-token").exists()
        assert not settings.tokens_file.exists() or "admin" not in settings.tokens_file.read_text(encoding="utf-8")
    finally:
        runtime.engine.dispose()


def test_a_bad_poller_setting_is_the_operators(tmp_path: Path) -> None:
    settings = _settings(tmp_path, signals=SignalSettings(schedules={"FUSIONPLANE_SIGNALS_QUEUE_TIMEOUT_S": "soon"}))
    with pytest.raises(ValueError, match="FUSIONPLANE_SIGNALS_QUEUE_TIMEOUT_S"):
        check_settings(settings)
    assert sources_off(SignalSettings(off="queue")) == {"queue"}


def test_a_missing_policy_file_stops_the_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path, policy_file=tmp_path / "absent.json")
    prepare_folders(settings)
    with pytest.raises(StartupError, match=r"^policy: ") as caught:
        build_runtime(settings)
    assert not caught.value.usage


def test_a_models_manifest_the_fill_would_refuse_stops_the_start_as_the_operators(tmp_path: Path) -> None:
    manifest = tmp_path / "models.json"
    manifest.write_text('{"models": [{"name": "x"}]}')
    clouds = CloudSettings(worker_image="registry.example/worker:7", owner="plane-7", models_manifest=manifest)
    settings = _settings(tmp_path, clouds=clouds)
    prepare_folders(settings)
    with pytest.raises(StartupError, match=r"^FUSIONPLANE_MODELS_MANIFEST: .*models\[0\]\.role") as caught:
        build_runtime(settings)
    assert caught.value.usage


def test_the_stores_serve_a_claim_from_the_mount_the_settings_name(tmp_path: Path) -> None:
    mount = tmp_path / "mnt" / "work"
    mount.mkdir(parents=True)
    settings = _settings(tmp_path, pvc_mounts={"fp-work": mount})
    prepare_folders(settings)
    runtime = build_runtime(settings)
    try:
        assert runtime.scheduler.stager is not None
        store = runtime.scheduler.stager.stores(
            TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")
        )
        assert isinstance(store, PvcStore)
        assert store.mount == mount
    finally:  # built, never started: only the policy watcher and the pollers' clients to stop
        runtime.policies.stop()
        runtime.hub.close()
        runtime.engine.dispose()


def test_a_pvc_mount_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path, pvc_mounts={"fp-work": tmp_path / "not-mounted"})
    prepare_folders(settings)
    with pytest.raises(StartupError, match=r"^FUSIONPLANE_PVC_MOUNTS: fp-work=.*not-mounted is not a folder"):
        build_runtime(settings)
