"""``fusionctl swap``: run one face swap here, with a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from controlplane.cli.common import install_stop_signals, reports_errors
from controlplane.config import LocalRunSettings
from faceswap import SwapOptions, SwapResult, run_swap
from faceswap.blend import BLEND_MODES, BlendConfig
from faceswap.decoders import DECODER_CHOICES
from faceswap.encoders import ENCODER_CHOICES
from faceswap.fetcher import FetchRules
from faceswap.models import ModelStore
from faceswap.netguard import AllowedHosts
from faceswap.runtime import EXECUTION_PROVIDERS
from faceswap.swappers import SWAPPERS

__all__ = ["swap"]


def _fetch_rules() -> FetchRules:
    """The operator's own run: the same address rules as a worker, with FUSIONPLANE_FETCH_ALLOW_HOSTS."""
    try:
        allowed = AllowedHosts.parse(LocalRunSettings.from_env().fetch_allow_hosts)
    except ValueError as exc:
        raise click.UsageError(f"FUSIONPLANE_FETCH_ALLOW_HOSTS: {exc}") from exc
    return FetchRules(allowed_internal=allowed)


class _PlainProgress:
    """Progress as plain lines when stderr is not a terminal (logs, CI)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if event == "progress" and now - self.last < 2.0:
            return
        self.last = now
        if event == "progress":
            eta = fields["eta_s"]
            click.echo(
                f"frames {fields['frames']}/{fields['total']}  {fields['fps']:.1f} fps  eta {eta:.0f}s"
                if eta is not None
                else f"frames {fields['frames']}",
                err=True,
            )
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            click.echo(f"{event} {detail}", err=True)


@click.command()
@click.option("--source", required=True, help="Image with the face to put in (path or URI).")
@click.option("--target", required=True, help="Image or video to change (path or URI).")
@click.option(
    "--output", required=True, help="Where to write the result (path, file://, s3:// or az://account/container/blob)."
)
@click.option("--swapper", type=click.Choice(SWAPPERS), default="classic", show_default=True)
@click.option("--execution-provider", type=click.Choice(EXECUTION_PROVIDERS), default="auto", show_default=True)
@click.option("--allow-fallback", is_flag=True, help="Warn instead of failing when the provider silently falls back.")
@click.option(
    "--cpu-threads",
    type=click.IntRange(0, 256),
    default=0,
    show_default=True,
    help="CPU provider threads (0: one per core).",
)
@click.option("--face-selector", default="all", show_default=True, help="all, largest, or index:N (left to right).")
@click.option("--checkpoint", default=None, help="Directory, s3:// or az:// prefix for resumable video segments.")
@click.option("--segment-frames", type=click.IntRange(1, 100_000), default=120, show_default=True)
@click.option(
    "--encoder",
    type=click.Choice(list(ENCODER_CHOICES)),
    default="auto",
    show_default=True,
    help="auto: NVENC where it works on this node, else libx264.",
)
@click.option(
    "--decoder",
    type=click.Choice(list(DECODER_CHOICES)),
    default="auto",
    show_default=True,
    help="auto: NVDEC where it works on this node and decodes the codec, else the CPU.",
)
@click.option("--quality", type=click.IntRange(0, 51), default=18, show_default=True, help="Video CRF/CQ.")
@click.option("--preset", default="veryfast", show_default=True, help="x264/x265 preset.")
@click.option("--blend", "blend_mode", type=click.Choice(BLEND_MODES), default="feather", show_default=True)
@click.option("--blur", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Mask feathering.")
@click.option(
    "--mask-padding",
    type=(float, float, float, float),
    default=(0.0, 0.0, 0.0, 0.0),
    show_default=True,
    metavar="TOP RIGHT BOTTOM LEFT",
    help="Shrink the box mask, as fractions of the face crop.",
)
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@reports_errors
def swap(
    source: str,
    target: str,
    output: str,
    swapper: str,
    execution_provider: str,
    allow_fallback: bool,
    cpu_threads: int,
    face_selector: str,
    checkpoint: str | None,
    segment_frames: int,
    encoder: str,
    decoder: str,
    quality: int,
    preset: str,
    blend_mode: str,
    blur: float,
    mask_padding: tuple[float, float, float, float],
    model_dir: Path | None,
    as_json: bool,
) -> None:
    """Swap the face from SOURCE into every selected face of TARGET."""
    options = SwapOptions(
        swapper=swapper,
        face_selector=face_selector,
        execution_provider=execution_provider,
        cpu_threads=cpu_threads,
        allow_fallback=allow_fallback,
        encoder=encoder,
        decoder=decoder,
        quality=quality,
        preset=preset,
        segment_frames=segment_frames,
        blend=BlendConfig(blur=blur, padding=mask_padding, mode=blend_mode),
    )
    stop = install_stop_signals(interrupt=True)
    models = ModelStore(model_dir) if model_dir else None

    fetch_rules = _fetch_rules()

    def run(on_event: Callable[[str, dict[str, Any]], None]) -> SwapResult:
        return run_swap(
            source=source,
            target=target,
            output=output,
            options=options,
            checkpoint=checkpoint,
            models=models,
            stop=stop,
            on_event=on_event,
            fetch_rules=fetch_rules,
        )

    if sys.stderr.isatty():
        console = Console(stderr=True)
        with Progress(
            TextColumn("[bold]swap"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]}"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("frames", total=None, fps="")

            def on_event(event: str, fields: dict[str, Any]) -> None:
                if event == "progress":
                    bar.update(
                        task, completed=fields["frames"], total=fields["total"] or None, fps=f"{fields['fps']:.1f} fps"
                    )
                elif event in ("segment_skipped", "checkpoint_reset"):
                    console.log(f"{event}: {fields}")

            result = run(on_event)
    else:
        result = run(_PlainProgress())
    if as_json:
        click.echo(json.dumps(result.summary(), sort_keys=True))
    else:
        click.echo(
            f"wrote {result.output} ({result.kind}, {result.frames} frame(s), "
            f"{result.faces_swapped} face(s) swapped, {result.wall_s:.2f}s)",
            err=True,
        )
