"""The encoder choice (``auto``: NVENC only where a test encode works) and the one quality mapping."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from controlplane.domain.worker_spec import SpecOptions
from faceswap import SwapOptions, encoders
from faceswap.encoders import ENCODER_CHOICES, ENCODERS, choose_encoder, encoder_args, encoder_works
from faceswap.errors import BadInput

_LISTING = """Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libx265              libx265 H.265 / HEVC (codec hevc)
{nvenc}"""
_NVENC_LINE = " V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    encoders._test_encode.cache_clear()
    yield
    encoders._test_encode.cache_clear()


def _fake_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, lists_nvenc: bool, nvenc: str) -> Path:
    """An ffmpeg that lists its encoders and whose NVENC ``fail``s, ``work``s or ``hang``s; logs each call."""
    listing = tmp_path / "listing.txt"
    listing.write_text(_LISTING.format(nvenc=_NVENC_LINE if lists_nvenc else ""), encoding="utf-8")
    log = tmp_path / "calls.log"
    nvenc_action = {
        "fail": 'echo "[h264_nvenc @ 0x55d0c0ffee00] Cannot load libcuda.so.1" >&2; '
        'echo "Error initializing output stream 0:0" >&2; exit 1',
        "work": "exit 0",
        "hang": "sleep 30",
    }[nvenc]
    script = tmp_path / "ffmpeg"
    script.write_text(
        f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *-encoders*) cat {listing}; exit 0 ;;
  *h264_nvenc*) {nvenc_action} ;;
esac
exit 0
""",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FUSIONPLANE_FFMPEG", str(script))
    return log


def test_auto_falls_back_to_libx264_on_this_machine_with_the_reason() -> None:
    if encoder_works("h264_nvenc")[0]:
        pytest.skip("this machine has a working NVENC")
    choice = choose_encoder("auto")
    assert choice.encoder == "libx264"
    assert choice.reason.startswith("auto: h264_nvenc")
    assert choice.reason.endswith("; using libx264")


def test_listed_but_failing_nvenc_picks_libx264(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, lists_nvenc=True, nvenc="fail")
    choice = choose_encoder("auto")
    assert choice.encoder == "libx264"
    # the first error line, without ffmpeg's per-run address
    assert choice.reason == (
        "auto: h264_nvenc is listed but a test encode failed (Cannot load libcuda.so.1); using libx264"
    )
    assert choose_encoder("auto") == choice
    test_encodes = [line for line in log.read_text().splitlines() if "h264_nvenc" in line]
    assert len(test_encodes) == 1, "the test encode runs once per process"
    assert "lavfi" in test_encodes[0]
    assert "-f null -" in test_encodes[0]


def test_unlisted_nvenc_picks_libx264_without_a_test_encode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, lists_nvenc=False, nvenc="work")
    choice = choose_encoder("auto")
    assert choice.encoder == "libx264"
    assert choice.reason == "auto: h264_nvenc is not in this ffmpeg; using libx264"
    assert "h264_nvenc" not in log.read_text()


def test_working_nvenc_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, lists_nvenc=True, nvenc="work")
    assert choose_encoder("auto").encoder == "h264_nvenc"


def test_a_hanging_test_encode_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, lists_nvenc=True, nvenc="hang")
    monkeypatch.setattr(encoders, "PROBE_TIMEOUT_S", 0.5)
    choice = choose_encoder("auto")
    assert choice.encoder == "libx264"
    assert "took over" in choice.reason


def test_an_explicit_encoder_is_used_as_asked_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, lists_nvenc=False, nvenc="fail")
    assert choose_encoder("libx265").reason == "requested"
    with pytest.raises(BadInput, match="no hevc_nvenc encoder"):
        choose_encoder("hevc_nvenc")


def test_cpu_flags_are_what_they_were_before_auto() -> None:
    # exactly the arguments libx264 got before issue 19, so CPU outputs are byte-identical
    assert encoder_args("libx264", 18, "veryfast") == ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18"]
    assert encoder_args("libx265", 28, "medium") == ["-c:v", "libx265", "-preset", "medium", "-crf", "28"]


@pytest.mark.parametrize("encoder", ["h264_nvenc", "hevc_nvenc"])
def test_nvenc_gets_constant_quality_uncapped_and_a_preset_of_the_same_speed(encoder: str) -> None:
    assert encoder_args(encoder, 18, "veryfast") == [
        "-c:v",
        encoder,
        "-preset",
        "p3",
        "-rc",
        "vbr",
        "-cq",
        str(18 + ENCODERS[encoder].offset),
        "-b:v",
        "0",
    ]
    presets = ENCODERS[encoder].presets
    assert presets is not None
    spec_presets = get_args(SpecOptions.model_fields["preset"].annotation)
    assert set(spec_presets) <= set(presets), "every preset a job may ask for has an NVENC speed class"
    speeds = [int(presets[p].removeprefix("p")) for p in spec_presets]
    assert speeds == sorted(speeds), "slower x264 presets map to slower NVENC presets"
    assert encoder_args(encoder, 51, "slow")[-3] == "51", "quality stays within 0..51"


def test_auto_is_the_default_everywhere_an_encoder_is_named() -> None:
    assert SwapOptions().encoder == "auto"
    assert SpecOptions().encoder == "auto"
    assert set(get_args(SpecOptions.model_fields["encoder"].annotation)) == set(ENCODER_CHOICES)
    with pytest.raises(BadInput):
        SwapOptions(encoder="mpeg1")
