"""Hostile numbers at the boundaries that now take JSON Schema's whole numbers (``3.0``): nothing else gets in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from controlplane.api.schemas import TaskCreate
from controlplane.domain.callbacks import Failure, Progress, parse_callback
from controlplane.domain.fields import FieldError
from controlplane.domain.worker_spec import SpecOptions

BASE: dict[str, Any] = {"source": "s3://faces/a.png", "target": "s3://media/clip.mp4"}
HOSTILE = [True, False, "3", "3.0", 2.5, -1.0, 1e20, float("inf"), float("nan"), [3], {"n": 3}, 1e-300]


@pytest.mark.parametrize(
    ("model", "field"),
    [(Progress, "frames"), (Failure, "exit_code"), (SpecOptions, "quality")],
)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_only_whole_numbers_get_in(model: type[BaseModel], field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        model.model_validate({field: value})


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_deadline_is_a_whole_number_of_seconds(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        TaskCreate.model_validate({**BASE, "deadline_seconds": value})
    assert info.value.errors()[0]["loc"] == ("deadline_seconds",)


def test_a_whole_float_is_the_integer() -> None:
    assert Progress.model_validate({"frames": 3.0}).frames == 3
    assert isinstance(Progress.model_validate({"frames": 3.0}).frames, int)
    assert TaskCreate.model_validate({**BASE, "deadline_seconds": 60.0}).deadline_seconds == 60
    assert SpecOptions.model_validate({"quality": -0.0}).quality == 0


@pytest.mark.parametrize("raw", [b'{"frames": 1e400}', b'{"frames": -1e400}', b'{"frames": 1.5}', b'{"frames": "7"}'])
def test_a_callback_names_the_bad_count(raw: bytes) -> None:
    with pytest.raises(FieldError) as info:
        parse_callback(raw, Progress)
    assert info.value.path == "frames"
    assert json.loads(raw)  # the body itself is JSON: the count is what is refused
