"""FUSIONPLANE_MODELS_MANIFEST (issue 18 item 3): the manifest EC2 and Azure VMs fill their model cache from,
read and checked once when the control plane starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.config import CloudSettings
from controlplane.runtime.providers import cloud_providers, models_manifest_text

ENTRY = {
    "name": "inswapper_128",
    "role": "swapper",
    "file": "inswapper_128.onnx",
    "sha256": "0" * 64,
    "inputs": {"target": [1, 3, 128, 128], "source": [1, 512]},
    "outputs": {"output": [1, 3, 128, 128]},
    "source": "s3://acme-models/inswapper_128.onnx",
}


def _write(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{**ENTRY, **overrides}]}))
    return path


def test_the_setting_names_a_file_and_is_off_when_empty() -> None:
    assert CloudSettings.from_env({"FUSIONPLANE_MODELS_MANIFEST": "/etc/fp/models.json"}).models_manifest == Path(
        "/etc/fp/models.json"
    )
    assert CloudSettings.from_env({"FUSIONPLANE_MODELS_MANIFEST": " "}).models_manifest is None
    assert CloudSettings.from_env({}).models_manifest is None


def test_a_good_manifest_goes_to_the_vms_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert models_manifest_text(path) == path.read_text()
    assert models_manifest_text(None) is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"source": "http://models.example.com/x.onnx"}, "models[0].source"),
        ({"file": "../x.onnx"}, "models[0].file"),
        ({"sha256": "abc"}, "models[0].sha256"),
    ],
)
def test_a_manifest_the_fill_would_refuse_stops_the_start_naming_the_field(
    tmp_path: Path, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        models_manifest_text(_write(tmp_path, **overrides))


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a readable JSON file"):
        models_manifest_text(tmp_path / "absent.json")


def test_the_cloud_providers_launch_vms_with_it(tmp_path: Path) -> None:
    path = _write(tmp_path)
    providers = cloud_providers(lambda: [], clouds=CloudSettings(models_manifest=path))
    for name in ("aws", "azure"):
        assert providers[name].image.models_manifest == path.read_text(), name  # type: ignore[attr-defined]
