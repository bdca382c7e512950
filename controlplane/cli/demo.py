"""``fusionctl demo``: the face swap end to end on bundled public-domain samples.

This is the main job until the control plane lands: it makes a source face
and a short video from scikit-image's astronaut photo (public domain) under
``./var/demo`` and swaps them with the model-free ``classic`` swapper.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import click
import cv2
import numpy as np

from controlplane.cli.common import reports_errors
from faceswap import run_swap
from faceswap.samples import pan_zoom_frames, write_clip
from faceswap.types import BGRImage

__all__ = ["demo"]


def astronaut_photo() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("the demo needs scikit-image (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"


def make_samples(workdir: Path, *, frames: int = 72, size: tuple[int, int] = (1280, 720)) -> tuple[Path, Path]:
    """A source face (the astronaut mirrored and recoloured) and a panning clip of her with a tone."""
    workdir.mkdir(parents=True, exist_ok=True)
    decoded = cv2.imread(str(astronaut_photo()), cv2.IMREAD_COLOR)
    if decoded is None:
        raise click.ClickException("cannot read the astronaut sample from scikit-image")
    photo: BGRImage = np.asarray(decoded, dtype=np.uint8)
    source = cv2.flip(photo, 1)
    hsv = cv2.cvtColor(source, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + 60) % 180).astype(np.uint8)
    source_path = workdir / "source.png"
    cv2.imwrite(str(source_path), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    fps = 24
    clip = write_clip(
        pan_zoom_frames(photo, frames=frames, size=size),
        workdir / "target.mp4",
        size=size,
        fps=fps,
        duration_s=frames / fps,
        tone_hz=330.0,
    )
    return source_path, clip


@click.command()
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/demo"), show_default=True
)
@click.option("--samples-only", is_flag=True, help="Only write the sample files (for fusionctl submit).")
@reports_errors
def demo(workdir: Path, samples_only: bool) -> None:
    """Swap a face into the astronaut photo and a 3-second 720p clip; print where the results are."""
    source, clip = make_samples(workdir)
    if samples_only:
        astronaut = workdir / "astronaut.png"
        shutil.copyfile(astronaut_photo(), astronaut)
        for path in (source, astronaut, clip):
            click.echo(path)
        return
    photo = run_swap(source=str(source), target=str(astronaut_photo()), output=str(workdir / "astronaut-swapped.png"))
    click.echo(f"image: {photo.output}  ({photo.faces_swapped} face, {photo.wall_s:.2f}s)")
    video = run_swap(
        source=str(source),
        target=str(clip),
        output=str(workdir / "target-swapped.mp4"),
        checkpoint=str(workdir / "checkpoint"),
    )
    if video.frames_swapped:
        detail = f"{video.frames_swapped} frames swapped at {video.fps:.1f} fps end to end"
    else:
        detail = "nothing recomputed"
    click.echo(
        f"video: {video.output}  ({video.frames} frames; {detail}; "
        f"{video.segments_skipped} segment(s) reused from {workdir / 'checkpoint'})"
    )
    click.echo("next: fusionctl swap --help   |   fusionctl models list")
