"""Hostile fill manifests (issue 18 item 3): the model-cache fill reaches no internal address and writes
nowhere but its model directory.

A fill manifest comes from an operator, but it names URLs and file names that
a Job with cloud credentials then acts on: a mistyped or planted entry must
not make it read a metadata service or write over a file outside the cache.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from faceswap.errors import ModelError
from faceswap.fetcher import FetchRules
from faceswap.modelfill import fill_models
from providers.bootstrap import MODELS_MANIFEST_PATH, WorkerImage, cloud_init
from tests.support.model_mirror import MIRROR_HOST, fill_manifest, https_mirror, sha256, standin_files
from tests.support.storage import fixed_resolver
from tests.unit.test_bootstrap import SPEC


def _entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "name": "inswapper_128",
        "role": "swapper",
        "file": "inswapper_128.onnx",
        "sha256": sha256(b"model"),
        "inputs": {"target": [1, 3, 128, 128], "source": [1, 512]},
        "outputs": {"output": [1, 3, 128, 128]},
        "source": "https://models.example.com/inswapper_128.onnx",
    }
    return {**entry, **overrides}


def _manifest(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "fill.json"
    path.write_text(json.dumps({"models": list(entries)}))
    return path


@pytest.mark.parametrize(
    "source",
    [
        "http://models.example.com/inswapper_128.onnx",
        "file:///etc/passwd",
        "/etc/passwd",
        "az://acct/container/model.onnx",
        "ftp://models.example.com/x.onnx",
        "",
        None,
    ],
)
def test_a_source_other_than_s3_or_https_is_refused_before_any_io(tmp_path: Path, source: Any) -> None:
    dest = tmp_path / "cache"
    with pytest.raises(ModelError, match="s3://bucket/key or https://") as caught:
        fill_models(_manifest(tmp_path, _entry(source=source)), dest)
    assert caught.value.field == "models[0].source"
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("file", "why"),
    [
        ("../escape.onnx", "inside the model directory"),
        ("sub/../../escape.onnx", "inside the model directory"),
        ("/etc/cron.d/escape", "inside the model directory"),
        ("manifest.json", "manifest.json or a hidden name"),
        (".hidden.onnx", "manifest.json or a hidden name"),
        ("sub/.x/model.onnx", "manifest.json or a hidden name"),
        ("dir\\..\\..\\escape.onnx", "backslashes"),
    ],
)
def test_a_file_name_that_leaves_the_cache_or_hides_in_it_is_refused(tmp_path: Path, file: str, why: str) -> None:
    dest = tmp_path / "cache"
    with pytest.raises(ModelError, match=why):
        fill_models(_manifest(tmp_path, _entry(file=file)), dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.onnx").exists()


def test_a_folder_in_the_cache_that_links_outside_is_not_followed(tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with pytest.raises(ModelError, match="resolves outside the model directory"):
        fill_models(_manifest(tmp_path, _entry(file="sub/model.onnx")), dest)
    assert list(outside.iterdir()) == []


def test_a_bundled_models_name_is_refused_before_it_could_shadow_the_detector(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="yunet_2023mar is bundled"):
        fill_models(_manifest(tmp_path, _entry(name="yunet_2023mar")), tmp_path / "cache")


def test_duplicate_names_or_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="same name twice"):
        fill_models(_manifest(tmp_path, _entry(), _entry(file="other.onnx")), tmp_path / "a")
    with pytest.raises(ModelError, match="same file twice"):
        fill_models(_manifest(tmp_path, _entry(), _entry(name="other")), tmp_path / "b")


@pytest.mark.parametrize(
    ("host", "addresses", "rule"),
    [
        ("169.254.169.254", None, "cloud metadata"),
        ("127.0.0.1", None, "loopback"),
        ("[::ffff:10.0.0.1]", None, "private"),
        ("0x7f.1", None, "loopback"),
        ("metadata.google.internal", None, "internal name"),
        ("kubernetes", None, "single-label name"),
        ("rebind.example.com", ["93.184.216.34", "10.1.2.3"], "private"),
    ],
)
def test_an_https_source_on_an_internal_address_is_refused_and_nothing_is_written(
    tmp_path: Path, host: str, addresses: list[str] | None, rule: str
) -> None:
    rules = FetchRules(resolver=fixed_resolver({host: addresses} if addresses else {}))
    manifest = _manifest(tmp_path, _entry(source=f"https://{host}/latest/meta-data/iam"))
    dest = tmp_path / "cache"
    [result] = fill_models(manifest, dest, rules=rules)
    assert result.action == "failed"
    assert rule in str(result.error)
    assert list(dest.iterdir()) == []


def test_a_loopback_mirror_is_reached_only_when_the_operator_names_it(tmp_path: Path) -> None:
    entries, blobs = standin_files(tmp_path)
    entry = entries[0]
    with https_mirror(tmp_path, {f"/{entry['file']}": blobs[entry["file"]]}) as (mirror, trust, _ca):
        manifest = fill_manifest(tmp_path / "fill.json", [entry], {entry["name"]: mirror.url(entry["file"])})
        rules = FetchRules(resolver=fixed_resolver({MIRROR_HOST: ["127.0.0.1"]}), tls_verify=trust)
        [result] = fill_models(manifest, tmp_path / "cache", rules=rules)
    assert result.action == "failed"
    assert "loopback" in str(result.error)
    assert mirror.requests == []


def test_a_vms_models_manifest_never_reaches_the_bootstrap_script_as_text() -> None:
    hostile = json.dumps({"models": [_entry(source="https://x.example.com/'; reboot; echo '$(id)`id`")]})
    image = WorkerImage(image="registry.example/w:1", models_manifest=hostile)
    user_data = cloud_init(SPEC, image, attempt_id="att_01HXYZ")
    assert "reboot" not in user_data  # only base64 inside write_files
    files = {entry["path"]: entry for entry in yaml.safe_load(user_data)["write_files"]}
    script = base64.b64decode(files["/usr/local/sbin/fusionplane-worker"]["content"]).decode()
    assert "reboot" not in script
    assert "$(id)" not in script
    assert base64.b64decode(files[MODELS_MANIFEST_PATH]["content"]).decode() == hostile
