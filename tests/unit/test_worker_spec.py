"""The worker spec refuses oversized, over-long and hostile documents, naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.worker.spec import MAX_SPEC_BYTES, WorkerSpec, load_spec, to_swap_options
from faceswap import BadInput

GOOD = {"task_id": "t-1", "attempt_id": "a-1", "source": "s3://b/face.png", "target": "/in/x.mp4", "output": "o.mp4"}


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def test_a_minimal_spec_gets_documented_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.options.swapper == "classic"
    assert to_swap_options(spec.options).segment_frames == 120
    assert spec.callback is None


def test_an_oversized_spec_is_refused_before_parsing(tmp_path: Path) -> None:
    padding = "x" * (MAX_SPEC_BYTES + 1)
    with pytest.raises(BadInput) as info:
        load_spec(_write(tmp_path, {**GOOD, "labels": padding}))
    assert info.value.field == "spec"
    assert "larger than" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task_id": "../../etc/passwd"}, "task_id"),
        ({"attempt_id": "a" * 200}, "attempt_id"),
        ({"attempt_id": "a\nb"}, "attempt_id"),
        ({"source": "s" * 5000}, "source"),
        ({"output": ""}, "output"),
        ({"options": {"face_selector": "index:9999"}}, "options.face_selector"),
        ({"options": {"quality": -1}}, "options.quality"),
        ({"options": {"cpu_threads": 10_000}}, "options.cpu_threads"),
        ({"options": {"mask_padding": [0, 0, 0.7, 0]}}, "options.mask_padding.2"),
        ({"callback": {"url": "ftp://cp/attempts/a-1", "token": "t"}}, "callback.url"),
        ({"callback": {"url": "https://cp/v1/attempts/a-1"}}, "callback.token"),
        ({"callback": {"url": "https://cp/a", "token": "t", "heartbeat_seconds": 0.01}}, "callback.heartbeat_seconds"),
        ({"version": 2}, "version"),
    ],
)
def test_hostile_or_malformed_values_name_their_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    with pytest.raises(BadInput) as info:
        load_spec(_write(tmp_path, {**GOOD, **change}))
    assert info.value.field == field


@pytest.mark.parametrize("document", ["[]", "null", '"spec"', "{", '{"task_id": '])
def test_documents_that_are_not_a_spec_object(tmp_path: Path, document: str) -> None:
    with pytest.raises(BadInput) as info:
        load_spec(_write(tmp_path, document))
    assert info.value.field == "spec"


def test_the_callback_token_is_kept_out_of_reprs_and_dumps() -> None:
    spec = WorkerSpec.model_validate({**GOOD, "callback": {"url": "https://cp/a", "token": "s3cr3t-token"}})
    assert "s3cr3t-token" not in repr(spec)
    assert "s3cr3t-token" not in spec.model_dump_json()
    assert spec.callback is not None
    assert spec.callback.token.get_secret_value() == "s3cr3t-token"


@pytest.mark.parametrize("document", ["{}", "\ufeff{}"])
def test_an_empty_object_names_the_first_missing_field(tmp_path: Path, document: str) -> None:
    with pytest.raises(BadInput) as info:
        load_spec(_write(tmp_path, document))
    assert info.value.field == "task_id"
