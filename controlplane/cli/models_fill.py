"""``fusionctl models fill``: download the models a manifest names into the model cache, verified.

The Kubernetes model-cache Job (deploy/kubernetes/base/models-fill-job.yaml) and
the VM bootstrap (providers/bootstrap.py) both run this command before any
worker reads the cache; the work is :func:`faceswap.modelfill.fill_models`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import click

from controlplane.cli.common import output_option, print_json, reports_errors
from faceswap.errors import BadInput
from faceswap.fetcher import FetchRules
from faceswap.modelfill import FillResult, fill_models
from faceswap.models import default_model_dir
from faceswap.netguard import AllowedHosts

__all__ = ["fill"]


def _rules(allow_internal_host: tuple[str, ...], ca_bundle: Path | None) -> FetchRules:
    try:
        allowed = AllowedHosts.parse(allow_internal_host)
    except ValueError as exc:
        raise BadInput(str(exc), field="allow_internal_host") from None
    if ca_bundle is None:
        return FetchRules(allowed_internal=allowed)
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(f"cannot read {ca_bundle}: {exc}", field="ca_bundle") from None
    return FetchRules(allowed_internal=allowed, tls_verify=context)


def _row(result: FillResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "action": result.action,
        "bytes": result.bytes,
        "error": str(result.error) if result.error is not None else None,
    }


def _say(result: FillResult) -> None:
    if result.error is not None:
        click.echo(f"{result.name}: failed: {result.error}", err=True)
    else:
        click.echo(f"{result.name}: {result.action} ({result.bytes} bytes)")


@click.command("fill")
@click.option(
    "--manifest",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The models manifest, each entry with a source (s3://bucket/key or https:// URL).",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The model directory to fill [default: $FUSIONPLANE_MODEL_DIR or ~/.cache/fusionplane/models]",
)
@click.option(
    "--allow-internal-host",
    multiple=True,
    metavar="HOST[:PORT]",
    help="An internal https host the sources may name (a mirror inside your network); repeatable.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM file of the CAs that sign the https sources [default: the public CAs].",
)
@output_option
@reports_errors
def fill(
    manifest: Path,
    dest: Path | None,
    allow_internal_host: tuple[str, ...],
    ca_bundle: Path | None,
    output_format: str,
) -> None:
    """Download each model the manifest names, check its sha256 and signature, and rename it into place.

    A model already present and verified is kept. The manifest becomes the
    cache's manifest.json once every model is in place. Exits 0 when all are,
    else with the first failure's code: 75 (temporary: retry), 65 (a refused
    or missing source), 69 (a checksum, signature or manifest problem).
    """
    rules = _rules(allow_internal_host, ca_bundle)
    target = dest if dest is not None else default_model_dir()
    results = fill_models(manifest, target, rules=rules, progress=None if output_format == "json" else _say)
    if output_format == "json":
        print_json({"model_dir": str(target), "models": [_row(r) for r in results]})
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise failed[0]
