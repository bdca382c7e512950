"""Which video encoder a job uses, and the ffmpeg flags that give each one the job's quality.

``auto`` picks NVENC only where it really works on this node: ffmpeg must list
the encoder *and* encode a few frames of a test pattern with it (Debian's
ffmpeg lists ``h264_nvenc`` on every machine, GPU or not, and data-centre GPUs
such as the H100 have no NVENC engine at all). Otherwise it picks the CPU
encoder of the same codec, with exactly the flags an explicit ``libx264`` gets,
so on a CPU node ``auto`` changes no output. The check runs once per process
per ffmpeg binary and is bounded in time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from faceswap.errors import BadInput
from faceswap.media import ffmpeg_binary, ffmpeg_first_error

__all__ = [
    "AUTO_ENCODERS",
    "ENCODERS",
    "ENCODER_CHOICES",
    "EncoderChoice",
    "EncoderFlags",
    "available_encoders",
    "choose_encoder",
    "encoder_args",
    "encoder_works",
]

#: how long the test encode may take (the first CUDA context on a node takes a second or two)
PROBE_TIMEOUT_S = 20.0

# x264/x265 preset -> the NVENC preset of the same speed class (p1 fastest .. p7 slowest), so a
# job that asked for speed over size gets it on either encoder
_NVENC_PRESETS: Mapping[str, str] = {
    "ultrafast": "p1",
    "superfast": "p2",
    "veryfast": "p3",
    "faster": "p4",
    "fast": "p5",
    "medium": "p6",
    "slow": "p7",
}


@dataclass(frozen=True)
class EncoderFlags:
    """How one encoder is told the job's quality (CRF-style 0 best .. 51) and preset."""

    #: flags before the quality number
    quality: tuple[str, ...]
    #: added to the job's quality (then kept within 0..51)
    offset: int = 0
    #: flags after the quality number
    tail: tuple[str, ...] = ()
    #: the job's x264-style preset -> this encoder's; None passes it as it is
    presets: Mapping[str, str] | None = field(default=None)


#: The one quality mapping. x264/x265 get ``-crf N``. NVENC gets constant quality ``-rc vbr -cq N``
#: with ``-b:v 0``: without it NVENC's VBR is capped at its 2 Mb/s default bitrate and a CRF-18 job
#: comes out blocky. CRF and CQ count the same quantiser steps of the same codec, so the offset is
#: 0: equal numbers aim at equal distortion (NVENC spends more bits for it). It is a choice, not a
#: measurement (no NVENC on the machines this was written on): tune it here, nowhere else.
ENCODERS: Mapping[str, EncoderFlags] = {
    "libx264": EncoderFlags(quality=("-crf",)),
    "libx265": EncoderFlags(quality=("-crf",)),
    "h264_nvenc": EncoderFlags(quality=("-rc", "vbr", "-cq"), tail=("-b:v", "0"), presets=_NVENC_PRESETS),
    "hevc_nvenc": EncoderFlags(quality=("-rc", "vbr", "-cq"), tail=("-b:v", "0"), presets=_NVENC_PRESETS),
}
#: ``auto`` -> (the GPU encoder tried first, the CPU encoder of the same codec)
AUTO_ENCODERS: Mapping[str, tuple[str, str]] = {"auto": ("h264_nvenc", "libx264")}
#: every value the ``encoder`` option takes
ENCODER_CHOICES = (*AUTO_ENCODERS, *ENCODERS)


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder a job uses and why (reported as ``encoder`` and ``encoder_reason``)."""

    encoder: str
    reason: str


def encoder_args(encoder: str, quality: int, preset: str) -> list[str]:
    """``-c:v``, preset and quality flags for ``encoder`` at the job's CRF-style ``quality``."""
    flags = ENCODERS[encoder]
    mapped = flags.presets.get(preset, preset) if flags.presets is not None else preset
    number = min(max(quality + flags.offset, 0), 51)
    return ["-c:v", encoder, "-preset", mapped, *flags.quality, str(number), *flags.tail]


def available_encoders() -> set[str]:
    """The video encoders this ffmpeg was built with (``ffmpeg -encoders``): listed, not proven to work."""
    out = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith(" V") and len(line.split()) > 1}


def encoder_works(encoder: str) -> tuple[bool, str]:
    """Whether ``encoder`` encodes a few test frames on this node, and ffmpeg's last word if not (cached)."""
    return _test_encode(ffmpeg_binary(), encoder)


@cache
def _test_encode(ffmpeg: str, encoder: str) -> tuple[bool, str]:
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=256x256:rate=30",
        "-frames:v",
        "8",
        "-an",
        *encoder_args(encoder, 23, "veryfast"),
        "-pix_fmt",
        "yuv420p",
        "-f",
        "null",
        "-",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False, f"a test encode took over {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return False, f"ffmpeg could not run: {exc.strerror or exc}"
    if done.returncode == 0:
        return True, ""
    return False, ffmpeg_first_error(done.stderr, done.returncode)


def choose_encoder(requested: str) -> EncoderChoice:
    """The encoder for a video job: ``requested`` itself, or for ``auto`` NVENC if it works, else the CPU one.

    Raises :class:`BadInput` when the encoder (for ``auto``, the CPU fallback) is not in this ffmpeg.
    """
    listed = available_encoders()
    if requested not in AUTO_ENCODERS:
        if requested not in listed:
            raise BadInput(f"this ffmpeg has no {requested} encoder", field="encoder")
        return EncoderChoice(requested, "requested")
    gpu, cpu = AUTO_ENCODERS[requested]
    if gpu not in listed:
        why = f"{gpu} is not in this ffmpeg"
    else:
        works, error = encoder_works(gpu)
        if works:
            return EncoderChoice(gpu, f"auto: {gpu} passed a test encode on this node")
        why = f"{gpu} is listed but a test encode failed ({error})"
    if cpu not in listed:
        raise BadInput(f"this ffmpeg has neither a working {gpu} nor {cpu}", field="encoder")
    return EncoderChoice(cpu, f"auto: {why}; using {cpu}")
