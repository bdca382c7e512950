"""``fusionctl demo``: the face swap end to end on bundled public-domain samples.

This is the main job until the control plane lands: it makes a source face
and a short video from scikit-image's astronaut photo (public domain) under
``./var/demo`` and swaps them with the model-free ``classic`` swapper.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import click
import cv2
import numpy as np

from controlplane.cli.common import reports_errors
from faceswap import run_swap
from faceswap.media import ffmpeg_binary

__all__ = ["demo"]


def astronaut_photo() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("the demo needs scikit-image (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"


def make_samples(workdir: Path, *, frames: int = 72, size: tuple[int, int] = (1280, 720)) -> tuple[Path, Path]:
    """A source face (the astronaut mirrored and recoloured) and a panning 720p clip with a tone."""
    workdir.mkdir(parents=True, exist_ok=True)
    photo = cv2.imread(str(astronaut_photo()))
    if photo is None:
        raise click.ClickException("cannot read the astronaut sample from scikit-image")
    source = cv2.flip(photo, 1)
    hsv = cv2.cvtColor(source, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + 60) % 180).astype(np.uint8)
    source_path = workdir / "source.png"
    cv2.imwrite(str(source_path), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    clip_path = workdir / "target.mp4"
    width, height = size
    side = width * 2
    base = cv2.resize(photo, (side, side))
    cmd = [
        ffmpeg_binary(),
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{width}x{height}",
        "-framerate",
        "24",
        "-i",
        "-",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=330:duration={frames / 24}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(clip_path),
    ]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        for i in range(frames):
            # a slow zoom and pan that keeps the frame filled and the face in view
            zoom = 0.55 + 0.001 * i
            matrix = np.array([[zoom, 0, -0.05 * side + i], [0, zoom, -0.03 * side]], dtype=np.float32)
            proc.stdin.write(cv2.warpAffine(base, matrix, (width, height)).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise click.ClickException("ffmpeg could not make the sample clip")
    return source_path, clip_path


@click.command()
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/demo"), show_default=True
)
@reports_errors
def demo(workdir: Path) -> None:
    """Swap a face into the astronaut photo and a 3-second 720p clip; print where the results are."""
    source, clip = make_samples(workdir)
    photo = run_swap(source=str(source), target=str(astronaut_photo()), output=str(workdir / "astronaut-swapped.png"))
    click.echo(f"image: {photo.output}  ({photo.faces_swapped} face, {photo.wall_s:.2f}s)")
    video = run_swap(
        source=str(source),
        target=str(clip),
        output=str(workdir / "target-swapped.mp4"),
        checkpoint=str(workdir / "checkpoint"),
    )
    click.echo(
        f"video: {video.output}  ({video.frames} frames, {video.fps:.1f} fps end to end, "
        f"{video.segments_skipped} segment(s) reused from the checkpoint)"
    )
    click.echo("next: fusionctl swap --help   |   fusionctl models list")
