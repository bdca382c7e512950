"""The worker callback bodies (controlplane/domain/callbacks.py): bounds, nesting, and the worker's side."""

from __future__ import annotations

import json

import pytest

from controlplane.domain import FieldError
from controlplane.domain.callbacks import (
    MAX_CALLBACK_BYTES,
    MAX_FAILURE_MESSAGE,
    MAX_JSON_DEPTH,
    MAX_PROVIDER_REASON,
    Completion,
    Failure,
    Heartbeat,
    Progress,
    parse_callback,
)
from controlplane.worker.agent import _bounded, _failure
from controlplane.worker.callbacks import Reporter


def nested(depth: int) -> bytes:
    """A heartbeat whose JSON is ``depth`` levels deep (the outer object counts)."""
    return ('{"progress": {"stage": "x", "extra": ' + "[" * (depth - 2) + "]" * (depth - 2) + "}}").encode()


def test_nesting_up_to_the_bound_is_read_and_one_more_is_refused() -> None:
    assert parse_callback(nested(MAX_JSON_DEPTH), Heartbeat).progress.stored() == {"stage": "x"}
    with pytest.raises(FieldError) as refused:
        parse_callback(nested(MAX_JSON_DEPTH + 1), Heartbeat)
    assert refused.value.path == "body"


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting() -> None:
    message = '"' + "[{" * 200 + "\\"  # in JSON: an escaped quote, 400 brackets, an escaped backslash
    body = json.dumps({"stage": "s", "message": message}).encode()
    assert b'\\"[{' in body
    assert parse_callback(body, Progress).message == message


@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_an_empty_body_is_the_empty_report(raw: bytes) -> None:
    assert parse_callback(raw, Heartbeat).progress.stored() == {}
    assert parse_callback(raw, Failure).kind == "internal"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"x" * (MAX_CALLBACK_BYTES + 1), "body"),
        (b"[1]", "body"),
        (b"{", "body"),
        (b'{"frames": -1}', "frames"),
        (b'{"fps": 1e999}', "fps"),
        (b'{"eta_s": "soon"}', "eta_s"),
    ],
)
def test_refusals_name_the_field(raw: bytes, path: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_callback(raw, Progress)
    assert refused.value.path == path


def test_what_is_stored_is_what_the_sender_set_of_the_known_fields() -> None:
    body = parse_callback(b'{"frames": 1, "eta_s": null, "unknown": {"deep": [1, 2]}}', Progress)
    assert body.stored() == {"frames": 1, "eta_s": None}
    summary = {"output": "/o.mp4", "kind": "video", "frames": 3, "fps": 2, "timings_s": {"swap": 0.5}}
    assert Completion.model_validate(summary).stored() == {**summary, "fps": 2.0}


def test_the_execution_provider_and_its_reason_are_typed_fields_of_complete_and_progress() -> None:
    chosen = {
        "execution_provider": "cuda",
        "execution_provider_reason": "tensorrt: libnvinfer.so.10: nope; cuda: loaded",
    }
    assert Completion.model_validate({"frames": 1, **chosen}).stored() == {"frames": 1, **chosen}
    assert parse_callback(json.dumps({"frames": 1, **chosen}).encode(), Progress).stored() == {"frames": 1, **chosen}
    with pytest.raises(FieldError) as refused:
        parse_callback(b'{"execution_provider": "CUDA Execution"}', Completion)
    assert refused.value.path == "execution_provider"


def test_the_worker_cuts_a_long_provider_reason_instead_of_losing_the_report() -> None:
    summary = {"output": "/o.png", "execution_provider": "cpu", "execution_provider_reason": "r" * 5000}
    cut = _bounded(summary)
    assert len(cut["execution_provider_reason"]) == MAX_PROVIDER_REASON
    assert Completion.model_validate(cut).output == "/o.png"
    assert _bounded({"frames": 1}) == {"frames": 1}


def test_the_worker_cuts_a_long_failure_instead_of_losing_it() -> None:
    body = _failure(kind="bad_input", field="f" * 300, message="m" * 10_000, exit_code=65)
    assert len(body.message) == MAX_FAILURE_MESSAGE
    assert body.field == "f" * 128
    assert parse_callback(json.dumps(body.stored()).encode(), Failure) == body


def test_the_worker_drops_a_progress_report_out_of_bounds_and_keeps_the_last_good_one() -> None:
    reporter = Reporter(None)
    reporter.progress({"frames": 3, "total": 9, "fps": 1.5, "eta_s": None, "scratch": "not sent"})
    assert reporter.state.stored() == {"frames": 3, "total": 9, "fps": 1.5, "eta_s": None}
    reporter.progress({"frames": 4, "message": "m" * 501})
    assert reporter.state.stored()["frames"] == 3
    reporter.close()
