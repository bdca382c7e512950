"""The model cache: manifest parsing, checksums and signature checks."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from faceswap.errors import ModelError
from faceswap.models import BUNDLED_DIR, ModelStore, default_model_dir, read_signature, sha256_file
from tests.support.standin_models import build_arcface, build_inswapper, write_model_dir

YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(model_dir: Path, document: Any) -> None:
    (model_dir / "manifest.json").write_text(json.dumps(document), encoding="utf-8")


def _entry(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in document["models"] if m["name"] == name)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model_dir(tmp_path / "models")


# ---------------------------------------------------------------- bundled detector


def test_bundled_yunet_is_listed_and_verifies(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "nothing-here")
    names = [entry.name for entry in store.entries()]
    assert names == ["yunet_2023mar"]
    entry = store.get("yunet_2023mar", role="detector")
    assert entry.bundled
    assert entry.role == "detector"
    assert entry.path.parent == BUNDLED_DIR
    assert entry.verify() == entry.path
    assert store.verified_path("yunet_2023mar") == entry.path


def test_bundled_manifest_checksum_is_the_real_files() -> None:
    document = json.loads((BUNDLED_DIR / "manifest.json").read_text(encoding="utf-8"))
    (raw,) = document["models"]
    assert raw["name"] == "yunet_2023mar"
    actual = hashlib.sha256((BUNDLED_DIR / raw["file"]).read_bytes()).hexdigest()
    assert raw["sha256"] == actual
    # the published OpenCV Zoo face_detection_yunet_2023mar.onnx
    assert actual == YUNET_SHA256
    assert sha256_file(BUNDLED_DIR / raw["file"]) == actual


def test_bundled_manifest_signature_is_the_real_files() -> None:
    document = json.loads((BUNDLED_DIR / "manifest.json").read_text(encoding="utf-8"))
    (raw,) = document["models"]
    inputs, outputs = read_signature(BUNDLED_DIR / raw["file"])
    assert inputs == raw["inputs"]
    assert outputs == raw["outputs"]


def test_default_model_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONPLANE_MODEL_DIR", str(tmp_path / "cache"))
    assert default_model_dir() == tmp_path / "cache"
    assert ModelStore().model_dir == tmp_path / "cache"


# ---------------------------------------------------------------- operator models


def test_standin_models_verify(model_dir: Path) -> None:
    store = ModelStore(model_dir)
    assert sorted(e.name for e in store.entries()) == ["arcface_w600k_r50", "inswapper_128", "yunet_2023mar"]
    swapper = store.get("inswapper_128", role="swapper")
    recognizer = store.get("arcface_w600k_r50", role="recognizer")
    assert not swapper.bundled
    assert not recognizer.bundled
    assert swapper.verify() == model_dir / "inswapper_128.onnx"
    assert recognizer.verify() == model_dir / "w600k_r50.onnx"
    assert swapper.inputs == {"target": [1, 3, 128, 128], "source": [1, 512]}


def test_wrong_checksum_is_a_model_error(model_dir: Path) -> None:
    document = _manifest(model_dir)
    _entry(document, "inswapper_128")["sha256"] = "0" * 64
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("inswapper_128")
    assert info.value.field == "models.inswapper_128.sha256"
    assert "checksum" in str(info.value)


def test_a_modified_file_fails_its_checksum(model_dir: Path) -> None:
    path = model_dir / "w600k_r50.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("arcface_w600k_r50")
    assert info.value.field == "models.arcface_w600k_r50.sha256"
    assert "checksum" in str(info.value)


def test_wrong_shapes_fail_the_role_contract(model_dir: Path) -> None:
    # a self-consistent manifest (right sha, declared shapes = file shapes) for a model
    # that is not a usable 128 px swapper
    wrong = build_inswapper(model_dir / "inswapper_256.onnx", target_shape=(1, 3, 256, 256))
    document = _manifest(model_dir)
    entry = _entry(document, "inswapper_128")
    entry.update(
        file=wrong.name,
        sha256=_sha(wrong),
        inputs={"target": [1, 3, 256, 256], "source": [1, 512]},
        outputs={"output": [1, 3, 256, 256]},
    )
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("inswapper_128", role="swapper")
    assert info.value.field is not None
    assert info.value.field.startswith("models.inswapper_128.")
    assert "not a usable swapper" in str(info.value)
    assert "[1, 3, 128, 128]" in str(info.value)


def test_recognizer_in_the_swapper_role_fails_the_contract(model_dir: Path) -> None:
    document = _manifest(model_dir)
    entry = _entry(document, "arcface_w600k_r50")
    entry["role"] = "swapper"
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("arcface_w600k_r50")
    assert "not a usable swapper" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "tensor", "shape"),
    [
        ("inputs", "target", [1, 3, 112, 112]),
        ("inputs", "source", [1, 256]),
        ("outputs", "output", [1, 3, 128, 128, 1]),
    ],
)
def test_declared_shape_differing_from_the_file_is_a_model_error(
    model_dir: Path, kind: str, tensor: str, shape: list[int]
) -> None:
    document = _manifest(model_dir)
    _entry(document, "inswapper_128")[kind][tensor] = shape
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("inswapper_128")
    assert info.value.field == f"models.inswapper_128.{kind}.{tensor}"
    assert "manifest says" in str(info.value)


def test_declared_tensor_missing_from_the_file_is_a_model_error(model_dir: Path) -> None:
    document = _manifest(model_dir)
    inputs = _entry(document, "inswapper_128")["inputs"]
    inputs["face"] = inputs.pop("target")
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("inswapper_128")
    assert info.value.field == "models.inswapper_128.inputs.face"
    assert "'face'" in str(info.value)


def test_symbolic_batch_dimension_in_the_manifest_matches(model_dir: Path) -> None:
    document = _manifest(model_dir)
    _entry(document, "arcface_w600k_r50")["inputs"]["input.1"] = [None, 3, 112, 112]
    _write_manifest(model_dir, document)
    assert ModelStore(model_dir).verified_path("arcface_w600k_r50").is_file()


def test_missing_file_is_a_model_error(model_dir: Path) -> None:
    (model_dir / "inswapper_128.onnx").unlink()
    store = ModelStore(model_dir)
    assert store.get("inswapper_128").name == "inswapper_128"  # listing does not need the file
    with pytest.raises(ModelError) as info:
        store.verified_path("inswapper_128")
    assert info.value.field == "models.inswapper_128"
    assert "missing" in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2", '{"models": [}'])
def test_invalid_json_manifest_is_a_model_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "manifest.json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelError) as info:
        ModelStore(tmp_path).entries()
    assert info.value.field == "manifest"
    assert "not valid JSON" in str(info.value)


@pytest.mark.parametrize("document", [[], {"models": {}}, {"model": []}, "models", 42])
def test_manifest_without_a_models_list_is_a_model_error(tmp_path: Path, document: Any) -> None:
    _write_manifest(tmp_path, document)
    with pytest.raises(ModelError) as info:
        ModelStore(tmp_path).entries()
    assert info.value.field == "manifest.models"


def test_empty_model_dir_is_fine(tmp_path: Path) -> None:
    _write_manifest(tmp_path, {"models": []})
    assert [e.name for e in ModelStore(tmp_path).entries()] == ["yunet_2023mar"]


@pytest.mark.parametrize("key", ["name", "role", "file", "sha256", "inputs", "outputs"])
def test_missing_keys_are_model_errors(model_dir: Path, key: str) -> None:
    document = _manifest(model_dir)
    del document["models"][1][key]
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == f"models[1].{key}"
    assert "required" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("name", "", "models[0].name"),
        ("name", 7, "models[0].name"),
        ("role", "upscaler", "models[0].role"),
        ("sha256", "abc", "models[0].sha256"),
        ("sha256", "A" * 64, "models[0].sha256"),
        ("sha256", 5, "models[0].sha256"),
        ("inputs", {}, "models[0].inputs"),
        ("inputs", [1, 3, 128, 128], "models[0].inputs"),
        ("inputs", {"target": [1, 3, 0, 128]}, "models[0].inputs.target"),
        ("inputs", {"target": [1, 3, True, 128]}, "models[0].inputs.target"),
        ("outputs", {"output": "1x3x128x128"}, "models[0].outputs.output"),
        ("file", "", "models[0].file"),
        ("file", 3, "models[0].file"),
    ],
)
def test_bad_values_are_model_errors_naming_the_field(model_dir: Path, key: str, value: Any, field: str) -> None:
    document = _manifest(model_dir)
    document["models"][0][key] = value
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == field


def test_an_entry_that_is_not_an_object_is_a_model_error(model_dir: Path) -> None:
    document = _manifest(model_dir)
    document["models"].append("inswapper_128.onnx")
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == "models[2]"


@pytest.mark.parametrize("file", ["../x.onnx", "sub/../../x.onnx", "/etc/passwd", "..", "./../x.onnx"])
def test_path_traversal_in_file_is_rejected(tmp_path: Path, model_dir: Path, file: str) -> None:
    outside = build_arcface(tmp_path / "x.onnx")
    document = _manifest(model_dir)
    entry = _entry(document, "arcface_w600k_r50")
    entry["file"] = file
    entry["sha256"] = _sha(outside)
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == "models[1].file"


def test_a_file_in_a_subdirectory_is_allowed(model_dir: Path) -> None:
    (model_dir / "arcface").mkdir()
    (model_dir / "w600k_r50.onnx").rename(model_dir / "arcface" / "w600k_r50.onnx")
    document = _manifest(model_dir)
    _entry(document, "arcface_w600k_r50")["file"] = "arcface/w600k_r50.onnx"
    _write_manifest(model_dir, document)
    assert ModelStore(model_dir).verified_path("arcface_w600k_r50") == model_dir / "arcface" / "w600k_r50.onnx"


def test_duplicate_names_are_rejected(model_dir: Path) -> None:
    document = _manifest(model_dir)
    document["models"].append(copy.deepcopy(document["models"][0]))
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == "manifest.models"
    assert "inswapper_128" in str(info.value)
    assert "more than once" in str(info.value)


def test_operator_entry_may_not_shadow_the_bundled_detector(model_dir: Path) -> None:
    document = _manifest(model_dir)
    bundled = json.loads((BUNDLED_DIR / "manifest.json").read_text(encoding="utf-8"))["models"][0]
    (model_dir / bundled["file"]).write_bytes((BUNDLED_DIR / bundled["file"]).read_bytes())
    document["models"].append(bundled)
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).entries()
    assert info.value.field == "models.yunet_2023mar"
    assert "bundled" in str(info.value)


def test_get_of_an_unknown_name_lists_the_known_ones(model_dir: Path) -> None:
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).get("simswap_256")
    message = str(info.value)
    assert "simswap_256" in message
    for known in ("arcface_w600k_r50", "inswapper_128", "yunet_2023mar"):
        assert known in message
    assert info.value.field == "models"


def test_get_of_the_inswapper_without_a_model_dir_explains(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        ModelStore(tmp_path / "absent").get("inswapper_128", role="swapper")
    assert "yunet_2023mar" in str(info.value)
    assert str(tmp_path / "absent") in str(info.value)


def test_get_with_the_wrong_role_is_a_model_error(model_dir: Path) -> None:
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).get("arcface_w600k_r50", role="swapper")
    assert "recognizer" in str(info.value)


def test_non_onnx_file_with_a_matching_checksum_is_a_model_error(model_dir: Path) -> None:
    junk = model_dir / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 64 + b"\xff\xfe not a protobuf")
    document = _manifest(model_dir)
    entry = _entry(document, "inswapper_128")
    entry["file"] = junk.name
    entry["sha256"] = _sha(junk)
    _write_manifest(model_dir, document)
    with pytest.raises(ModelError) as info:
        ModelStore(model_dir).verified_path("inswapper_128")
    assert "not a readable ONNX file" in str(info.value)
    assert "junk.onnx" in str(info.value)


def test_sha256_file_notices_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"one")
    first = sha256_file(path)
    assert first == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two, longer")
    assert sha256_file(path) == hashlib.sha256(b"two, longer").hexdigest()
