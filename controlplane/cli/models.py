"""``fusionctl models list|verify|fill``: the model cache (``fill`` lives in :mod:`controlplane.cli.models_fill`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from controlplane.cli.common import output_option, print_json
from controlplane.cli.models_fill import fill
from faceswap import ModelError
from faceswap.models import ModelStore, default_model_dir

__all__ = ["models"]

model_dir_option = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory [default: $FUSIONPLANE_MODEL_DIR or ~/.cache/fusionplane/models]",
)


@click.group()
def models() -> None:
    """Inspect and verify the model cache."""


def _store(model_dir: Path | None) -> ModelStore:
    store = ModelStore(model_dir or default_model_dir())
    try:
        store.entries()
    except ModelError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    return store


@models.command("list")
@model_dir_option
@output_option
def list_models(model_dir: Path | None, output_format: str) -> None:
    """Models the manifest describes (and the bundled detector)."""
    store = _store(model_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": e.name,
            "role": e.role,
            "file": str(e.path),
            "present": e.path.is_file(),
            "bytes": e.path.stat().st_size if e.path.is_file() else None,
            "sha256": e.sha256,
            "bundled": e.bundled,
        }
        for e in store.entries()
    ]
    if output_format == "json":
        print_json({"model_dir": str(store.model_dir), "models": rows})
        return
    table = Table(title=f"models ({store.model_dir})")
    for column in ("name", "role", "present", "size", "sha256", "file"):
        table.add_column(column)
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] is not None else "-"
        table.add_row(
            row["name"], row["role"], "yes" if row["present"] else "MISSING", size, row["sha256"][:12], row["file"]
        )
    Console().print(table)


@models.command("verify")
@click.argument("names", nargs=-1)
@model_dir_option
@output_option
def verify_models(names: tuple[str, ...], model_dir: Path | None, output_format: str) -> None:
    """Check presence, sha256 and input/output signature of each model (all by default).

    Exits 69 if any model fails.
    """
    store = _store(model_dir)
    wanted = list(names) or [e.name for e in store.entries()]
    results: list[dict[str, Any]] = []
    for name in wanted:
        try:
            store.get(name).verify()
            results.append({"name": name, "ok": True, "error": None})
        except ModelError as exc:
            results.append({"name": name, "ok": False, "error": str(exc)})
    if output_format == "json":
        print_json({"models": results})
    else:
        table = Table(title="model verification")
        for column in ("name", "result", "detail"):
            table.add_column(column)
        for row in results:
            table.add_row(row["name"], "ok" if row["ok"] else "FAILED", row["error"] or "")
        Console().print(table)
    if not all(row["ok"] for row in results):
        raise SystemExit(ModelError.exit_code)


models.add_command(fill)
