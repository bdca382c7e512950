"""Which video decoder a job uses: the CPU (libavcodec) or NVDEC through ffmpeg's CUDA hwaccel.

``auto`` picks NVDEC only where it really works on this node and for a codec
NVDEC decodes: ffmpeg must decode a few frames of an H.264 test clip on the
GPU and hand them back (``-hwaccel cuda -hwaccel_output_format cuda`` then
``hwdownload``: a frame that did not come from the GPU fails the filter, so a
silent software fallback cannot pass the check). Debian's ffmpeg lists the
``cuda`` hwaccel on every machine, GPU or not. The H100 and H200 have NVDEC
engines but no NVENC: decoding there moves the input's decode off the CPU
cores the encoder needs.

The decoded frames are the same either way (H.264/HEVC decoding is exact;
NVDEC hands back NV12, which converts to BGR like the CPU's YUV 4:2:0), so
the decoder is a runtime choice, not part of a checkpoint's fingerprint.
Once a stream is open on the GPU, ffmpeg itself decodes in software whatever
NVDEC refuses (a 4:2:2 or 4:4:4 profile, say). The check runs once per
process per ffmpeg binary and is bounded in time.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from faceswap.errors import BadInput, ExecutionProviderUnavailable
from faceswap.gpu_probe import DRIVER_LIBRARY, dlopen
from faceswap.media import ffmpeg_binary, ffmpeg_first_error

__all__ = [
    "DECODER_CHOICES",
    "NVDEC_CODECS",
    "DecoderChoice",
    "choose_decoder",
    "decoder_input_args",
    "decoder_works",
]

#: every value the ``decoder`` option takes
DECODER_CHOICES = ("auto", "cpu", "nvdec")
#: the codecs (ffprobe's names) ffmpeg's CUDA hwaccel decodes on NVDEC (NVIDIA's decode support matrix, Turing on)
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp8", "vp9", "mpeg1video", "mpeg2video", "mpeg4", "vc1"})
#: how long the test clip and its decode may take together (the first CUDA context on a node takes a second or two)
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class DecoderChoice:
    """The decoder a job uses and why (reported as ``decoder`` and ``decoder_reason``)."""

    decoder: str
    reason: str


def decoder_input_args(decoder: str) -> list[str]:
    """The ffmpeg input options for ``decoder`` (before ``-i``): none on the CPU."""
    # frames come back to system memory (no -hwaccel_output_format), as the BGR pipe needs them
    return ["-hwaccel", "cuda"] if decoder == "nvdec" else []


def decoder_works(decoder: str = "nvdec") -> tuple[bool, str]:
    """Whether NVDEC decodes a few test frames on this node, and ffmpeg's first word if not (cached)."""
    if decoder != "nvdec":
        return True, ""
    return _test_decode(ffmpeg_binary())


def _driver_missing() -> str | None:
    """Why the NVIDIA driver's library does not load here (ffmpeg's CUDA hwaccel needs it), or None."""
    try:
        dlopen(DRIVER_LIBRARY)
    except OSError as exc:
        return str(exc).strip() or f"{DRIVER_LIBRARY} did not load"
    return None


@cache
def _test_decode(ffmpeg: str) -> tuple[bool, str]:
    # no driver, no NVDEC: a CPU node answers without running ffmpeg twice (0.2 s on the first video job)
    missing = _driver_missing()
    if missing is not None:
        return False, f"no NVIDIA driver: {missing}"
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error"]
    with tempfile.TemporaryDirectory(prefix="fusionplane-nvdec-") as tmp:
        clip = Path(tmp) / "probe.ts"
        make = [*quiet, "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=30", "-frames:v", "8", "-an"]
        make += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", str(clip)]
        decode = [*quiet, "-hwaccel", "cuda", "-hwaccel_output_format", "cuda", "-i", f"file:{clip}"]
        decode += ["-vf", "hwdownload,format=nv12", "-f", "null", "-"]
        for step, cmd in (("making the H.264 test clip", make), ("a test decode", decode)):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                return False, f"{step} took over {PROBE_TIMEOUT_S:.0f} s"
            except OSError as exc:
                return False, f"ffmpeg could not run: {exc.strerror or exc}"
            if done.returncode != 0:
                return False, f"{step} failed: {ffmpeg_first_error(done.stderr, done.returncode)}"
    return True, ""


def choose_decoder(requested: str, codec: str) -> DecoderChoice:
    """The decoder for a video of ``codec``: ``requested`` itself, or for ``auto`` NVDEC if it works here.

    ``nvdec`` asked for on a node where the test decode fails is
    :class:`ExecutionProviderUnavailable` (another target may have it); asked
    for a codec NVDEC does not decode, :class:`BadInput`.
    """
    if requested not in DECODER_CHOICES:
        choices = ", ".join(DECODER_CHOICES)
        raise BadInput(f"unsupported decoder {requested!r}; choose one of {choices}", field="decoder")
    if requested == "cpu":
        return DecoderChoice("cpu", "requested")
    if codec not in NVDEC_CODECS:
        if requested == "nvdec":
            raise BadInput(f"NVDEC does not decode {codec}; use decoder cpu or auto", field="decoder")
        return DecoderChoice("cpu", f"auto: NVDEC does not decode {codec}; using cpu")
    works, error = decoder_works("nvdec")
    if works:
        return DecoderChoice("nvdec", "requested" if requested == "nvdec" else "auto: nvdec passed a test decode")
    if requested == "nvdec":
        raise ExecutionProviderUnavailable(f"NVDEC does not work on this node: {error}", field="decoder")
    return DecoderChoice("cpu", f"auto: nvdec: {error}; using cpu")
