"""Hostile trace files: every bad document is a TraceError naming the file and the field, and nothing hangs.

Decisions held here: symbolic links are followed (a scenario's traces are the
operator's own files), but what they point at is checked like any file: a
FIFO, a directory or an oversize file is refused, and the size cap is checked
before a byte is parsed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from simulator.traces import MAX_TRACE_BYTES, TraceError, load_trace
from tests.support.sim import write_input

VALID = '{"metadata": {"gap_seconds": 60}, "data": [0, 1, 1]}'


def _write(tmp_path: Path, text: str | bytes, name: str = "zone-a.json") -> Path:
    return write_input(tmp_path, name, text)


@pytest.mark.parametrize(
    ("document", "where", "problem"),
    [
        ('{"data": [1]}', "metadata", "missing"),
        ('{"metadata": [60], "data": [1]}', "metadata", "must be an object"),
        ('{"metadata": {}, "data": [1]}', "metadata.gap_seconds", "missing"),
        ('{"metadata": {"gap_seconds": 0}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        ('{"metadata": {"gap_seconds": -195}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        ('{"metadata": {"gap_seconds": "195"}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        ('{"metadata": {"gap_seconds": true}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        ('{"metadata": {"gap_seconds": null}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        # 1e999 parses to infinity without the NaN/Infinity literals
        ('{"metadata": {"gap_seconds": 1e999}, "data": [1]}', "metadata.gap_seconds", "must be a positive number"),
        ('{"metadata": {"gap_seconds": 60}}', "data", "missing"),
        ('{"metadata": {"gap_seconds": 60}, "data": {"0": 1}}', "data", "must be a list"),
        ('{"metadata": {"gap_seconds": 60}, "data": []}', "data", "at least one value"),
        ('{"metadata": {"gap_seconds": 60}, "data": [0, 1, -1]}', "data[2]", "non-negative whole number (got -1)"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, true]}', "data[1]", "(got true)"),
        ('{"metadata": {"gap_seconds": 60}, "data": [0.5]}', "data[0]", "(got 0.5)"),
        ('{"metadata": {"gap_seconds": 60}, "data": ["1"]}', "data[0]", 'got "1"'),
        ('{"metadata": {"gap_seconds": 60}, "data": [null]}', "data[0]", "got null"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, [1]]}', "data[1]", "got list"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, 1e400]}', "data[1]", "non-negative whole number"),
    ],
)
def test_each_bad_field_is_named(tmp_path: Path, document: str, where: str, problem: str) -> None:
    path = _write(tmp_path, document)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert caught.value.where == where
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: {where}: ")
    assert path.name in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b"",
        b'{"metadata": {"gap_seconds": 60}, "data": [1, NaN]}',
        b'{"metadata": {"gap_seconds": Infinity}, "data": [1]}',
        b'{"metadata": {"gap_seconds": 60}, "data": [-Infinity]}',
        b'{"metadata": {"gap_seconds": 60}, "data": [1, 2',
        # a number too long for int() (Python caps the digits it converts)
        b'{"metadata": {"gap_seconds": 60}, "data": [' + b"9" * 5000 + b"]}",
        # nesting deep enough to exhaust the parser's recursion
        b"[" * 200_000,
        b'{"metadata": {"gap_seconds": 60}, "data": [1]}\xff',
    ],
    ids=["text", "empty", "nan", "infinity", "minus-infinity", "truncated", "long-number", "deep", "not-utf8"],
)
def test_what_is_not_a_json_trace_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("document", ["[]", "[0, 1]", '"trace"', "60", "null"])
def test_a_document_that_is_not_an_object_is_refused(tmp_path: Path, document: str) -> None:
    with pytest.raises(TraceError, match="must be a JSON object"):
        load_trace(_write(tmp_path, document))


def test_settings_that_are_neither_choice_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    with pytest.raises(TraceError, match=r"zone-a\.json: reading: must be one of available, preempted"):
        load_trace(path, reading="1=preempted")
    with pytest.raises(TraceError, match=r"zone-a\.json: beyond_end: must be one of repeat, hold"):
        load_trace(path, beyond_end="wrap")


def test_an_oversize_file_is_refused_before_it_is_read_or_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as stream:
        # sparse: 65 MiB on paper, nothing on disk
        stream.truncate(65 * 1024 * 1024)
    assert path.stat().st_size > MAX_TRACE_BYTES

    def never(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("an oversize file reached the JSON parser")

    monkeypatch.setattr(json, "loads", never)
    with pytest.raises(TraceError, match=r"huge\.json: file is 68157440 bytes, over the cap of 67108864"):
        load_trace(path)


def test_the_cap_is_a_setting(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    assert load_trace(path, max_bytes=len(VALID)).values == (0, 1, 1)
    with pytest.raises(TraceError, match="over the cap of 10"):
        load_trace(path, max_bytes=10)


def test_a_symlink_is_followed_and_what_it_points_at_is_checked(tmp_path: Path) -> None:
    target = _write(tmp_path, VALID, "real.json")
    link = tmp_path / "us-east-1a.json"
    link.symlink_to(target)
    assert load_trace(link).name == "us-east-1a"
    big = tmp_path / "big.json"
    big.write_text(VALID + " " * 100, encoding="utf-8")
    big_link = tmp_path / "big-link.json"
    big_link.symlink_to(big)
    with pytest.raises(TraceError, match="over the cap"):
        load_trace(big_link, max_bytes=len(VALID))


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(fifo)
    for path in (fifo, link):
        with pytest.raises(TraceError, match="not a regular file"):
            load_trace(path)


def test_a_directory_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"(not a regular file|cannot read: Is a directory)"):
        load_trace(tmp_path)
    with pytest.raises(TraceError, match=r"absent\.json: cannot read"):
        load_trace(tmp_path / "absent.json")


def test_a_bad_value_late_in_a_long_file_refuses_the_whole_file(tmp_path: Path) -> None:
    data: list[object] = [1] * 50_000
    data[49_999] = -3
    path = _write(tmp_path, json.dumps({"metadata": {"gap_seconds": 195}, "data": data}))
    with pytest.raises(TraceError, match=r"data\[49999\]: must be a non-negative whole number \(got -3\)"):
        load_trace(path)
