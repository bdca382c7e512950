"""The decoder choice (``auto``: NVDEC only where a test decode works and the codec is one it decodes)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from controlplane.domain.callbacks import Completion
from controlplane.domain.worker_spec import SpecOptions
from faceswap import SwapOptions, decoders
from faceswap.decoders import DECODER_CHOICES, choose_decoder, decoder_input_args, decoder_works
from faceswap.errors import BadInput, ExecutionProviderUnavailable
from faceswap.media import MediaInfo
from faceswap.video import Decoder


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    decoders._test_decode.cache_clear()
    yield
    decoders._test_decode.cache_clear()


def _fake_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, nvdec: str) -> Path:
    """An ffmpeg whose CUDA hwaccel decode ``fail``s, ``work``s or ``hang``s, and that makes clips; logs each call."""
    log = tmp_path / "calls.log"
    nvdec_action = {
        "fail": 'echo "[AVHWDeviceContext @ 0x5640d7096940] Cannot load libcuda.so.1" >&2; '
        'echo "Device creation failed: -1." >&2; exit 1',
        "work": "exit 0",
        "hang": "sleep 30",
    }[nvdec]
    script = tmp_path / "ffmpeg"
    script.write_text(
        f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *-hwaccel*) {nvdec_action} ;;
esac
exit 0
""",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FUSIONPLANE_FFMPEG", str(script))
    # as on a GPU node: the driver's library loads, so the test decode is what decides
    monkeypatch.setattr(decoders, "_driver_missing", lambda: None)
    return log


def test_auto_decodes_on_the_cpu_on_this_machine_with_the_reason() -> None:
    if decoder_works("nvdec")[0]:
        pytest.skip("this machine has a working NVDEC")
    choice = choose_decoder("auto", "h264")
    assert choice.decoder == "cpu"
    assert choice.reason.startswith("auto: nvdec: ")
    assert "libcuda.so.1" in choice.reason
    assert choice.reason.endswith("; using cpu")
    with pytest.raises(ExecutionProviderUnavailable, match="NVDEC does not work on this node") as raised:
        choose_decoder("nvdec", "h264")
    assert raised.value.field == "decoder"


def test_no_driver_decides_without_running_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, nvdec="work")
    monkeypatch.setattr(decoders, "_driver_missing", lambda: "libcuda.so.1: cannot open shared object file")
    assert choose_decoder("auto", "h264") == decoders.DecoderChoice(
        "cpu", "auto: nvdec: no NVIDIA driver: libcuda.so.1: cannot open shared object file; using cpu"
    )
    assert not log.exists()


def test_a_failing_test_decode_picks_the_cpu_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, nvdec="fail")
    choice = choose_decoder("auto", "hevc")
    # the first error line, without ffmpeg's per-run address
    assert choice == decoders.DecoderChoice(
        "cpu", "auto: nvdec: a test decode failed: Cannot load libcuda.so.1; using cpu"
    )
    assert choose_decoder("auto", "h264") == choice
    calls = log.read_text().splitlines()
    decodes = [line for line in calls if "-hwaccel" in line]
    assert len(decodes) == 1, "the test decode runs once per process"
    # a frame that did not come from the GPU fails hwdownload: a silent software fallback cannot pass
    assert "-hwaccel_output_format cuda" in decodes[0]
    assert "hwdownload,format=nv12" in decodes[0]
    assert "libx264" in calls[0], "the test clip is H.264, made first"


def test_a_working_test_decode_picks_nvdec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, nvdec="work")
    assert choose_decoder("auto", "h264") == decoders.DecoderChoice("nvdec", "auto: nvdec passed a test decode")
    assert choose_decoder("nvdec", "vp9") == decoders.DecoderChoice("nvdec", "requested")


def test_a_codec_nvdec_does_not_decode_stays_on_the_cpu_without_a_test_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, nvdec="work")
    assert choose_decoder("auto", "prores") == decoders.DecoderChoice(
        "cpu", "auto: NVDEC does not decode prores; using cpu"
    )
    with pytest.raises(BadInput, match="NVDEC does not decode prores") as raised:
        choose_decoder("nvdec", "prores")
    assert raised.value.field == "decoder"
    assert not log.exists(), "no ffmpeg run for a codec NVDEC cannot take"


def test_the_cpu_asked_for_runs_no_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ffmpeg(tmp_path, monkeypatch, nvdec="work")
    assert choose_decoder("cpu", "h264") == decoders.DecoderChoice("cpu", "requested")
    assert not log.exists()


def test_a_hanging_test_decode_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, nvdec="hang")
    monkeypatch.setattr(decoders, "PROBE_TIMEOUT_S", 0.5)
    choice = choose_decoder("auto", "h264")
    assert choice.decoder == "cpu"
    assert "took over" in choice.reason


def test_nvdec_puts_the_cuda_hwaccel_before_the_input_and_the_cpu_puts_nothing(tmp_path: Path) -> None:
    assert decoder_input_args("cpu") == []
    # frames come back to memory: no -hwaccel_output_format, so the BGR pipe gets them as before
    assert decoder_input_args("nvdec") == ["-hwaccel", "cuda"]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    info = MediaInfo(width=64, height=64, codec="h264", is_video=True, demuxer="mov")
    decoder = Decoder(clip, info, decoder="nvdec")
    try:
        args = [str(a) for a in decoder.proc.args]  # type: ignore[union-attr]
    finally:
        decoder.close()
    assert args.index("-hwaccel") < args.index("-i")
    assert args[args.index("-hwaccel") + 1] == "cuda"


def test_auto_is_the_default_everywhere_a_decoder_is_named() -> None:
    assert SwapOptions().decoder == "auto"
    assert SpecOptions().decoder == "auto"
    assert set(get_args(SpecOptions.model_fields["decoder"].annotation)) == set(DECODER_CHOICES)
    with pytest.raises(BadInput) as raised:
        SwapOptions(decoder="vdpau")
    assert raised.value.field == "decoder"
    with pytest.raises(BadInput, match="unsupported decoder"):
        choose_decoder("vdpau", "h264")
    # either decoder gives the same frames: a checkpoint made with one is the other's too
    assert SwapOptions(decoder="cpu").fingerprint() == SwapOptions(decoder="nvdec").fingerprint()


def test_the_completion_callback_keeps_the_decoder_and_its_reason() -> None:
    done = Completion.model_validate({"decoder": "nvdec", "decoder_reason": "auto: nvdec passed a test decode"})
    assert done.stored() == {"decoder": "nvdec", "decoder_reason": "auto: nvdec passed a test decode"}
